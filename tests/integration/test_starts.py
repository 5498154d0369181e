"""store.starts: a backlog's start read without the append lock and written in one query (Postgres).

It writes the proposal and action rows itself instead of through the projector, and hands back the
rows as it believes it left them, so the tests compare both with what is in the database, and end
with the log replayed over the rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, func, select

from jobs.execute import Executor, action_key
from store import events as ev
from store import handover, starts
from store import lifecycle as lc
from store import proposals as sp
from store import tables as t
from store.db import make_engine
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    approved_emails,
    commands,
    email_proposal,
    events_of,
    make_customer,
    record,
    row,
    settings_for,
    start_attempt,
)
from tests.integration.test_handover import HandingOver, _replays_to_the_same_rows

# A read beside that finds nothing (every value bound: it is sent past SQLAlchemy).
NOTHING_BESIDE = (select(t.events.c.id).where(t.events.c.stream == bindparam("stream")), {"stream": "nobody"})


@pytest.fixture
def db_url(pg_url: str) -> str:
    """Postgres only: SQLite goes the general way (every executor test runs on both)."""
    return pg_url


def _started(found: dict[str, Any], now: datetime) -> ev.NewEvent:
    pid, attempt = found["id"], found["attempts"] + 1
    payload = sp.ActionStarted(
        attempt=attempt,
        connector="smtp",
        idempotency_key=action_key(pid),
        lease_until=now + timedelta(minutes=5),
    )
    return lc.on_proposal(pid, "action.started", payload, lc.attempt_key(pid, attempt, "started"))


def _read(line: handover.Line, pid: str, more: int = 15) -> starts.Read:
    return starts.read(line, pid, more=more, now=ev.utcnow(), beside=NOTHING_BESIDE)


def _start(line: handover.Line, found: starts.Read) -> list[lc.Transition]:
    now = ev.utcnow()
    rows = [found.row, *found.others]
    return starts.start(line, [(r, _started(r, now)) for r in rows if r is not None])


def _events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(t.events)).scalar_one())


def test_a_backlog_started_in_one_query_is_what_the_database_holds_and_replays_to_the_same_rows(
    store: EventStore, engine: Engine, tmp_path: Path
) -> None:
    pids = approved_emails(store, tmp_path, 4)
    line = handover.Line(store)
    try:
        found = _read(line, pids[0])
        assert found.row is not None and found.row["id"] == pids[0]
        assert [other["id"] for other in found.others] == pids[1:]  # oldest decision first
        won = _start(line, found)
    finally:
        line.close()
    assert [transition.row["id"] for transition in won if transition.row] == pids
    for transition in won:
        assert transition.won and transition.row is not None
        # The row handed back is the row written: the executor runs the action from it.
        assert transition.row == row(store, transition.row["id"])
        (event,) = transition.events
        assert event.type == "action.started" and isinstance(event.payload, sp.ActionStarted)
        assert events_of(store, transition.row["id"], "action.started")[0] == event
    positions = [transition.events[0].position for transition in won]
    assert positions == list(range(positions[0], positions[0] + 4))
    with engine.connect() as connection:
        actions = connection.execute(select(t.actions).order_by(t.actions.c.proposal_id)).mappings().all()
    assert sorted((a["proposal_id"], a["attempt"], a["state"]) for a in actions) == sorted(
        (pid, 1, "started") for pid in pids
    )
    _replays_to_the_same_rows(engine)


def test_a_first_proposal_that_moved_on_after_the_read_starts_nothing(
    store: EventStore, engine: Engine, tmp_path: Path
) -> None:
    """Another worker started it between the read and the query: nothing is written, not even the
    backlog's starts (the caller goes the general way, which says why)."""
    pids = approved_emails(store, tmp_path, 3)
    line = handover.Line(store)
    try:
        found = _read(line, pids[0])
        start_attempt(store, pids[0])  # the other worker, meanwhile
        before = _events(engine)
        assert _start(line, found) == []
    finally:
        line.close()
    assert _events(engine) == before
    assert [row(store, pid)["state"] for pid in pids] == ["executing", "approved", "approved"]
    _replays_to_the_same_rows(engine)


def test_a_backlog_proposal_that_moved_on_after_the_read_is_left_out(
    store: EventStore, engine: Engine, tmp_path: Path
) -> None:
    pids = approved_emails(store, tmp_path, 4)
    cmds, _, _ = commands(store, settings_for(tmp_path))
    line = handover.Line(store)
    try:
        found = _read(line, pids[0])
        start_attempt(store, pids[1])  # another worker's batch took it
        assert cmds.undo(OPERATOR, pids[2]).ok  # the operator took it back
        won = _start(line, found)
    finally:
        line.close()
    assert [transition.row["id"] for transition in won if transition.row] == [pids[0], pids[3]]
    assert len(events_of(store, pids[1], "action.started")) == 1
    assert not events_of(store, pids[2], "action.started") and row(store, pids[2])["state"] == "undone"
    _replays_to_the_same_rows(engine)  # the winners took consecutive positions: no gap


def test_two_workers_reading_the_same_backlog_start_each_proposal_once(
    store: EventStore, engine: Engine, tmp_path: Path
) -> None:
    pids = approved_emails(store, tmp_path, 4)
    first, second = handover.Line(store), handover.Line(store)
    try:
        read_first, read_second = _read(first, pids[0]), _read(second, pids[1])
        assert {other["id"] for other in read_second.others} == {pids[0], *pids[2:]}
        assert len(_start(first, read_first)) == 4
        assert _start(second, read_second) == []  # its own proposal is taken: it writes nothing
    finally:
        first.close()
        second.close()
    assert [len(events_of(store, pid, "action.started")) for pid in pids] == [1] * 4
    _replays_to_the_same_rows(engine)


def test_a_retry_starts_the_next_attempt(store: EventStore, engine: Engine, tmp_path: Path) -> None:
    [pid] = approved_emails(store, tmp_path, 1)
    start_attempt(store, pid)
    failed = sp.ActionFailed(attempt=1, error="the server said no", retryable=True)
    planned = [(lc.on_proposal(pid, "action.failed", failed, lc.attempt_key(pid, 1, "result")), False)]
    assert lc.transition(store, pid, {"executing"}, lambda _row: planned).won
    cmds, _, _ = commands(store, settings_for(tmp_path))
    assert cmds.retry(OPERATOR, pid).ok and row(store, pid)["state"] == "approved"
    line = handover.Line(store)
    try:
        [started] = _start(line, _read(line, pid))
    finally:
        line.close()
    assert started.row == row(store, pid) and started.row is not None
    assert (started.row["state"], started.row["attempts"]) == ("executing", 2)
    with engine.connect() as connection:
        states = dict(connection.execute(select(t.actions.c.attempt, t.actions.c.state)).all())
    assert states == {1: "failed", 2: "started"}
    _replays_to_the_same_rows(engine)


def test_the_executor_starts_a_backlog_of_emails_this_way_and_sends_each_once(
    store: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = approved_emails(store, tmp_path, 5)
    went: list[int] = []
    start = starts.start

    def counted(*args: Any) -> Any:
        won = start(*args)
        went.append(len(won))
        return won

    monkeypatch.setattr(starts, "start", counted)
    executor = Executor(store, {"send_email": HandingOver()})
    assert executor.execute(pids[0]).status == "executed"
    assert went == [5]
    assert [row(store, pid)["state"] for pid in pids] == ["executed"] * 5
    assert [executor.execute(pid).status for pid in pids[1:]] == ["nothing"] * 4
    _replays_to_the_same_rows(engine)


def test_a_proposal_changed_after_the_read_in_its_state_is_not_started_from_the_old_row(
    store: EventStore, engine: Engine, tmp_path: Path
) -> None:
    """Approved still, at the same attempt, but an event changed its row after the read (the row's
    position says so): started from the old row, the action would run with what it no longer says."""
    [pid] = approved_emails(store, tmp_path, 1)
    line = handover.Line(store)
    try:
        found = _read(line, pid)
        with engine.begin() as connection:  # as an event would: a new position with the change
            connection.execute(
                t.proposals.update()
                .where(t.proposals.c.id == pid)
                .values(reason="changed", position=t.proposals.c.position - 1)
            )
        assert _start(line, found) == []
    finally:
        line.close()
    assert row(store, pid)["state"] == "approved" and not events_of(store, pid, "action.started")


def test_a_backlog_to_several_customers_runs_on_a_pool_of_one(pg_url: str, tmp_path: Path) -> None:
    """The start leaves the batch's line holding a connection; reading the other customers' threads
    takes one of its own, so the line gives its one back first (else the read waits for the pool)."""
    setup = make_engine(pg_url)
    store = EventStore(setup)
    cmds, _, _ = commands(store, settings_for(tmp_path))
    ada, bob = make_customer(store), make_customer(store, "Bob Babbage", "bob@babbage.test")
    pids = [record(store, email_proposal(customer)) for customer in (ada, bob, ada, bob)]
    for pid in pids:
        assert cmds.approve(OPERATOR, pid).ok
    setup.dispose()
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        store = EventStore(engine)
        assert Executor(store, {"send_email": HandingOver()}).execute(pids[0]).status == "executed"
        assert [row(store, pid)["state"] for pid in pids] == ["executed"] * 4
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_a_job_with_nothing_to_start_is_answered_from_the_read_without_the_lock(
    store: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker process's batch holds two of the proposals under a live lease (this process
    never claimed them, so it has no memory of them), one is executed, one waits out its undo window:
    each job is answered from the read, as the general way would answer, and neither way of starting
    runs. Once the lease has run out, the job goes the general way and takes the attempt over."""
    pids = approved_emails(store, tmp_path, 4)
    ticks = iter(range(0, 10_000, 100))  # each look at the clock is 100 s later; the budget is 75 s
    other_process = Executor(store, {"send_email": HandingOver()}, monotonic=lambda: next(ticks))
    assert other_process.execute(pids[0]).status == "executed"  # its batch ran out of time after one
    windowed = pids[3]
    with engine.begin() as connection:  # as an approval with an undo window leaves it
        later = ev.utcnow() + timedelta(minutes=1)
        undo_window = t.proposals.update().where(t.proposals.c.id == windowed)
        connection.execute(undo_window.values(state="approved", not_before=later))
    before = _events(engine)

    def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a job with nothing to start took the lock")

    monkeypatch.setattr(lc, "start_batch", locked)
    monkeypatch.setattr(starts, "start", locked)
    this_process = Executor(store, {"send_email": HandingOver()})
    outcomes = [this_process.execute(pid) for pid in pids]
    assert [o.status for o in outcomes] == ["nothing", "busy", "busy", "deferred"]
    assert outcomes[0].detail == "proposal is executed" and outcomes[3].until == later
    assert _events(engine) == before
    monkeypatch.undo()
    after_the_lease = Executor(
        store, {"send_email": HandingOver()}, clock=lambda: ev.utcnow() + timedelta(minutes=6), batch_more=0
    )
    assert after_the_lease.execute(pids[1]).status == "executed"
    assert [e.payload.attempt for e in events_of(store, pids[1], "action.started")] == [1, 2]  # type: ignore[attr-defined]
