"""Decisions are compare-and-set, only operators decide, and edits/rejections become corrections."""

from __future__ import annotations

import threading
from pathlib import Path

from bot.commands import Actor
from jobs.execute import Executor, default_connectors
from jobs.notify import Notifier
from store import tables as t
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    SLACK_OPERATOR,
    STRANGER,
    TELEGRAM_OPERATOR,
    RecordingSurface,
    commands,
    email_proposal,
    events_of,
    events_typed,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)


def test_a_non_operator_cannot_decide_and_the_attempt_is_logged(store: EventStore, tmp_path: Path) -> None:
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    pid = record(store, email_proposal(make_customer(store)))
    for attempt in (
        lambda: cmds.approve(STRANGER, pid),
        lambda: cmds.reject(STRANGER, pid, "no"),
        lambda: cmds.edit(STRANGER, pid, {"body": "evil"}),
        lambda: cmds.press(STRANGER, f"approve:{pid}"),
        lambda: cmds.run(STRANGER, f"snooze {pid} 1h"),
    ):
        reply = attempt()
        assert not reply.ok and reply.code == "refused"
        assert "only operators" in reply.text
    assert row(store, pid)["state"] == "pending"
    refused = events_of(store, pid, "decision.refused")
    assert len(refused) == 5 and {e.actor for e in refused} == {"slack:U666"}
    assert scheduled == []
    # Same user id on another surface is somebody else: "slack:U1" is an operator, "telegram:U1" is not.
    assert cmds.approve(Actor("telegram", "U1"), pid).code == "refused"


def test_the_second_decision_is_told_who_decided_first_and_when(store: EventStore, tmp_path: Path) -> None:
    surface = RecordingSurface("slack")
    notifier = Notifier(store, [surface])
    cmds, scheduled, _ = commands(store, settings_for(tmp_path), notifier=notifier)
    pid = record(store, email_proposal(make_customer(store)))
    notifier.post(pid)
    first = cmds.approve(SLACK_OPERATOR, pid)
    assert first.ok and scheduled == [pid]
    second = cmds.reject(TELEGRAM_OPERATOR, pid, "too pushy")
    assert not second.ok and second.code == "conflict"
    decided = row(store, pid)
    assert f"Already approved by Sam (slack) at {decided['decided_at']:%Y-%m-%d %H:%M:%S}" in second.text
    assert (
        decided["decided_by"] == "slack:U1"
        and decided["surface"] == "slack"
        and decided["state"] == "approved"
    )
    # The posted message was updated in place and lost its Approve/Edit/Reject buttons.
    ref, view = surface.updates[-1]
    assert ref.message_id == "1" and "Approved by Sam (slack)" in (view.status or "")
    assert {b.action for b in view.buttons} <= {"undo"}
    assert len(events_of(store, pid, "proposal.decided")) == 1


def _race(pg_url: str, tmp_path: Path, actions: list[str]) -> tuple[EventStore, str, list, list[str]]:
    from store.db import make_engine

    store = EventStore(make_engine(pg_url, pool_size=20, max_overflow=40))
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    pid = record(store, proposal(make_customer(store), "add_note", {"text": "called them"}))
    barrier = threading.Barrier(len(actions))
    replies: list = [None] * len(actions)
    actors = [OPERATOR, SLACK_OPERATOR, TELEGRAM_OPERATOR]

    def decide(i: int) -> None:
        actor = actors[i % 3]
        barrier.wait()
        replies[i] = cmds.approve(actor, pid) if actions[i] == "approve" else cmds.reject(actor, pid, "no")

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return store, pid, replies, scheduled


def _execute_concurrently(store: EventStore, tmp_path: Path, pid: str, workers: int = 10) -> None:
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))
    threads = [threading.Thread(target=executor.execute, args=(pid,)) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_fifty_concurrent_approvals_make_one_decision_and_one_execution(pg_url: str, tmp_path: Path) -> None:
    store, pid, replies, scheduled = _race(pg_url, tmp_path, ["approve"] * 50)
    assert sum(1 for r in replies if r.ok) == 1
    losers = [r for r in replies if not r.ok]
    assert len(losers) == 49 and all(r.code == "conflict" and "Already approved by" in r.text for r in losers)
    assert len(events_of(store, pid, "proposal.decided")) == 1
    assert scheduled == [pid]
    _execute_concurrently(store, tmp_path, pid)
    assert len(events_of(store, pid, "action.started")) == 1
    assert len(events_of(store, pid, "action.executed")) == 1
    assert len(events_typed(store, "note.added")) == 1
    assert row(store, pid)["state"] == "executed"
    store.engine.dispose()


def test_fifty_concurrent_approvals_and_rejections_make_one_decision(pg_url: str, tmp_path: Path) -> None:
    store, pid, replies, scheduled = _race(pg_url, tmp_path, ["approve", "reject"] * 25)
    winners = [r for r in replies if r.ok]
    assert len(winners) == 1
    decided = events_of(store, pid, "proposal.decided")
    assert len(decided) == 1
    outcome = row(store, pid)
    if decided[0].payload.decision == "approved":  # type: ignore[attr-defined]
        assert scheduled == [pid] and outcome["state"] == "approved"
        _execute_concurrently(store, tmp_path, pid)
        assert len(events_typed(store, "note.added")) == 1
    else:
        assert scheduled == [] and outcome["state"] == "rejected"
        _execute_concurrently(store, tmp_path, pid)
        assert events_of(store, pid, "action.started") == []
    verb = "approved" if outcome["state"] == "approved" else "rejected"
    assert all(f"Already {verb} by" in r.text for r in replies if not r.ok)
    store.engine.dispose()


def test_an_edit_keeps_both_payloads_and_records_a_correction(store: EventStore, tmp_path: Path) -> None:
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    customer = make_customer(store)
    pid = record(store, email_proposal(customer))
    form = cmds.edit(OPERATOR, pid)
    assert form.ok and [f.name for f in form.fields] == ["to", "subject", "body"]
    assert form.fields[2].multiline and form.fields[2].value.startswith("Hi Ada")
    bad = cmds.edit(OPERATOR, pid, {"proposal_id": "x"})
    assert bad.code == "invalid" and row(store, pid)["state"] == "pending"
    new_body = "Hello Ada,\n\nThanks — ünïcødé 👋\n\nCheers, Olivia"
    done = cmds.edit(OPERATOR, pid, {"body": new_body})
    assert done.ok and "Edited and approved" in done.text and scheduled == [pid]
    decided = row(store, pid)
    assert decided["decision"] == "edited"
    assert decided["proposed"]["draft"]["body"].startswith("Hi Ada")
    assert decided["approved"]["draft"]["body"] == new_body
    assert decided["approved"]["params"]["body"] == new_body  # the mirrored param follows the draft
    corrections = [e for e in store.read_all() if e.type == "correction.recorded"]
    assert len(corrections) == 1 and corrections[0].stream == customer
    payload = corrections[0].payload
    assert payload.kind == "send_email" and payload.edited["body"] == new_body  # type: ignore[attr-defined]
    # A rejection reason is a correction too.
    other = record(store, email_proposal(customer))
    assert cmds.reject(OPERATOR, other, "never email on Sundays").ok
    reasons = [e.payload.rejection_reason for e in store.read_all() if e.type == "correction.recorded"]  # type: ignore[attr-defined]
    assert reasons == [None, "never email on Sundays"]


def test_a_decisions_reply_shows_the_proposal_and_its_customer_whether_tapped_or_typed(
    store: EventStore, tmp_path: Path
) -> None:
    """A button gives the whole id and the decision reads the proposal and its customer itself; typed
    text (a number, a piece of the id) is looked up first. Both answer with the card, named."""
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    ada = make_customer(store)
    acme = make_customer(store, name="", email="hello@acme-corp.test")
    tapped = record(store, email_proposal(ada))
    typed = record(store, email_proposal(acme, to="hello@acme-corp.test"))
    company_only = {"name": None, "company": "Acme Corp"}
    with store.engine.begin() as connection:  # a customer known by company alone is shown by it
        connection.execute(t.customers.update().where(t.customers.c.id == acme).values(**company_only))
    first = cmds.approve(OPERATOR, tapped)
    [view] = first.proposals
    assert first.ok and view.id == tapped and view.state == "approved"
    assert view.customer_name == "Ada Lovelace" and "Ada Lovelace" in view.title
    second = cmds.reject(OPERATOR, f"#{row(store, typed)['number']}", "not now")
    [view] = second.proposals
    assert second.ok and view.id == typed and view.state == "rejected" and view.customer_name == "Acme Corp"
    missing = cmds.approve(OPERATOR, "prp_" + "0" * 20)
    assert not missing.ok and missing.code == "not_found"
    assert scheduled == [tapped]
