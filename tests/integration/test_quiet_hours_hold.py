"""A quiet-hours deferral that needs a person is shown at once and held only at send time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.commands import Commands
from store import lifecycle as lc
from store.uow import EventStore
from tests.integration.proposal_helpers import OPERATOR, email_proposal, make_customer, settings_for

NOW = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)  # the middle of the night
MORNING = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def _record(store: EventStore, then: str) -> str:
    customer = make_customer(store)
    pid, _ = lc.record_proposal(
        store,
        email_proposal(customer),
        verdict="deferred",
        rules=["quiet_hours: no outbound messages between 20:00 and 08:00 (UTC)"],
        key=f"test:quiet:{then}",
        expires_at=NOW + timedelta(hours=24),
        not_before=MORNING,
        then=then,
    )
    return pid


def _row(store: EventStore, pid: str) -> dict:
    with store.engine.connect() as connection:
        row = lc.get_proposal(connection, pid)
    assert row is not None
    return row


def test_held_proposal_is_pending_and_approval_waits_for_the_morning(
    store: EventStore, tmp_path: Path
) -> None:
    pid = _record(store, then="approval")
    row = _row(store, pid)
    assert row["state"] == "pending", "the operator sees it now"
    assert row["snoozed_until"] is None
    scheduled: list[str] = []
    commands = Commands(
        store,
        settings_for(tmp_path, UNDO_WINDOW_SECONDS=30),
        schedule_execution=lambda pid, _row: scheduled.append(pid),
        clock=lambda: NOW,
    )
    reply = commands.approve(OPERATOR, pid)
    assert reply.ok, reply.text
    row = _row(store, pid)
    assert row["state"] == "approved"
    assert row["not_before"] == MORNING, "sent when quiet hours end, not after the 30 s undo window"
    assert scheduled == [pid]


def test_rejecting_a_held_proposal_sends_nothing(store: EventStore, tmp_path: Path) -> None:
    pid = _record(store, then="approval")
    commands = Commands(
        store, settings_for(tmp_path), schedule_execution=lambda _pid, _row: None, clock=lambda: NOW
    )
    assert commands.reject(OPERATOR, pid, "not now").ok
    assert _row(store, pid)["state"] == "rejected"


def test_deferred_automatic_action_stays_snoozed_until_it_may_run(store: EventStore) -> None:
    pid = _record(store, then="auto")
    row = _row(store, pid)
    assert row["state"] == "snoozed"
    assert row["snoozed_until"] == MORNING


def test_the_message_says_when_a_held_proposal_would_go_out_and_what_it_cost(store: EventStore) -> None:
    from jobs.render_proposal import view_of

    pid = _record(store, then="approval")
    view = view_of(_row(store, pid), "Ada Lovelace")
    text = "\n".join(view.lines())
    assert "If approved, sent at 2026-11-21 08:00" in text
    assert "cost $0.00" in text
    assert view.buttons, "a held proposal can still be decided now"


def _night_zone() -> str:
    """A fixed-offset zone where it is about 01:00 now, inside the shipped policy's quiet hours."""
    offset = (1 - datetime.now(UTC).hour + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def test_a_proposal_held_by_quiet_hours_is_posted_at_once_saying_when_it_would_go(
    store: EventStore, tmp_path: Path
) -> None:
    from jobs.handlers import HANDLERS, INBOX_TRIAGE
    from jobs.propose import propose_for
    from jobs.render_proposal import stamp
    from store import events as ev
    from tests.integration.jobs_harness import app_for
    from tests.integration.proposal_helpers import RecordingSurface

    surface = RecordingSurface()
    ctx = app_for(store, settings_for(tmp_path, CRM_TIMEZONE=_night_zone()), handlers=dict(HANDLERS))
    ctx.notifier.add(surface)
    signal = ev.MessageReceived(
        customer=ev.CustomerRef(name="Ada Lovelace", email="ada@acme.test"),
        text="How do I export my invoices as CSV?",
        data={"channel": "email", "subject": "Export", "message_id": "<n1@acme.test>"},
    )
    event = store.record_signal("message.received", signal, "mail:night", source="email").event

    propose_for(ctx, INBOX_TRIAGE, event)

    [held] = [view for view in surface.posted if view.kind == "send_email"]
    row = _row(store, held.id)
    assert row["state"] == "pending" and row["not_before"] is not None, "held, and shown now"
    assert f"If approved, sent at {stamp(row['not_before'])}" in "\n".join(held.lines())
