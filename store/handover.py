"""An email's handover in one round trip (Postgres): the executor's commonest log transaction, sent whole.

A connector that cannot deduplicate (SMTP) records `action.handover` durably right before the step
that cannot be taken back, and the batch's results so far go in the same transaction
(jobs.execute). The general way (store.lifecycle.transition_each) takes the lock and reads the
proposal rows in one round trip, plans and projects in Python, and sends the writes and COMMIT in a
second: per email, more client and server CPU than the send itself. Here, where every step is an
`action.executed` result or the handover, the whole transaction is one simple query of statements
prepared on the connection (store.literals; sent again on statements prepared anew where they went):

    BEGIN; the append lock; one statement for every step (_STEPS): each step's event, inserted in
    the steps' order one past the last while its proposal is executing the step's attempt and the
    log does not hold the event's key, and where it was, the action row and the proposal row changed
    as the projector changes them for that event (store.proposal_projection); one statement to end
    (ENDING): the core projection's position, the events' sequence moved past the last event, the
    last step's proposal as it ends; COMMIT

The steps go as one value, a JSON array (one row each, read by json_to_recordset): the client quotes
one string where it bound some twenty values a step, and reads back one result for them all. Steps
are on distinct proposals (`send` refuses others), so none reads what another writes: the one
statement, all of its parts on one snapshot, writes what one statement a step wrote in turn.

Each step wins or loses on its own, as a compare-and-set of transition_each does: under the append lock
nothing moves between the guards and the writes. A step that loses writes nothing and takes no
position, and nothing draws from the sequence before the end's statement, so positions stay gap-free
as in the general way. A step loses: a result whose proposal moved on, or a handover the log holds
already (a retry of the same attempt after a transient failure, which then goes on: the caller reads
the proposal's state and attempt as this transaction left it). SQLite, and any other result (a
failure, effect events), go the general way.

`send` sends the query without waiting for it: the email connector sends the SMTP envelope while it
commits (jobs.execute._HandingOver), and waits for it before DATA.

The rows written must be those the projector writes for the same events: tests/integration/
test_handover.py replays the log over the live rows and compares them, for every step's outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, func, literal_column, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DisconnectionError

from store import events as ev
from store import lifecycle as lc
from store import log
from store import proposals as sp
from store import tables as t
from store.db import PING_AFTER_IDLE_SECONDS, opened_by_first_query, ping, simple_statement
from store.uow import CORE_PROJECTION, EventStore

_P, _E = t.proposals.c, t.events.c
# The insert of a statement's winning events (a CTE `won` of event rows with their positions), shared by
# the handover's and the start's statements (store.starts).
INSERT_WON = """INSERT INTO events (
        position, id, stream, type, version, payload, actor, source, confidence, correlation_id,
        causation_id, occurred_at, recorded_at, idempotency_key
    )
    SELECT position, id, stream, type, version, payload, actor, source, confidence, correlation_id,
        causation_id, occurred_at, recorded_at, idempotency_key
    FROM won"""

# Every step, from one JSON array. A step's event is inserted while its proposal is executing the
# attempt that took the step and the log does not hold its key (a retry's step recorded before), one
# past the last event in the steps' order (row_number() counts the winners alone). The key is looked
# up one step at a time (a subquery, not an anti-join that might read the whole log). The sequence is
# not drawn from here: the query's last statement moves it past the last event before COMMIT
# (ENDING), as the general way moves it, so a query that fails on its way (and is sent again,
# store.literals) leaves no gap in the positions. The changes to the action and proposal rows are
# store.proposal_projection's _handover and _executed (a compensation of None is JSON's null, as the
# column's type writes it; json_to_recordset reads it as SQL's NULL). It returns the winners' `n`.
_STEPS = text(
    f"""
WITH steps AS (
    SELECT * FROM json_to_recordset(CAST(:steps AS json)) AS s(
        n integer, pid varchar, attempt integer, id varchar, stream varchar, type varchar,
        version integer, payload json, actor varchar, source varchar, confidence double precision,
        correlation_id varchar, causation_id varchar, occurred_at timestamptz, recorded_at timestamptz,
        idempotency_key varchar, reference varchar, compensation json
    )
), won AS (
    SELECT s.*, s.pid || ':' || s.attempt AS aid,
        (SELECT coalesce(max(position), 0) FROM events) + row_number() OVER (ORDER BY s.n) AS position
    FROM steps AS s
    WHERE EXISTS (
        SELECT FROM proposals AS p WHERE p.id = s.pid AND p.state = 'executing' AND p.attempts = s.attempt
    )
    AND (SELECT 1 FROM events AS e WHERE e.idempotency_key = s.idempotency_key LIMIT 1) IS NULL
), inserted AS (
    {INSERT_WON}
), handed_action AS (
    UPDATE actions AS a SET state = 'handover'
    FROM won AS w WHERE w.type = 'action.handover' AND a.id = w.aid
), handed_proposal AS (
    UPDATE proposals AS p SET phase = 'handover', updated_at = w.occurred_at, position = w.position
    FROM won AS w WHERE w.type = 'action.handover' AND p.id = w.pid
), executed_action AS (
    UPDATE actions AS a SET state = 'executed', reference = w.reference, finished_at = w.occurred_at
    FROM won AS w WHERE w.type = 'action.executed' AND a.id = w.aid
), executed_proposal AS (
    UPDATE proposals AS p SET state = 'executed', phase = 'done', lease_until = NULL,
        result_ref = w.reference, compensation = coalesce(w.compensation, 'null'),
        executed_at = w.occurred_at, finished_at = w.occurred_at, updated_at = w.occurred_at,
        position = w.position
    FROM won AS w WHERE w.type = 'action.executed' AND p.id = w.pid
)
SELECT n FROM won
"""
)

# Moves forward only, to the last event appended (the core projection has applied every one).
_POSITION = postgresql.insert(t.projection_positions).from_select(
    ["name", "position"], select(bindparam("name"), func.max(_E.position))
)
_SAVE_POSITION = _POSITION.on_conflict_do_update(
    index_elements=["name"],
    set_={"position": _POSITION.excluded.position},
    where=t.projection_positions.c.position < _POSITION.excluded.position,
).cte("position_saved")
# max() alone, so that Postgres reads it off the end of the positions' index (an aggregate beside it,
# such as a count, would read the whole log); setval is strict: on an empty log it sets nothing.
_LAST_POSITION = select(func.max(_E.position)).scalar_subquery()
# The transaction's end in one statement: the core projection's position saved, the events' sequence
# moved past the last event, and the last step's proposal as it ends (NULLs: there is no such proposal).
ENDING = select(
    func.setval(literal_column("pg_get_serial_sequence('events', 'position')"), _LAST_POSITION),
    select(_P.state).where(_P.id == bindparam("pid")).scalar_subquery(),
    select(_P.attempts).where(_P.id == bindparam("pid")).scalar_subquery(),
).add_cte(_SAVE_POSITION)


@dataclass(frozen=True)
class Step:
    """One compare-and-set of a handover's transaction: `payload`, an ActionExecuted or the
    ActionHandover, appended on proposal `pid` while it is executing `attempt`."""

    pid: str
    attempt: int
    payload: sp.ActionExecuted | sp.ActionHandover

    @property
    def event_type(self) -> str:
        return "action.handover" if isinstance(self.payload, sp.ActionHandover) else "action.executed"

    @property
    def key(self) -> str:
        return lc.attempt_key(
            self.pid, self.attempt, "handover" if self.event_type == "action.handover" else "result"
        )


@dataclass(frozen=True)
class Outcome:
    """Which steps won, and the last step's proposal (state, attempt) as the transaction left it (None:
    there is no such proposal)."""

    won: tuple[bool, ...]
    last: tuple[str, int] | None


def hand_over(store: EventStore, steps: Sequence[Step], line: Line | None = None) -> Outcome | None:
    """Append each step's event where its proposal is still executing its attempt, in one durable
    transaction sent as one query (on `line`'s connection where given). None, having written nothing,
    on SQLite (the caller then goes the general way)."""
    sent = send(store, steps, line)
    return sent.outcome() if sent is not None else None


class Line:
    """A connection kept for a run of handovers on one thread (an executor's batch), so that the pool's
    checkout, the switch to autocommit and the checkin are paid once for the run, not once an email.
    It carries one handover at a time. One idle past PING_AFTER_IDLE_SECONDS (an SMTP server's
    backoff, say) is pinged first, as the pool pings such a connection at checkout, and replaced if it
    is gone; one whose handover raised is given back, whatever state it was left in. `close` gives it
    back; the owner must call it. The owner closes it before it needs another of the engine's
    connections on a path that may wait for one (the executor: the general way, an error's reads);
    while it holds it, the notifier's reads take a second (the pool's 15 are ample for the threads
    of a process: store.db.make_engine)."""

    def __init__(self, store: EventStore) -> None:
        self._engine = store.engine
        self._connection: Connection | None = None
        self._used = 0.0
        self._busy = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if self._busy:
            raise RuntimeError("a line carries one handover at a time: the last one's outcome was not taken")
        kept = self._connection
        idle = kept is not None and time.monotonic() - self._used > PING_AFTER_IDLE_SECONDS
        if kept is not None and idle and not self._alive(kept):
            kept.invalidate()  # the pool replaces it
            self.close()
        if self._connection is None:
            self._connection = self._engine.connect()
        self._busy = True
        try:
            yield self._connection
        except BaseException:
            self.close()
            raise
        finally:
            self._busy = False
        self._used = time.monotonic()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _alive(self, connection: Connection) -> bool:
        driver = connection.connection.dbapi_connection
        if driver is None:
            return False
        try:
            ping(self._engine.dialect, driver)
        except DisconnectionError:
            return False
        return True


class Sent:
    """A handover on its way (`send`): Postgres runs it while the caller does something else, and
    `outcome` waits for it. The caller must take the outcome: the query holds a connection until then."""

    def __init__(self, store: EventStore, steps: Sequence[Step], line: Line | None = None) -> None:
        self._outcome: Outcome | None = None
        self._running: Iterator[None] | None = self._run(store, steps, line)
        next(self._running)  # up to the query sent (an error raises here, with nothing left running)

    def outcome(self) -> Outcome:
        if self._running is not None:
            running, self._running = self._running, None
            for _ in running:  # the rest: the rows read, the connection given back
                pass
        assert self._outcome is not None
        return self._outcome

    def _run(self, store: EventStore, steps: Sequence[Step], line: Line | None) -> Iterator[None]:
        dialect = store.engine.dialect
        recorded = ev.utcnow()
        rows = steps_json([_step_row(n, step, recorded) for n, step in enumerate(steps)])
        with (
            line.connection() if line is not None else store.engine.connect() as connection,
            opened_by_first_query(connection) as sent,
        ):
            assert sent is not None
            sent.add(log.LOCK)
            stepped = sent.add(*simple_statement(dialect, _STEPS, {"steps": rows}))
            ending = {"name": CORE_PROJECTION, "pid": steps[-1].pid}
            ended = sent.add(*simple_statement(dialect, ENDING, ending))
            sent.add("COMMIT")
            yield from sent.sending()
        ((_, state, attempt),) = sent.rows(ended)
        won = {n for (n,) in sent.rows(stepped)}
        last = (str(state), int(attempt)) if state is not None else None
        self._outcome = Outcome(tuple(n in won for n in range(len(steps))), last)


def send(store: EventStore, steps: Sequence[Step], line: Line | None = None) -> Sent | None:
    """hand_over's query, sent without waiting for it (None, having sent nothing, on SQLite)."""
    if store.engine.dialect.name != "postgresql" or not steps:
        return None
    ids = [step.pid for step in steps]
    if len(set(ids)) != len(ids):
        raise ValueError("one step per proposal in a transaction")
    return Sent(store, steps, line)


def _step_row(n: int, step: Step, recorded: datetime) -> dict[str, Any]:
    """Step n's row of _STEPS's array: its event's log row (store.log.event_row, so it is written as any
    event is) with what the statement matches and changes by, taken from the payload as the log holds it
    (its JSON form: a compensation's keys as strings, as the projector reads them back)."""
    values, _ = log.event_row(lc.on_proposal(step.pid, step.event_type, step.payload, step.key), recorded)
    values.update(
        n=n,
        pid=step.pid,
        attempt=step.attempt,
        occurred_at=values["occurred_at"].isoformat(),
        recorded_at=values["recorded_at"].isoformat(),
    )
    if isinstance(step.payload, sp.ActionExecuted):
        payload = values["payload"]
        values.update(reference=payload["reference"], compensation=payload["compensation"])
    return values


def steps_json(rows: list[dict[str, Any]]) -> str:
    """rows as JSON: orjson's, or the standard library's for what orjson cannot write (an integer past
    64 bits in a compensation)."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        return json.dumps(rows)
