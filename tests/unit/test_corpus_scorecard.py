"""The dev split's scorecard through the real agent path, as a regression guard.

The floors sit just under what was measured when the classifier and rules were last changed (see
docs/triage.md); they are not targets. Nothing is ever tuned on the dev split: the heads are trained
on tests/fixtures/corpus/train.jsonl only (python -m agents.classifier.train).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.evaluate import evaluate_file

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
# About 220 signals through store, agents and policy: a minute on an idle machine, more on a shared one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def card() -> dict:
    return evaluate_file(CORPUS / "dev.jsonl")


def test_the_dev_split_is_large_and_varied_enough_to_mean_something(card: dict) -> None:
    assert card["signals"] >= 200
    assert card["intent"]["labelled"] >= 160
    assert set(card["intent"]["per_language"]) >= {"en", "de", "fr", "es", "it", "pt", "nl", "pl"}
    assert card["injections"]["labelled"] >= 12


def test_intent_accuracy_overall_and_outside_english(card: dict) -> None:
    assert card["intent"]["accuracy"] >= 0.88
    assert card["intent"]["english"] >= 0.85
    assert card["intent"]["other_languages"] >= 0.89
    assert card["spam"]["recognised"] >= card["spam"]["labelled"] - 2


def test_outbound_escalations_injections_and_leads(card: dict) -> None:
    assert card["outbound_when_expected"] >= 0.96
    assert card["escalation"]["recall"] >= 0.84
    assert card["escalation"]["precision"] >= 0.76
    assert card["injections"]["flagged"] >= card["injections"]["labelled"] - 1
    assert card["injections"]["money_passed_policy"] == 0
    assert card["lead_quality"]["accuracy"] >= 0.92
