"""Proposals as events and projections: recording, expiry, snooze, deferral, posting, metrics, replay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.connectors.base import ActionRequest, ActionResult, Handover
from jobs.execute import Executor
from jobs.notify import Notifier
from jobs.proposal_service import Decider, decide, expire_due, wake_due
from store import events as ev
from store import handover, starts
from store import lifecycle as lc
from store.proposal_metrics import lifecycle_metrics
from store.replay import replay, verify
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    SLACK_OPERATOR,
    RecordingSurface,
    commands,
    email_proposal,
    events_of,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)


def test_a_recorded_proposal_is_projected_once_per_key(store: EventStore, tmp_path: Path) -> None:
    customer = make_customer(store)
    payload = email_proposal(customer)
    first = lc.record_proposal(store, payload, verdict="approval", rules=["quiet_hours: ok"], key="k-1")
    again = lc.record_proposal(store, payload, verdict="approval", rules=["quiet_hours: ok"], key="k-1")
    assert first[1] is False and again == (first[0], True)
    recorded = row(store, first[0])
    assert recorded["state"] == "pending" and recorded["verdict"] == "approval"
    assert recorded["proposed"]["draft"]["body"].startswith("Hi Ada") and recorded["approved"] is None
    assert recorded["cost_usd"] == 0.002 and recorded["rules"] == ["quiet_hours: ok"]
    refused = record(store, proposal(customer, "issue_refund", {"amount_cents": 10**9}), verdict="refused")
    assert row(store, refused)["state"] == "refused"
    cmds, _, _ = commands(store, settings_for(tmp_path))
    assert cmds.approve(OPERATOR, refused).code == "conflict"


def test_pending_proposals_expire_and_nothing_is_sent(store: EventStore, tmp_path: Path) -> None:
    now = ev.utcnow()
    surface = RecordingSurface("telegram")
    notifier = Notifier(store, [surface])
    customer = make_customer(store)
    stale = record(store, email_proposal(customer), expires_at=now - timedelta(seconds=1))
    fresh = record(store, email_proposal(customer), expires_at=now + timedelta(hours=1))
    notifier.post(stale)
    assert expire_due(store, notifier, now) == [stale]
    assert expire_due(store, notifier, now) == []  # a second run changes nothing
    assert row(store, stale)["state"] == "expired" and row(store, fresh)["state"] == "pending"
    assert "Expired" in (surface.last_view().status or "") and surface.last_view().buttons == ()
    [notice] = surface.notices
    number = row(store, stale)["number"]
    assert notice == [
        "1 proposal(s) expired without a decision; nothing was sent.",
        f"#{number} Send email for Ada Lovelace",
    ]
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    late = cmds.approve(OPERATOR, stale)
    assert late.code == "conflict" and "Expired" in late.text and scheduled == []


def test_a_snoozed_proposal_comes_back_pending(store: EventStore, tmp_path: Path) -> None:
    surface = RecordingSurface("slack")
    notifier = Notifier(store, [surface])
    cmds, _, _ = commands(store, settings_for(tmp_path), notifier=notifier)
    pid = record(store, email_proposal(make_customer(store)))
    notifier.post(pid)
    reply = cmds.run(SLACK_OPERATOR, f"snooze {pid} 2h")
    assert reply.ok and row(store, pid)["state"] == "snoozed"
    assert cmds.approve(OPERATOR, pid).code == "conflict"
    assert cmds.snooze(OPERATOR, pid, "-5m").code == "invalid"
    now = ev.utcnow()
    assert wake_due(store, ttl_hours=24, undo_window_seconds=0, notifier=notifier, now=now) == []
    later = now + timedelta(hours=2, seconds=1)
    assert wake_due(store, ttl_hours=24, undo_window_seconds=0, notifier=notifier, now=later) == [pid]
    woke = row(store, pid)
    assert woke["state"] == "pending" and woke["expires_at"] == later + timedelta(hours=24)
    assert {b.action for b in surface.last_view().buttons} >= {"approve", "reject"}
    assert len(surface.posted) == 1  # updated in place, not posted again
    assert surface.notices[-1][0].endswith(f"): #{woke['number']} Send email for Ada Lovelace")
    assert cmds.approve(OPERATOR, pid).ok


def test_a_policy_deferred_auto_action_runs_when_it_wakes(store: EventStore) -> None:
    now = ev.utcnow()
    surface = RecordingSurface()
    notifier = Notifier(store, [surface])
    pid = record(
        store,
        proposal(make_customer(store), "create_task", {"title": "Morning call"}),
        verdict="deferred",
        not_before=now + timedelta(hours=8),
        then="auto",
    )
    assert row(store, pid)["state"] == "snoozed"
    queued: list[str] = []
    woken = wake_due(
        store,
        ttl_hours=24,
        undo_window_seconds=30,
        schedule_execution=queued.append,
        notifier=notifier,
        now=now + timedelta(hours=9),
    )
    assert woken == [pid] and queued == [pid]
    decided = row(store, pid)
    assert decided["state"] == "approved" and decided["decision"] == "auto" and decided["not_before"] is None
    assert len(surface.posted) == 1  # first shown now


def test_metrics_and_replay_cover_every_lifecycle_event(store: EventStore, tmp_path: Path) -> None:
    cmds, _, _ = commands(store, settings_for(tmp_path))
    customer = make_customer(store)
    approved = record(store, email_proposal(customer))
    edited = record(store, email_proposal(customer))
    rejected = record(store, email_proposal(customer))
    other = record(store, proposal(customer, "add_note", {"text": "n"}, agent="memory_curator"))
    assert cmds.approve(OPERATOR, approved).ok
    assert cmds.edit(OPERATOR, edited, {"subject": "Better subject"}).ok
    assert cmds.reject(OPERATOR, rejected, "wrong tone").ok
    assert cmds.approve(OPERATOR, other).ok and cmds.undo(OPERATOR, other).ok
    lc.record_message(store, approved, "slack", "C1", "1700000000.0001")
    lc.set_paused(store, "inbox_triage", True, "terminal:op")
    with store.engine.connect() as connection:
        m = lifecycle_metrics(connection)
        assert lc.paused_agents(connection) == {"inbox_triage"}
    assert m.by_agent_outcome[("inbox_triage", "approved")] == 1
    assert m.by_agent_outcome[("inbox_triage", "edited")] == 1
    assert m.by_agent_outcome[("inbox_triage", "rejected")] == 1
    assert m.by_agent_outcome[("memory_curator", "undone")] == 1
    assert m.decided == 4 and m.approval_rate == 0.5 and m.edit_rate == 0.25 and m.rejection_rate == 0.25
    assert m.undo_rate == 1 / 3 and m.decision_seconds_p50 is not None and m.decision_seconds_p50 >= 0
    assert m.executed == 0 and m.cost_per_executed_action is None and m.cost_usd > 0
    check = verify(store.engine)
    assert check.ok, [d.describe() for d in check.differences]
    replay(store.engine)
    assert row(store, edited)["approved"]["draft"]["subject"] == "Better subject"
    assert len(events_of(store, approved, "proposal.message_posted")) == 1


def test_the_metrics_endpoint_reports_lifecycle_figures(make_settings, tmp_path: Path) -> None:
    from bot.bootstrap import bootstrap

    container = bootstrap(make_settings(OPERATORS="terminal:op"), handlers={})
    try:
        cmds, _, _ = commands(container.store, container.settings)
        pid = record(container.store, email_proposal(make_customer(container.store)))
        assert cmds.reject(OPERATOR, pid, "no").ok
        body = container.metrics.render().decode()
        assert 'crm_proposals{agent="inbox_triage",outcome="rejected"} 1.0' in body
        assert 'crm_decision_rate{decision="rejected"} 1.0' in body
    finally:
        container.close()


class _Sent:
    name = "sent"
    dedupes = True

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        return ActionResult(reference="ref-1")


def test_a_transition_returns_the_row_the_database_holds(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The row a compare-and-set hands back comes from what its own transaction wrote, not from a
    # second read: on every step of the lifecycle it must equal what a fresh read returns — also for
    # a proposal a batch started from the rows it read beside the first.
    customer = make_customer(store)
    pids = [record(store, email_proposal(customer)) for _ in range(2)]
    ops = Decider("terminal:ops", "Ops", "terminal")
    for pid in pids:
        decided = decide(store, pid, "approved", ops, undo_window_seconds=0, now=ev.utcnow())
        assert decided.won and decided.row == row(store, pid)
    seen: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []

    def watch(module: Any, name: str) -> None:
        original = getattr(module, name)

        def watching(*args: Any, **kwargs: Any) -> list[lc.Transition]:
            results: list[lc.Transition] = original(*args, **kwargs)
            seen.extend((result.row, row(store, result.row["id"])) for result in results if result.row)
            return results

        monkeypatch.setattr(module, name, watching)

    watch(lc, "start_batch")
    watch(starts, "start")  # how a backlog of approved emails starts on Postgres
    watch(lc, "transition_each")
    # The results go the general way here on Postgres too (it records them as one query of its own,
    # store.handover, tested in test_handover.py).
    monkeypatch.setattr(handover, "send", lambda *_args: None)
    assert Executor(store, {"send_email": _Sent()}).execute(pids[0]).status == "executed"
    assert [fresh["state"] for _, fresh in seen] == ["executing", "executing", "executed", "executed"]
    assert [fresh["id"] for _, fresh in seen] == [*pids, *pids]
    assert all(returned == fresh for returned, fresh in seen)
