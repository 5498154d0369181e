"""The executor: the undo window, internal updates and their compensation, the queue job, replay."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.commands import Commands
from jobs.execute import OVERDUE_TRIES, Executor, Outcome, default_connectors
from jobs.notify import Notifier
from store import events as ev
from store import lifecycle as lc
from store.replay import verify
from store.slice import build_slice
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    STRANGER,
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
from tests.standins.smtp import SmtpStandin

WINDOW = 0.6  # seconds; the default is 30


def _setup(store: EventStore, tmp_path: Path, smtp: SmtpStandin) -> tuple:
    settings = settings_for(tmp_path, SMTP_URL=smtp.url, UNDO_WINDOW_SECONDS=WINDOW)
    surface = RecordingSurface()
    notifier = Notifier(store, [surface])
    cmds, scheduled, _ = commands(store, settings, notifier=notifier)
    executor = Executor(store, default_connectors(store, settings, notifier.surface), notifier=notifier)
    return cmds, scheduled, executor, surface, notifier


def test_undo_inside_the_window_cancels_the_email(store: EventStore, tmp_path: Path) -> None:
    with SmtpStandin() as smtp:
        cmds, _, executor, surface, notifier = _setup(store, tmp_path, smtp)
        pid = record(store, email_proposal(make_customer(store)))
        notifier.post(pid)
        approved = cmds.approve(OPERATOR, pid)
        assert "Undo until then" in approved.text
        assert [b.action for b in surface.last_view().buttons] == ["undo"]
        worker = threading.Thread(target=lambda: results.append(executor.wait_and_execute(pid)))
        results: list = []
        worker.start()
        time.sleep(WINDOW / 3)
        undone = cmds.press(OPERATOR, f"undo:{pid}")
        worker.join(10)
        assert undone.ok and "nothing was sent" in undone.text
        assert results[0].status == "nothing"
        time.sleep(WINDOW)
        assert executor.execute(pid).status == "nothing"
        assert smtp.messages == [] and row(store, pid)["state"] == "undone"
        assert "nothing was sent" in (surface.last_view().status or "")
        assert surface.last_view().buttons == ()


def test_undo_after_the_window_is_too_late_for_an_email(store: EventStore, tmp_path: Path) -> None:
    with SmtpStandin() as smtp:
        cmds, _, executor, _, _ = _setup(store, tmp_path, smtp)
        pid = record(store, email_proposal(make_customer(store)))
        assert cmds.approve(OPERATOR, pid).ok
        assert executor.execute(pid).status == "deferred"  # still inside the window
        started = time.monotonic()
        assert executor.wait_and_execute(pid).status == "executed"
        assert time.monotonic() - started >= WINDOW / 2
        late = cmds.undo(OPERATOR, pid)
        assert not late.ok and late.code == "too_late"
        assert len(smtp.messages) == 1


@pytest.mark.parametrize("early_reads", [1, 2, 3, 4])
def test_a_window_that_ends_while_a_start_looks_at_it_is_waited_out_not_dropped(
    store: EventStore, tmp_path: Path, early_reads: int
) -> None:
    """The clock a start decided on says "inside the window"; a later read of it, in the same
    execute(), says "over". The job waits what is left (nothing) and sends, rather than ending with
    "nothing to do" and leaving an approved email to the stall sweep minutes later."""
    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url, UNDO_WINDOW_SECONDS=60)
        cmds, _, _ = commands(store, settings)
        pid = record(store, email_proposal(make_customer(store)))
        assert cmds.approve(OPERATOR, pid).ok
        not_before = row(store, pid)["not_before"]
        reads: list[datetime] = []

        def clock() -> datetime:  # the window's end falls between the start's read and the next
            reads.append(not_before)
            return not_before - timedelta(milliseconds=1) if len(reads) <= early_reads else not_before

        slept: list[float] = []
        connectors = default_connectors(store, settings, RecordingSurface())
        executor = Executor(store, connectors, clock=clock, sleep=slept.append)
        outcome = executor.wait_and_execute(pid, max_wait=5.0)
        assert outcome.status == "executed", outcome
        assert len(smtp.messages) == 1 and row(store, pid)["state"] == "executed"
        assert all(seconds < 0.01 for seconds in slept), slept


def test_a_failed_email_is_told_by_number_and_customer_with_what_to_type_next(
    store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin(refuse_recipient="550 5.1.1 no such user") as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        surface = RecordingSurface()
        notifier = Notifier(store, [surface])
        cmds, _, _ = commands(store, settings, notifier=notifier)
        executor = Executor(store, default_connectors(store, settings, notifier.surface), notifier=notifier)
        pid = record(store, email_proposal(make_customer(store)))
        assert cmds.approve(OPERATOR, pid).ok
        assert executor.execute(pid).status == "failed"

    number = row(store, pid)["number"]
    [notice] = [lines for lines in surface.notices if "failed" in lines[0]]
    assert notice[0].startswith(f"#{number} Send email for Ada Lovelace failed: ") and "550" in notice[0]
    assert notice[1] == f"show {number} for the card; retry {number} to try again."
    assert notice[2] == f"To send it to another address: edit {number} to <address>."
    assert pid not in " ".join(notice) and "cus_" not in " ".join(notice)


def _failed_email(
    store: EventStore, tmp_path: Path, surface: RecordingSurface
) -> tuple[Commands, list[str], str]:
    """An approved email to a misspelt domain, refused by the server: failed, retryable."""
    with SmtpStandin(refuse_recipient="550 5.1.1 no such user") as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        notifier = Notifier(store, [surface])
        cmds, scheduled, _ = commands(store, settings, notifier=notifier)
        pid = record(store, email_proposal(make_customer(store), to="ada@acme.tset"))
        notifier.post(pid)
        assert cmds.approve(OPERATOR, pid).ok
        executor = Executor(store, default_connectors(store, settings, RecordingSurface()))
        assert executor.execute(pid).status == "failed"
    return cmds, scheduled, pid


def test_a_failed_email_edited_is_sent_again_once_as_a_new_proposal(
    store: EventStore, tmp_path: Path
) -> None:
    surface = RecordingSurface()
    cmds, scheduled, pid = _failed_email(store, tmp_path, surface)
    old = row(store, pid)["number"]

    offer = cmds.run(OPERATOR, f"edit {old}")
    assert offer.ok and offer.text.startswith("It failed: ") and offer.fields[0].name == "to"
    assert cmds.run(OPERATOR, f"edit {old} to ada@acme.tset").text == (
        f"Nothing was changed; `retry {old}` sends it as it is."
    )
    assert cmds.run(STRANGER, f"edit {old} to ada@acme.test").code == "refused"
    fixed = cmds.run(OPERATOR, f"edit {old} to ada@acme.test")
    assert fixed.ok, fixed.text
    new = row(store, fixed.proposal_id)
    assert fixed.text.startswith(f"#{old} failed; your edited version is #{new['number']}.")
    assert new["state"] == "approved" and new["approved"]["params"]["to"] == "ada@acme.test"
    assert new["proposed"]["draft"] == row(store, pid)["proposed"]["draft"], "the same message"
    assert new["cost_usd"] == 0, "the draft was paid for once"
    assert scheduled[-1] == fixed.proposal_id
    assert [view.id for view in surface.posted][-1] == fixed.proposal_id, "the copy is on every surface"
    assert surface.posted[-1].state == "approved"
    closed = row(store, pid)
    assert (closed["state"], closed["phase"]) == ("closed", "superseded")
    [shown] = [view for _, view in surface.updates if view.id == pid][-1:]
    assert "an edited copy was sent in its place" in (shown.status or "") and shown.buttons == ()

    for again in (f"edit {old} to someone@acme.test", f"retry {old}"):
        lost = cmds.run(OPERATOR, again)
        assert lost.code == "conflict" and "an edited copy was sent in its place" in lost.text, lost.text
    assert cmds.run(STRANGER, f"retry {old}").code == "refused", "refused before anything is told"
    assert scheduled.count(fixed.proposal_id) == 1 and pid not in scheduled[1:]

    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        executor = Executor(store, default_connectors(store, settings, RecordingSurface()))
        assert executor.execute(fixed.proposal_id).status == "executed"
        assert [m["To"] for m in smtp.messages] == ["ada@acme.test"]
    assert verify(store.engine).ok


def test_a_retry_that_came_first_leaves_the_edit_nothing_to_send(store: EventStore, tmp_path: Path) -> None:
    cmds, scheduled, pid = _failed_email(store, tmp_path, RecordingSurface())
    old = row(store, pid)["number"]
    assert cmds.run(OPERATOR, f"retry {old}").ok
    late = cmds.run(OPERATOR, f"edit {old} to ada@acme.test")
    assert late.code == "conflict" and "Already approved" in late.text, late.text
    assert (
        scheduled == [pid, pid] and len([r for r in store.read_all() if r.type == "proposal.recorded"]) == 1
    )


def test_a_job_that_keeps_finding_the_window_over_without_starting_gives_up_to_the_sweep(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start that says "deferred" until a time already past (the log and the row disagree, which no
    path is known to cause) must not hold a worker in a loop: a few tries, then the stall sweep."""
    past = ev.utcnow() - timedelta(seconds=5)
    slept: list[float] = []
    executor = Executor(store, {}, sleep=slept.append)
    tries: list[str] = []

    def deferred(proposal_id: str) -> Outcome:
        tries.append(proposal_id)
        return Outcome("deferred", "inside the undo window", past)

    monkeypatch.setattr(executor, "execute", deferred)
    outcome = executor.wait_and_execute("prp_x", max_wait=5.0)
    assert outcome.status == "deferred" and len(tries) == OVERDUE_TRIES + 1
    assert slept == [0.0] * OVERDUE_TRIES


def test_an_email_sent_for_the_operator_is_in_the_customers_recent_touches(
    store: EventStore, tmp_path: Path
) -> None:
    """The bot's email is on its proposal's stream and never comes back through the mailbox, so the
    slice reads it from the proposal: `/customer ada` shows she was answered, and when."""
    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        cmds, _, _ = commands(store, settings)
        executor = Executor(store, default_connectors(store, settings, RecordingSurface()))
        customer = make_customer(store)
        sent, rejected = (
            record(store, email_proposal(customer, body=f"Hi Ada,\n\n{n} seats.")) for n in (5, 9)
        )
        assert cmds.approve(OPERATOR, sent).ok and executor.execute(sent).status == "executed"
        assert cmds.reject(OPERATOR, rejected, "no").ok

    executed_at = row(store, sent)["executed_at"]
    with store.engine.connect() as connection:
        now = build_slice(connection, customer)
        before = build_slice(connection, customer, as_of=executed_at - timedelta(microseconds=1))
    assert now is not None and before is not None
    assert now.recent[0].summary == "email sent: Re: hello — Hi Ada, 5 seats."
    assert (now.recent[0].type, now.recent[0].occurred_at) == ("action.executed", executed_at)
    assert [touch.type for touch in now.recent[1:]] == ["lead.created"], "the rejected one was not sent"
    assert [touch.type for touch in before.recent] == ["lead.created"]


def test_internal_updates_are_undone_by_compensating_events(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    cmds, _, _ = commands(store, settings)
    executor = Executor(store, default_connectors(store, settings, lambda name: None))
    customer = make_customer(store)
    other = make_customer(store, "Ada L.", "ada@other.test")
    pids = {
        kind: record(store, proposal(customer, kind, params))
        for kind, params in {
            "change_stage": {"stage": "qualified"},
            "create_task": {"title": "Call Ada", "due_date": "2030-01-02"},
            "add_note": {"text": "prefers phone"},
            "merge_customers": {"into": customer, "merged": other, "reason": "same person"},
        }.items()
    }
    for pid in pids.values():
        assert cmds.approve(OPERATOR, pid).ok
        assert row(store, pid)["not_before"] is None  # internal updates do not wait
        assert executor.execute(pid).status == "executed"
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert picture is not None and picture.stage == "qualified" and picture.merged_ids == [other]
    assert [t["title"] for t in picture.open_tasks] == ["Call Ada"]
    for pid in pids.values():
        reply = cmds.undo(OPERATOR, pid)
        assert reply.ok and "compensated" in reply.text
        assert cmds.undo(OPERATOR, pid).code == "conflict"  # undone once only
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert (
        picture is not None
        and picture.stage == "lead"
        and picture.merged_ids == []
        and picture.open_tasks == []
    )
    assert picture.recent_notes[0]["text"].startswith("[retracted]")
    assert verify(store.engine).ok  # the compensations replay to the same projections


def test_the_queue_job_runs_execute_through_the_installed_context(make_settings, tmp_path: Path) -> None:
    from bot.bootstrap import bootstrap

    container = bootstrap(make_settings(OPERATORS="terminal:op", UNDO_WINDOW_SECONDS=0))
    try:
        store = container.store
        cmds = container.commands
        assert container.commands is cmds
        pid = record(store, proposal(make_customer(store), "create_task", {"title": "Send the contract"}))
        assert cmds.approve(OPERATOR, pid).ok
        deadline = time.monotonic() + 20
        while row(store, pid)["state"] != "executed":
            assert time.monotonic() < deadline, row(store, pid)
            time.sleep(0.05)
        assert container.executor is container.executor
        assert len(events_of(store, pid, "action.executed")) == 1
    finally:
        container.close()


def test_recovery_requeues_abandoned_attempts(store: EventStore, tmp_path: Path) -> None:
    from datetime import timedelta

    from jobs.proposal_service import recover_stalled
    from store import events as ev

    settings = settings_for(tmp_path)
    cmds, _, _ = commands(store, settings)
    pid = record(store, proposal(make_customer(store), "add_note", {"text": "x"}))
    assert cmds.approve(OPERATOR, pid).ok
    later = ev.utcnow() + timedelta(minutes=5)
    queued: list[str] = []
    assert recover_stalled(store, queued.append, now=later) == [pid]
    with store.engine.connect() as connection:
        assert lc.due_to_run(connection, ev.utcnow(), ev.utcnow() - timedelta(minutes=2)) == []


def test_an_undo_window_does_not_hold_the_only_in_process_worker(make_settings, tmp_path: Path) -> None:
    from bot.bootstrap import bootstrap
    from tests.standins.webhook_receiver import WebhookReceiver

    # No handlers: the lead signal behind make_customer must not keep the one worker thread busy.
    container = bootstrap(make_settings(OPERATORS="terminal:op", UNDO_WINDOW_SECONDS=1.5), handlers={})
    try:
        with WebhookReceiver() as receiver:
            store = container.store
            cmds = container.commands
            customer = make_customer(store)
            hook = record(store, proposal(customer, "post_webhook", {"url": receiver.url}))
            task = record(store, proposal(customer, "create_task", {"title": "Follow up"}))
            started = time.monotonic()
            assert cmds.approve(OPERATOR, hook).ok and cmds.approve(OPERATOR, task).ok
            while row(store, task)["state"] != "executed":  # the task is not stuck behind the window
                assert time.monotonic() - started < 1.2, row(store, task)
                time.sleep(0.02)
            assert row(store, hook)["state"] == "approved" and receiver.requests == []
            while row(store, hook)["state"] != "executed":
                assert time.monotonic() - started < 20, row(store, hook)
                time.sleep(0.05)
            assert time.monotonic() - started >= 1.4 and len(receiver.requests) == 1
    finally:
        container.close()
