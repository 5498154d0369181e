"""`crm eval` on a small labelled file: the scorecard's numbers, the JSON output, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.evaluate import EvalFileError, evaluate_file, read_labelled

SMALL = Path(__file__).parents[1] / "fixtures" / "corpus" / "small.jsonl"


@pytest.fixture(scope="module")
def card() -> dict:
    return evaluate_file(SMALL)


def test_the_scorecard_counts_what_the_agents_did_on_each_labelled_signal(card: dict) -> None:
    assert card["signals"] == 6
    assert card["intent"]["labelled"] == 3
    assert card["intent"]["accuracy"] == 1.0
    assert card["intent"]["confusion"]["auto_reply"] == {"auto_reply": 1}
    assert card["outbound_when_expected"] == 1.0
    assert card["escalation"] == {
        "true_positives": 2,
        "false_positives": 0,
        "false_negatives": 0,
        "recall": 1.0,
        "precision": 1.0,
    }
    assert card["injections"]["money_passed_policy"] == 0
    assert card["lead_quality"] == {"labelled": 1, "accuracy": 1.0, "good_seen_as_good": 1, "good": 1}
    assert card["ms_per_signal"]["p50"] > 0


def test_crm_eval_prints_the_scorecard_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "card.json"
    result = CliRunner().invoke(app, ["eval", str(SMALL), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "intent accuracy: 100.0% of 3" in result.output
    assert "escalations: recall 100.0%, precision 100.0%" in result.output
    assert json.loads(out.read_text())["signals"] == 6


def test_a_bad_line_is_named_by_its_number_and_the_command_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SMALL.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(EvalFileError, match="line 2"):
        read_labelled(bad)
    result = CliRunner().invoke(app, ["eval", str(bad)])
    assert result.exit_code == 1
