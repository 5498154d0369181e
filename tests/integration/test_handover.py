"""store.handover: an email's handover, with the batch's results so far, as one query on Postgres.

It writes the proposal and action rows itself instead of through the projector, so every test here
ends with the property that matters: replaying the log gives exactly the rows it wrote."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from jobs.connectors.base import ActionRequest, ActionResult, Handover, PermanentError, send_ahead
from jobs.connectors.email import EmailConnector
from jobs.execute import Executor
from store import handover, log, replay
from store import lifecycle as lc
from store import proposals as sp
from store import tables as t
from store.db import PING_AFTER_IDLE_SECONDS, make_engine
from store.uow import CORE_PROJECTION, EventStore
from tests.integration.proposal_helpers import (
    approved_emails,
    events_of,
    row,
    start_attempt,
)
from tests.standins.smtp import SmtpStandin


class HandingOver:
    """A connector that cannot deduplicate: it hands each email over, then 'sends' it."""

    name = "smtp"
    dedupes = False

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        handover()
        return ActionResult(reference=f"<{request.proposal_id}@mail.test>")


def _positions(engine: Engine) -> tuple[list[int], int]:
    """Every event's position, in order, and the core projection's position."""
    with engine.connect() as connection:
        positions = list(
            connection.execute(select(t.events.c.position).order_by(t.events.c.position)).scalars()
        )
        applied = connection.execute(
            select(t.projection_positions.c.position).where(t.projection_positions.c.name == CORE_PROJECTION)
        ).scalar_one()
    return positions, applied


def _replays_to_the_same_rows(engine: Engine) -> None:
    verification = replay.verify(engine)
    assert verification.ok, "\n".join(d.describe() for d in verification.differences)
    positions, applied = _positions(engine)
    assert positions == list(range(1, len(positions) + 1))  # gap-free
    assert applied == positions[-1]


@pytest.fixture
def db_url(pg_url: str) -> str:
    """Postgres only, for conftest's engine: the one-query handover is its own (SQLite goes the general
    way, tested last)."""
    return pg_url


@pytest.fixture
def postgres(store: EventStore) -> EventStore:
    return store


def test_a_batch_of_emails_handed_over_in_one_query_each_replays_to_the_same_rows(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = approved_emails(postgres, tmp_path, 3)
    sent: list[list[str]] = []
    original = handover.send

    def watched(
        store: EventStore, steps: list[handover.Step], line: handover.Line | None = None
    ) -> handover.Sent | None:
        sent.append([step.event_type for step in steps])
        return original(store, steps, line)

    monkeypatch.setattr(handover, "send", watched)
    general: list[object] = []
    monkeypatch.setattr(lc, "transition_each", lambda *args, **kw: general.append(args))
    outcome = Executor(postgres, {"send_email": HandingOver()}).execute(pids[0])
    assert outcome.status == "executed" and not general
    # Each handover carries the result before it; the last result goes alone.
    assert sent == [
        ["action.handover"],
        ["action.executed", "action.handover"],
        ["action.executed", "action.handover"],
        ["action.executed"],
    ]
    for pid in pids:
        found = row(postgres, pid)
        assert (found["state"], found["phase"], found["result_ref"]) == (
            "executed",
            "done",
            f"<{pid}@mail.test>",
        )
        assert found["lease_until"] is None and found["executed_at"] == found["finished_at"]
        executed = events_of(postgres, pid, "action.executed")[0]
        assert found["position"] == executed.position and found["updated_at"] == executed.occurred_at
        assert [e.type for e in events_of(postgres, pid)][-3:] == [
            "action.started",
            "action.handover",
            "action.executed",
        ]
    with engine.connect() as connection:
        actions = connection.execute(select(t.actions.c.state, t.actions.c.reference)).all()
    assert sorted(actions) == sorted(("executed", f"<{pid}@mail.test>") for pid in pids)
    with engine.connect() as connection:  # None is JSON's null, as the column's type and a replay write it
        compensations = connection.execute(
            text("SELECT compensation IS NULL, compensation::text FROM proposals WHERE id = ANY(:ids)"),
            {"ids": pids},
        ).all()
    assert compensations == [(False, "null")] * 3
    _replays_to_the_same_rows(engine)


def test_a_step_whose_proposal_moved_on_loses_alone_and_draws_no_position(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    done, taken_over, handing = approved_emails(postgres, tmp_path, 3)
    for pid in (done, taken_over, handing):
        start_attempt(postgres, pid)
    start_attempt(postgres, taken_over, attempt=2)  # its first attempt's lease ran out: a newer one took it
    before, _ = _positions(engine)
    steps = [
        handover.Step(done, 1, sp.ActionExecuted(attempt=1, reference="r1", compensation={"undo": [1, "x"]})),
        handover.Step(taken_over, 1, sp.ActionExecuted(attempt=1, reference="r2")),
        handover.Step(handing, 1, sp.ActionHandover(attempt=1)),
    ]
    outcome = handover.hand_over(postgres, steps)
    assert outcome == handover.Outcome(won=(True, False, True), last=("executing", 1))
    after, _ = _positions(engine)
    assert after == [*before, before[-1] + 1, before[-1] + 2]
    assert row(postgres, done)["compensation"] == {"undo": [1, "x"]}
    assert (row(postgres, taken_over)["state"], row(postgres, taken_over)["attempts"]) == ("executing", 2)
    assert not events_of(postgres, taken_over, "action.executed")
    assert row(postgres, handing)["phase"] == "handover"
    _replays_to_the_same_rows(engine)


@pytest.mark.parametrize(
    "reference",
    [
        "<a'b\"c\\d\\'e@mail.test>",  # quotes and backslashes, for SQL and for JSON
        "<%(steps)s $1 :steps %s ?@mail.test>",  # placeholders of every kind the way passes through
        "<é✉\u200f😀\u0085 end@mail.test>",  # beyond ASCII: a mark, an emoji, a line break of Unicode's
    ],
)
def test_the_steps_values_reach_the_rows_as_they_were_given(
    postgres: EventStore, engine: Engine, tmp_path: Path, reference: str
) -> None:
    """The steps travel as one JSON value in one quoted literal: what either quoting treats apart comes
    out as it went in, in the event, the proposal and the action, and the events keep the steps' order."""
    done, handing = approved_emails(postgres, tmp_path, 2)
    for pid in (done, handing):
        start_attempt(postgres, pid)
    compensation = {"undo": [{"note": reference, "n": 2**53 + 1, "x": 0.1, "none": None}], "empty": {}}
    steps = [
        handover.Step(done, 1, sp.ActionExecuted(attempt=1, reference=reference, compensation=compensation)),
        handover.Step(handing, 1, sp.ActionHandover(attempt=1)),
    ]
    assert handover.hand_over(postgres, steps) == handover.Outcome(won=(True, True), last=("executing", 1))
    found = row(postgres, done)
    assert (found["result_ref"], found["compensation"]) == (reference, compensation)
    [executed] = events_of(postgres, done, "action.executed")
    assert isinstance(executed.payload, sp.ActionExecuted)
    assert (executed.payload.reference, executed.payload.compensation) == (reference, compensation)
    [handed] = events_of(postgres, handing, "action.handover")
    assert handed.position == executed.position + 1
    with engine.connect() as connection:
        action = connection.execute(select(t.actions.c.reference).where(t.actions.c.id == f"{done}:1"))
        assert action.scalar_one() == reference
    _replays_to_the_same_rows(engine)


def test_a_compensation_is_written_as_the_log_holds_it(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    """Its JSON form, as the payload's: keys as strings, an integer past 64 bits whole (orjson cannot
    write one; the standard library then does), a float's NaN as null."""
    [pid] = approved_emails(postgres, tmp_path, 1)
    start_attempt(postgres, pid)
    given = {"undo": {1: "x"}, "big": 2**70, "nan": float("nan")}
    executed = sp.ActionExecuted(attempt=1, reference="r", compensation=given)
    outcome = handover.hand_over(postgres, [handover.Step(pid, 1, executed)])
    assert outcome == handover.Outcome(won=(True,), last=("executed", 1))
    expected = {"undo": {"1": "x"}, "big": 2**70, "nan": None}
    assert row(postgres, pid)["compensation"] == expected
    [logged] = events_of(postgres, pid, "action.executed")
    assert isinstance(logged.payload, sp.ActionExecuted) and logged.payload.compensation == expected
    _replays_to_the_same_rows(engine)


def test_a_handover_recorded_before_loses_and_changes_nothing(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    """A retry of the same attempt after a transient failure: the log holds its handover's key."""
    [pid] = approved_emails(postgres, tmp_path, 1)
    start_attempt(postgres, pid)
    step = handover.Step(pid, 1, sp.ActionHandover(attempt=1))
    assert handover.hand_over(postgres, [step]) == handover.Outcome(won=(True,), last=("executing", 1))
    first = row(postgres, pid)
    before, _ = _positions(engine)
    assert handover.hand_over(postgres, [step]) == handover.Outcome(won=(False,), last=("executing", 1))
    assert row(postgres, pid) == first and _positions(engine)[0] == before
    assert len(events_of(postgres, pid, "action.handover")) == 1
    _replays_to_the_same_rows(engine)


def test_a_proposal_that_is_gone_or_not_executing_loses(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    [pid] = approved_emails(postgres, tmp_path, 1)  # approved, never started
    lost = handover.hand_over(postgres, [handover.Step(pid, 1, sp.ActionHandover(attempt=1))])
    assert lost == handover.Outcome(won=(False,), last=("approved", 0))
    missing = handover.hand_over(postgres, [handover.Step("prp_nope", 1, sp.ActionHandover(attempt=1))])
    assert missing == handover.Outcome(won=(False,), last=None)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(t.actions)).scalar_one() == 0
    _replays_to_the_same_rows(engine)


def test_sqlite_goes_the_general_way(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    store = EventStore(engine)
    pids = approved_emails(store, tmp_path, 2)
    step = handover.Step(pids[0], 1, sp.ActionHandover(attempt=1))
    assert handover.hand_over(store, [step]) is None
    assert not events_of(store, pids[0], "action.handover")  # nothing written
    assert Executor(store, {"send_email": HandingOver()}).execute(pids[0]).status == "executed"
    assert [row(store, pid)["state"] for pid in pids] == ["executed", "executed"]
    verification = replay.verify(engine)
    assert verification.ok, "\n".join(d.describe() for d in verification.differences)
    engine.dispose()


@pytest.mark.parametrize("failing", ["fails after the first insert", "finds ours gone"])
def test_a_query_that_fails_on_its_way_leaves_no_gap_in_the_positions(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    first, second = approved_emails(postgres, tmp_path, 2)
    start_attempt(postgres, first)
    start_attempt(postgres, second)
    assert handover.hand_over(postgres, [handover.Step(first, 1, sp.ActionHandover(attempt=1))])
    step = handover.Step(second, 1, sp.ActionHandover(attempt=1))
    if failing == "finds ours gone":  # psycopg's DEALLOCATE ALL, a pooler's new session: sent again
        with engine.connect() as connection:
            connection.exec_driver_sql("DEALLOCATE ALL")
        assert handover.hand_over(postgres, [step]) == handover.Outcome(won=(True,), last=("executing", 1))
    else:  # a statement after the event's insert fails: nothing of the transaction is kept
        fails = func.crm_no_such_function(bindparam("pid"))
        broken = select(fails, t.proposals.c.state, t.proposals.c.attempts)
        monkeypatch.setattr(handover, "ENDING", broken)
        with pytest.raises(DBAPIError):
            handover.hand_over(postgres, [step])
        monkeypatch.undo()
        assert not events_of(postgres, second, "action.handover")
        assert handover.hand_over(postgres, [step]).won == (True,)  # type: ignore[union-attr]
    _replays_to_the_same_rows(engine)
    with engine.connect() as connection:
        following = log.next_position(connection)
    assert following == _positions(engine)[0][-1] + 1


def _fill_the_log(engine: Engine, n: int) -> None:
    """n events of a type nothing reads, before the test's own: a log that has been running a while."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO events (position, id, stream, type, version, payload, actor, source,"
                " occurred_at, recorded_at, idempotency_key)"
                " SELECT g, 'evt_filler_' || g, 'filler', 'test.filler', 1, '{}', 'test', 'test', now(),"
                " now(), 'filler:' || g FROM generate_series(1, :n) AS g"
            ),
            {"n": n},
        )
        connection.execute(text("SELECT setval(pg_get_serial_sequence('events', 'position'), :n)"), {"n": n})
        connection.execute(text("ANALYZE events"))


def _rows_scanned(engine: Engine) -> int:
    """Rows of the log read by sequential scans so far. A backend's counts reach the statistics when it
    exits at the latest: the engine's connections are closed and their backends waited for."""
    engine.dispose()
    others = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        deadline = time.monotonic() + 30
        while connection.execute(others).scalar_one():
            assert time.monotonic() < deadline, "the test's other connections did not close"
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            time.sleep(0.05)
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        scanned = text("SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'events'")
        return int(connection.execute(scanned).scalar_one())


def test_an_email_batch_reads_the_log_by_its_indexes_not_whole(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    """Every email handed over read the whole log once (a count beside the max of its positions): a cost
    that grew with the log, to a quarter of a second an email at a million events."""
    filler = 5_000
    _fill_the_log(engine, filler)
    pids = approved_emails(postgres, tmp_path, 3)
    before = _rows_scanned(engine)
    assert Executor(postgres, {"send_email": HandingOver()}).execute(pids[0]).status == "executed"
    assert [row(postgres, pid)["state"] for pid in pids] == ["executed"] * 3
    assert _rows_scanned(engine) - before < filler


def test_a_handover_sent_ahead_that_fails_on_the_server_leaves_the_results_waiting(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second email's handover, sent ahead with the first email's result, fails in Postgres: the
    second is not sent and fails (retryable), and the first's result is recorded after all."""
    first, second = approved_emails(postgres, tmp_path, 2)
    ending, failures = handover.ENDING, []

    def failing_once(
        store: EventStore, steps: list[handover.Step], line: handover.Line | None = None
    ) -> handover.Sent | None:
        broken = len(steps) == 2 and not failures
        if broken:
            failures.append(steps)
            monkeypatch.setattr(handover, "ENDING", select(func.crm_no_such_function()))
        try:
            return send(store, steps, line)
        finally:
            monkeypatch.setattr(handover, "ENDING", ending)

    send = handover.send
    monkeypatch.setattr(handover, "send", failing_once)
    with SmtpStandin() as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        assert Executor(postgres, {"send_email": connector}).execute(first).status == "executed"
        assert smtp.message_ids() == [row(postgres, first)["result_ref"]]
    assert failures and row(postgres, first)["state"] == "executed"
    failed = row(postgres, second)
    assert failed["state"] == "failed" and failed["retryable"] and "crm_no_such_function" in failed["error"]
    assert not events_of(postgres, second, "action.handover")
    _replays_to_the_same_rows(engine)


def test_a_result_whose_handover_committed_but_answer_was_lost_is_shown_as_recorded(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second email's handover, sent ahead with the first email's result, commits and its answer
    is lost on the way back: the batch keeps the first result to record again, where it loses on its
    key; it is shown as executed all the same, not as "moved on"."""
    first, second = approved_emails(postgres, tmp_path, 2)
    outcome, lost = handover.Sent.outcome, []

    def cut(self: handover.Sent) -> handover.Outcome:
        found = outcome(self)
        if len(found.won) == 2 and not lost:
            lost.append(found)
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return found

    monkeypatch.setattr(handover.Sent, "outcome", cut)
    with SmtpStandin() as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        assert Executor(postgres, {"send_email": connector}).execute(first).status == "executed"
        assert smtp.message_ids() == [row(postgres, first)["result_ref"]]
    assert lost and lost[0].won == (True, True)
    # The second was handed over and its answer lost before DATA: the operator decides.
    assert row(postgres, second)["state"] == "uncertain"
    _replays_to_the_same_rows(engine)


class _BreaksOff:
    """Hands each email over, but sends the handover of `breaking` ahead and then fails without
    waiting for it: a connector that broke the contract."""

    name = "smtp"
    dedupes = False

    def __init__(self, breaking: str) -> None:
        self.breaking = breaking

    def run(self, request: ActionRequest, handing: Handover) -> ActionResult:
        if request.proposal_id == self.breaking:
            assert send_ahead(handing)
            raise PermanentError("broke off before sending", retryable=False)
        handing()
        return ActionResult(reference=f"<{request.proposal_id}@mail.test>")


def test_a_handover_sent_ahead_and_never_waited_for_is_waited_for_by_the_executor(
    postgres: EventStore, engine: Engine, tmp_path: Path
) -> None:
    first, second = approved_emails(postgres, tmp_path, 2)
    executor = Executor(postgres, {"send_email": _BreaksOff(second)})
    assert executor.execute(first).status == "executed"  # its result went with the second's handover
    failed = row(postgres, second)
    assert failed["state"] == "failed" and "broke off" in failed["error"]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    _replays_to_the_same_rows(engine)


def test_one_step_per_proposal(postgres: EventStore) -> None:
    step = handover.Step("prp_a", 1, sp.ActionHandover(attempt=1))
    with pytest.raises(ValueError, match="one step per proposal"):
        handover.hand_over(postgres, [step, step])


def test_a_batchs_start_and_handovers_go_on_one_connection_given_back_as_it_was_at_the_end(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = approved_emails(postgres, tmp_path, 3)
    used: list[object] = []
    taking = handover.Line.connection

    def watched(line: handover.Line) -> Any:
        with taking(line) as connection:
            used.append(connection)  # kept, so no two share an id
            yield connection

    monkeypatch.setattr(handover.Line, "connection", contextmanager(watched))
    assert Executor(postgres, {"send_email": HandingOver()}).execute(pids[0]).status == "executed"
    # The start's read and its query (store.starts), 3 handovers, 1 result.
    assert len(used) == 2 + 4 and len({id(connection) for connection in used}) == 1
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    with engine.connect() as connection:  # the pool set it back: out of autocommit
        assert connection.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
    _replays_to_the_same_rows(engine)


def test_a_line_pings_a_connection_that_sat_idle_and_replaces_one_gone_or_whose_handover_raised(
    postgres: EventStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = approved_emails(postgres, tmp_path, 4)
    for pid in pids:
        start_attempt(postgres, pid)
    line, now = handover.Line(postgres), [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    def handing(pid: str) -> Any:
        assert handover.hand_over(postgres, [handover.Step(pid, 1, sp.ActionHandover(attempt=1))], line)
        with line.connection() as connection:
            return connection

    kept = handing(pids[0])
    now[0] += PING_AFTER_IDLE_SECONDS * 2
    assert handing(pids[1]) is kept  # idle, pinged, still there: kept
    with engine.connect() as other:  # the server drops it while the batch talks SMTP
        backend = kept.connection.driver_connection.info.backend_pid
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    now[0] += PING_AFTER_IDLE_SECONDS * 2
    replaced = handing(pids[2])  # the ping finds it gone: a new one carries the handover
    assert replaced is not kept and kept.closed
    with line.connection(), pytest.raises(RuntimeError, match="one handover at a time"), line.connection():
        pass
    with pytest.raises(RuntimeError, match="failed on its way"), line.connection() as raised:
        raise RuntimeError("a handover that failed on its way")
    assert raised.closed
    assert handing(pids[3]) is not raised
    line.close()
    assert postgres.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert [row(postgres, pid)["phase"] for pid in pids] == ["handover"] * 4


class FailsFirst:
    """Hands each email over; refuses the first for good after its handover, sends the rest."""

    name = "smtp"
    dedupes = False

    def __init__(self) -> None:
        self.calls = 0

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        self.calls += 1
        handover()
        if self.calls == 1:
            raise PermanentError("mailbox unavailable", retryable=False)
        return ActionResult(reference=f"<{request.proposal_id}@mail.test>")


def test_a_batch_going_the_general_way_gives_its_line_back_first(pg_url: str, tmp_path: Path) -> None:
    """A failure recorded with the next handover goes the general way, on a connection of its own: the
    line gives its one back first, so a batch never holds one while it waits for another."""
    setup = make_engine(pg_url)
    pids = approved_emails(EventStore(setup), tmp_path, 2)
    setup.dispose()
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        store = EventStore(engine)
        assert Executor(store, {"send_email": FailsFirst()}).execute(pids[0]).status == "failed"
        assert [row(store, pid)["state"] for pid in pids] == ["failed", "executed"]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()
