"""`digest` and `snooze … tomorrow` through the command layer, as every surface calls them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.command_text import parse_until
from bot.commands import Commands
from store import lifecycle as lc
from store.uow import EventStore
from tests.integration.proposal_helpers import OPERATOR, STRANGER, email_proposal, make_customer, settings_for

NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)


def test_digest_command_answers_with_text_pending_buttons_and_chart(
    store: EventStore, tmp_path: Path
) -> None:
    customer = make_customer(store)
    pid, _ = lc.record_proposal(
        store, email_proposal(customer), verdict="approval", rules=[], key="test:digest:1"
    )
    commands = Commands(store, settings_for(tmp_path), clock=lambda: NOW)
    answer = commands.run(OPERATOR, "/digest")
    assert answer.ok, answer.text
    assert answer.lines[0].startswith("Daily digest")
    assert "Waiting for you: 1 proposal(s)" in answer.text
    assert [view.id for view in answer.proposals] == [pid]
    assert answer.proposals[0].buttons, "pending proposals come with their buttons"
    assert answer.image is not None and answer.image.read_bytes()[:4] == b"\x89PNG"


def test_digest_is_for_operators_only(store: EventStore, tmp_path: Path) -> None:
    answer = Commands(store, settings_for(tmp_path), clock=lambda: NOW).digest(STRANGER)
    assert not answer.ok and answer.code == "refused"


def test_snooze_until_tomorrow_means_the_next_morning_in_the_operators_zone() -> None:
    late_evening_in_tokyo = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo
    until = parse_until("tomorrow", late_evening_in_tokyo, ZoneInfo("Asia/Tokyo"))
    assert until == datetime(2026, 11, 22, 0, 0, tzinfo=UTC)  # 09:00 on the 22nd in Tokyo
    assert parse_until("Tomorrow ", NOW) == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
