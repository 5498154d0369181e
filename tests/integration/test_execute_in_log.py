"""An action that acts only through the log (an internal update) is started, planned and recorded in one
transaction: one compare-and-set, committed whole or not at all.

jobs.execute runs the internal connector while it plans the attempt's start, reading the customers
through that transaction, and appends the start, the effect events and the result together. These
tests count the transactions, kill one half way, race two workers and mix internal updates into a
backlog of emails, on SQLite and on Postgres.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from jobs.connectors.internal import InternalConnector
from jobs.execute import Executor, default_connectors
from jobs.notify import Notifier
from jobs.proposal_service import STALE_AFTER, recover_stalled
from store.events import utcnow
from store.replay import verify
from store.slice import build_slice
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
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
from tests.integration.test_commit_durability import sent_statements
from tests.integration.test_execute_batch import _commits
from tests.standins.smtp import SmtpStandin


class Killed(BaseException):
    """The worker dying half way through its transaction (not an error the executor handles)."""


def _approved(store: EventStore, tmp_path: Path, kind: str, params: dict[str, Any]) -> tuple[str, str]:
    cmds, _, _ = commands(store, settings_for(tmp_path, UNDO_WINDOW_SECONDS=0))
    customer = make_customer(store)
    pid = record(store, proposal(customer, kind, params))
    assert cmds.approve(OPERATOR, pid).ok
    return customer, pid


def test_an_internal_update_takes_one_transaction(store: EventStore, tmp_path: Path) -> None:
    customer, pid = _approved(store, tmp_path, "add_note", {"text": "prefers phone calls"})
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))
    with _commits(store.engine) as commits:
        outcome = executor.execute(pid)
    assert outcome.status == "executed" and outcome.detail.startswith("note ")
    assert len(commits) == 1  # one at a time it was two: the start, then the result
    types = [e.type for e in events_of(store, pid)]
    assert types[-2:] == ["action.started", "action.executed"]
    started, executed = events_of(store, pid)[-2:]
    assert executed.position == started.position + 1  # appended together
    note = events_typed(store, "note.added")
    assert len(note) == 1 and note[0].stream == customer
    assert note[0].causation_id == pid
    assert row(store, pid)["state"] == "executed" and row(store, pid)["attempts"] == 1
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert picture is not None and picture.recent_notes[0]["text"] == "prefers phone calls"
    # A second job for it (the outbox relay's, a double tap's) finds it done and appends nothing.
    count = sum(1 for _ in store.read_all())
    assert executor.execute(pid).status == "nothing"
    assert sum(1 for _ in store.read_all()) == count
    assert verify(store.engine).ok


def test_a_refused_internal_update_fails_in_its_start_transaction(store: EventStore, tmp_path: Path) -> None:
    _, pid = _approved(store, tmp_path, "change_stage", {"stage": "promoted"})
    surface = RecordingSurface()
    notifier = Notifier(store, [surface])
    notifier.post(pid)
    executor = Executor(
        store, default_connectors(store, settings_for(tmp_path), notifier.surface), notifier=notifier
    )
    with _commits(store.engine) as commits:
        outcome = executor.execute(pid)
    assert outcome.status == "failed" and "unknown stage 'promoted'" in outcome.detail
    assert len(commits) == 1 + 1  # the attempt, then the chat message's version (Notifier.refresh)
    assert [e.type for e in events_of(store, pid)][-2:] == ["action.started", "action.failed"]
    assert "FAILED: unknown stage 'promoted'" in (surface.last_view().status or "")
    current = row(store, pid)
    assert current["state"] == "failed" and "unknown stage" in current["error"]
    assert events_typed(store, "stage.changed") == []
    assert any("failed" in line for lines in surface.notices for line in lines)  # the operator is told


def test_the_previous_stage_is_read_in_the_transaction_that_changes_it(
    store: EventStore, tmp_path: Path
) -> None:
    customer, first = _approved(store, tmp_path, "change_stage", {"stage": "qualified"})
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))
    assert executor.execute(first).status == "executed"
    cmds, _, _ = commands(store, settings_for(tmp_path, UNDO_WINDOW_SECONDS=0))
    second = record(store, proposal(customer, "change_stage", {"stage": "customer"}))
    assert cmds.approve(OPERATOR, second).ok
    assert executor.execute(second).status == "executed"
    assert row(store, first)["compensation"] == {"stage": "lead"}
    assert row(store, second)["compensation"] == {"stage": "qualified"}  # what the first one left
    assert cmds.undo(OPERATOR, second).ok
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert picture is not None and picture.stage == "qualified"


def test_stage_changes_of_one_customer_in_a_backlog_each_see_the_one_before(
    store: EventStore, tmp_path: Path
) -> None:
    """Two stage changes waiting together: the second is not planned in the transaction that appends
    the first (it would see the stage from before both); it runs after that one commits. A note on
    the same customer reads nothing and goes with the first."""
    settings = settings_for(tmp_path, UNDO_WINDOW_SECONDS=0)
    cmds, _, _ = commands(store, settings)
    customer = make_customer(store)
    pids = [
        record(store, proposal(customer, "change_stage", {"stage": "qualified"})),
        record(store, proposal(customer, "add_note", {"text": "met at the fair"})),
        record(store, proposal(customer, "change_stage", {"stage": "customer"})),
    ]
    for pid in pids:
        assert cmds.approve(OPERATOR, pid).ok
    executor = Executor(store, default_connectors(store, settings, lambda name: None))
    assert executor.execute(pids[0]).status == "executed"
    assert [row(store, pid)["state"] for pid in pids] == ["executed", "executed", "approved"]
    assert executor.execute(pids[2]).status == "executed"  # its own job
    assert row(store, pids[2])["compensation"] == {"stage": "qualified"}
    assert row(store, pids[2])["result_ref"] == "stage qualified → customer"
    assert cmds.undo(OPERATOR, pids[2]).ok
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert picture is not None and picture.stage == "qualified"


def test_a_database_error_while_planning_fails_the_job_and_appends_nothing(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed read loses the transaction on Postgres, so no failure can be recorded in it: the job
    fails (the queue shows it, the sweep queues it again) and the proposal is still approved."""
    _, pid = _approved(store, tmp_path, "change_stage", {"stage": "qualified"})
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))

    def broken_read(state: Any, customer_id: str) -> str:
        state.connection.exec_driver_sql("SELECT no_such_column FROM customers")
        return "lead"

    monkeypatch.setattr("jobs.connectors.internal._stage_of", broken_read)
    before = sum(1 for _ in store.read_all())
    with pytest.raises(DBAPIError):
        executor.execute(pid)
    assert sum(1 for _ in store.read_all()) == before
    assert row(store, pid)["state"] == "approved"
    monkeypatch.undo()
    assert executor.execute(pid).status == "executed"


def test_a_worker_killed_inside_the_transaction_leaves_nothing_and_the_sweep_runs_it_once(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, pid = _approved(store, tmp_path, "create_task", {"title": "Call Ada back"})
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))
    planned = InternalConnector.plan

    def dies_after_planning(self: InternalConnector, *args: Any) -> Any:
        planned(self, *args)
        raise Killed

    monkeypatch.setattr(InternalConnector, "plan", dies_after_planning)
    before = sum(1 for _ in store.read_all())
    with pytest.raises(Killed):
        executor.execute(pid)
    assert sum(1 for _ in store.read_all()) == before  # no start, no task, no result
    assert row(store, pid)["state"] == "approved" and row(store, pid)["attempts"] == 0
    monkeypatch.setattr(InternalConnector, "plan", planned)
    queued: list[str] = []
    recover_stalled(store, queued.append, now=utcnow() + STALE_AFTER)
    assert queued == [pid]
    assert executor.execute(pid).status == "executed"
    assert len(events_typed(store, "task.created")) == 1
    assert [e.payload.attempt for e in events_of(store, pid, "action.started")] == [1]  # type: ignore[attr-defined]
    with store.engine.connect() as connection:
        picture = build_slice(connection, customer)
    assert picture is not None and [t["title"] for t in picture.open_tasks] == ["Call Ada back"]


@pytest.mark.parametrize("batch_more", [0, 3])
def test_two_workers_racing_on_internal_updates_append_each_effect_once(
    store: EventStore, tmp_path: Path, batch_more: int
) -> None:
    settings = settings_for(tmp_path, UNDO_WINDOW_SECONDS=0)
    cmds, _, _ = commands(store, settings)
    customer = make_customer(store)
    pids = [record(store, proposal(customer, "add_note", {"text": f"note {i}"})) for i in range(6)]
    for pid in pids:
        assert cmds.approve(OPERATOR, pid).ok
    # Without batches both workers try every proposal; with them, batches overlap as well.
    workers = [
        Executor(store, default_connectors(store, settings, lambda name: None), batch_more=batch_more)
        for _ in range(2)
    ]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def work(executor: Executor, order: list[str], start: threading.Barrier) -> None:
        start.wait()
        for pid in order:
            status = executor.execute(pid).status
            with lock:
                outcomes[status] += 1

    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=work, args=(workers[0], pids, start)),
        threading.Thread(target=work, args=(workers[1], pids[::-1], start)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if batch_more == 0:
        assert outcomes["executed"] == len(pids)  # each once, by whichever worker won it
    assert set(outcomes) <= {"executed", "nothing", "busy"}
    assert sorted(e.payload.text for e in events_typed(store, "note.added")) == [  # type: ignore[attr-defined]
        f"note {i}" for i in range(6)
    ]
    assert len(events_typed(store, "action.started")) == len(pids)
    assert [row(store, pid)["state"] for pid in pids] == ["executed"] * len(pids)


def test_internal_updates_in_a_backlog_of_emails_are_done_as_they_start(
    store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        settings = settings_for(
            tmp_path, SMTP_URL=smtp.url, MAIL_FROM="ops@example.test", UNDO_WINDOW_SECONDS=0
        )
        cmds, _, _ = commands(store, settings)
        customer = make_customer(store)
        payloads = [
            email_proposal(customer),
            proposal(customer, "add_note", {"text": "asked for the invoice"}),
            email_proposal(customer),
            proposal(customer, "create_task", {"title": "Send the invoice"}),
        ]
        pids = [record(store, payload) for payload in payloads]
        for pid in pids:
            assert cmds.approve(OPERATOR, pid).ok
        executor = Executor(store, default_connectors(store, settings, lambda name: None))
        with _commits(store.engine) as commits:
            assert executor.execute(pids[0]).status == "executed"
        assert [row(store, pid)["state"] for pid in pids] == ["executed"] * 4
        assert len(smtp.messages) == 2
        # The start (with both internal updates done), one handover per email, the last result.
        assert len(commits) == 1 + 2 + 1
        internal_done = [events_of(store, pid, "action.executed")[0].position for pid in pids[1::2]]
        first_handover = min(e.position for e in events_typed(store, "action.handover"))
        assert max(internal_done) < first_handover
        assert len(events_typed(store, "note.added")) == 1 and len(events_typed(store, "task.created")) == 1


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_transaction_that_records_a_result_waits_for_the_disk(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start alone need not wait (the next durable commit flushes it); one that also records the
    result does, since the operator is shown it."""
    _, pid = _approved(store, tmp_path, "add_note", {"text": "durable"})
    sent = sent_statements(monkeypatch)
    executor = Executor(store, default_connectors(store, settings_for(tmp_path), lambda name: None))
    assert executor.execute(pid).status == "executed"
    said = [s.rsplit(" ", 1)[-1] for s in sent if "synchronous_commit" in s or s == "COMMIT"]
    assert said == ["off", "on", "COMMIT"]
