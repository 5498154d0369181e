"""A proposal about to expire is brought back to the operator once, on the surfaces that show it, at
EXPIRY_REMINDER_AT of its time to live; a frozen clock drives every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.bootstrap import App
from jobs.proposal_service import Decider, decide, run_periodic, snooze, wake_due
from jobs.reminders import remind_due, reminder_lead
from store import lifecycle as lc
from store.settings import SettingsError, load_settings
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import (
    RecordingSurface,
    email_proposal,
    make_customer,
    record,
    row,
    settings_for,
)

TTL_HOURS = 24.0
EXPIRES = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)  # made at 18:00 the day before, with a 24h TTL


Posted = tuple[App, RecordingSurface, RecordingSurface, str]


def _remind(app: App, now: datetime, share: float = 0.75) -> list[str]:
    return remind_due(app.store, app.notifier, ttl_hours=TTL_HOURS, share=share, now=now)


@pytest.fixture
def posted(store: EventStore, tmp_path: Path) -> Posted:
    """A proposal posted on Slack only; Telegram came up later and never showed it."""
    app = app_for(store, settings_for(tmp_path))
    slack, telegram = RecordingSurface(name="slack"), RecordingSurface(name="telegram")
    app.notifier.add(slack)
    pid = record(store, email_proposal(make_customer(store)), expires_at=EXPIRES)
    app.notifier.post(pid)
    app.notifier.add(telegram)  # came up later: it never showed this proposal
    return app, slack, telegram, pid


def test_the_reminder_comes_at_three_quarters_of_the_ttl_once_and_where_it_was_posted(
    store: EventStore, posted: Posted
) -> None:
    app, slack, telegram, pid = posted
    six_before = EXPIRES - timedelta(hours=6)  # 75% of 24h gone
    assert _remind(app, now=six_before - timedelta(seconds=1)) == []
    assert slack.notices == []

    assert _remind(app, now=six_before) == [pid]
    [notice] = slack.notices
    assert notice[0].startswith("⏰ #1 expires in 6h (at 2026-11-21 18:00:00 UTC) unless you decide")
    assert "approve 1 · reject 1 · show 1" in notice[0]
    assert [view.id for view in slack.posted] == [pid, pid], "a fresh copy of the card, with its buttons"
    assert {"approve", "reject"} <= {b.action for b in slack.posted[-1].buttons}
    assert telegram.notices == [] and telegram.posted == [], "only where it was posted"
    assert row(store, pid)["reminded_at"] == six_before

    later = six_before + timedelta(hours=1)
    assert _remind(app, now=later) == [], "once"
    assert len(slack.notices) == 1
    assert len([m for m in lc.messages_of(store.engine, pid) if m["surface"] == "slack"]) == 2


def test_a_proposal_back_from_snooze_is_reminded_again_before_its_new_expiry(
    store: EventStore, posted: Posted
) -> None:
    app, slack, _, pid = posted
    first = EXPIRES - timedelta(hours=5)
    assert _remind(app, now=first) == [pid]
    assert snooze(store, None, pid, Decider("terminal:op", "op"), first + timedelta(hours=1), first).won
    woke_at = first + timedelta(hours=1)
    assert wake_due(store, ttl_hours=TTL_HOURS, undo_window_seconds=0, now=woke_at) == [pid]
    assert row(store, pid)["reminded_at"] is None
    new_expiry = woke_at + timedelta(hours=TTL_HOURS)
    assert row(store, pid)["expires_at"] == new_expiry
    assert _remind(app, now=woke_at + timedelta(hours=1)) == []
    due = new_expiry - timedelta(hours=6)
    assert _remind(app, now=due) == [pid]
    assert len(slack.notices) == 2


def test_decided_and_expired_proposals_get_no_reminder_and_zero_turns_reminders_off(
    store: EventStore, posted: Posted
) -> None:
    app, slack, _, pid = posted
    late = EXPIRES - timedelta(hours=1)
    assert _remind(app, share=0.0, now=late) == []
    assert reminder_lead(TTL_HOURS, 0.0) is None and reminder_lead(TTL_HOURS, 0.5) == timedelta(hours=12)
    gone = record(store, email_proposal(make_customer(store, "Bo", "bo@b.test")), expires_at=late)
    past = EXPIRES + timedelta(minutes=1)
    assert decide(store, pid, "approved", Decider("terminal:op", "op"), undo_window_seconds=0, now=late).won
    assert _remind(app, now=past) == []
    assert row(store, gone)["state"] == "pending", "past its expiry it expires at the next sweep; no reminder"
    assert slack.notices == []


def test_the_scheduler_sweep_reminds_with_the_settings(store: EventStore, tmp_path: Path) -> None:
    app = app_for(store, settings_for(tmp_path, EXPIRY_REMINDER_AT="0.5", PROPOSAL_TTL_HOURS="24"))
    surface = RecordingSurface(name="slack")
    app.notifier.add(surface)
    pid = record(store, email_proposal(make_customer(store)), expires_at=EXPIRES)
    app.notifier.post(pid)
    assert run_periodic(app, EXPIRES - timedelta(hours=13))["reminded"] == []
    assert run_periodic(app, EXPIRES - timedelta(hours=12))["reminded"] == [pid]
    swept = run_periodic(app, EXPIRES + timedelta(seconds=1))
    assert swept["expired"] == [pid] and swept["reminded"] == []


@pytest.mark.parametrize("value", ["1", "0.75x", "-0.1", "1.5"])
def test_a_bad_reminder_share_stops_at_start_naming_the_setting(value: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="EXPIRY_REMINDER_AT"):
        load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path), EXPIRY_REMINDER_AT=value)
