"""A backlog's start in one statement (Postgres), the append lock held only while that statement runs.

store.lifecycle.start_batch takes the append lock in its first round trip, with the reads, plans in
Python, and sends the writes and COMMIT in a second: the lock is held across a round trip and the
planning, 4-6 ms a batch in a burst of emails, and every other worker's handover waits behind it
(docs/benchmarks.md, eighteenth round). Here, for the common case, the rows are read without the
lock, the starts are planned on them as they were read, and one query takes the lock and writes:

    BEGIN; the append lock; the commit not waiting for the disk (as the general way's start); one
    statement for every start (_STARTS): each start a compare-and-set on its proposal as it was read
    (approved, the same attempts, the same position: no event has touched it since) and on the log
    not holding its event's key; the winners' events inserted one past the last, in order, and the
    action and proposal rows changed as store.proposal_projection's _started changes them; the end
    (store.handover.ENDING); COMMIT

The first start (the proposal whose job this is) decides for all: where it loses, nothing is written
and the caller goes the general way, which says why (undone meanwhile, taken by another worker). A
backlog proposal that loses (another worker read the same backlog and started it first) is left out
of the batch; its own job finds it taken. The common case: approved proposals whose undo window is
over, run by a connector that acts outside the log (the caller says which); anything else, and
SQLite, goes the general way. tests/integration/test_starts.py replays the log over the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text

from store import events as ev
from store import lifecycle as lc
from store import log
from store import proposals as sp
from store import tables as t
from store.db import opened_by_first_query, simple_statement, together_in_autocommit
from store.handover import ENDING, INSERT_WON, Line, steps_json
from store.state import driver_sql
from store.uow import CORE_PROJECTION

_FIRST = select(t.proposals).where(t.proposals.c.id == bindparam("id"))

# Every start, from one JSON array; see the module's doc. `checked` says which may start, `won` keeps
# them only where the first may (n = 0), and numbers them one past the last event. The changes are
# _started's: the attempt before it abandoned where it was left started or handed over (its worker
# died; it provably sent nothing), the attempt's action row (put: an upsert), the proposal executing.
_STARTS = text(
    f"""
WITH steps AS (
    SELECT * FROM json_to_recordset(CAST(:steps AS json)) AS s(
        n integer, pid varchar, attempt integer, read_position bigint, id varchar, stream varchar,
        type varchar, version integer, payload json, actor varchar, source varchar,
        confidence double precision, correlation_id varchar, causation_id varchar,
        occurred_at timestamptz, recorded_at timestamptz, idempotency_key varchar,
        connector varchar, action_key varchar, lease_until timestamptz
    )
), checked AS (
    SELECT s.*, EXISTS (
        SELECT FROM proposals AS p WHERE p.id = s.pid AND p.state = 'approved'
            AND p.attempts = s.attempt - 1 AND p.position = s.read_position
    ) AND (SELECT 1 FROM events AS e WHERE e.idempotency_key = s.idempotency_key LIMIT 1) IS NULL AS free
    FROM steps AS s
), won AS (
    SELECT c.*, c.pid || ':' || c.attempt AS aid,
        (SELECT coalesce(max(position), 0) FROM events) + row_number() OVER (ORDER BY c.n) AS position
    FROM checked AS c
    WHERE c.free AND (SELECT f.free FROM checked AS f WHERE f.n = 0)
), inserted AS (
    {INSERT_WON}
), abandoned AS (
    UPDATE actions AS a SET state = 'abandoned', finished_at = w.occurred_at
    FROM won AS w
    WHERE w.attempt > 1 AND a.id = w.pid || ':' || (w.attempt - 1) AND a.state IN ('started', 'handover')
), action AS (
    INSERT INTO actions (
        id, proposal_id, attempt, connector, idempotency_key, state, reference, error, started_at,
        finished_at
    )
    SELECT aid, pid, attempt, connector, action_key, 'started', NULL, NULL, occurred_at, NULL FROM won
    ON CONFLICT (id) DO UPDATE SET
        proposal_id = excluded.proposal_id, attempt = excluded.attempt, connector = excluded.connector,
        idempotency_key = excluded.idempotency_key, state = excluded.state, reference = NULL,
        error = NULL, started_at = excluded.started_at, finished_at = NULL
), proposal AS (
    UPDATE proposals AS p SET state = 'executing', attempts = w.attempt, action_key = w.action_key,
        phase = 'started', lease_until = w.lease_until, error = NULL, retryable = NULL,
        updated_at = w.occurred_at, position = w.position
    FROM won AS w WHERE p.id = w.pid
)
SELECT n, position FROM won
"""
)


@dataclass(frozen=True)
class Read:
    """What a start is planned on, read without the lock in one round trip: the proposal (None: there
    is none), up to `more` others approved and due (the general way's claim), and a read beside."""

    row: dict[str, Any] | None
    others: list[dict[str, Any]]
    beside: tuple[dict[str, Any], ...]


def read(
    line: Line, proposal_id: str, *, more: int, now: datetime, beside: tuple[Any, dict[str, Any]]
) -> Read:
    """The proposal, its backlog and `beside` (statement, parameters), on `line`'s connection."""
    claim = {"id": proposal_id, "now": now, "n": more, "state": "approved"}
    with line.connection() as connection:
        sent = together_in_autocommit(connection)  # no transaction: each is compared and set later
        reads = []
        for statement, params in ((_FIRST, {"id": proposal_id}), (lc.CLAIM, claim), beside):
            query, names = driver_sql(connection, statement)
            reads.append((sent.add(query, params), names))
        sent.send()
        first, others, found = (
            [dict(zip(names, v, strict=True)) for v in sent.rows(i)] for i, names in reads
        )
    return Read(first[0] if first else None, others, tuple(found))


def start(
    line: Line,
    planned: Sequence[tuple[Mapping[str, Any], ev.NewEvent]],
) -> list[lc.Transition]:
    """Start each (proposal row as read, its action.started) in one query on `line`'s connection, the
    first deciding for all (see the module's doc): the transitions won, the first first, each with the
    proposal row as the start left it; none where the first lost."""
    if not planned:
        return []
    recorded = ev.utcnow()
    rows, starts = [], []
    for n, (row, new) in enumerate(planned):
        values, payload = log.event_row(new, recorded)
        assert isinstance(payload, sp.ActionStarted)
        starts.append((row, values, payload))
        rows.append(
            {
                **values,
                "n": n,
                "pid": row["id"],
                "attempt": payload.attempt,
                "read_position": row["position"],
                "occurred_at": values["occurred_at"].isoformat(),
                "recorded_at": values["recorded_at"].isoformat(),
                "connector": payload.connector,
                "action_key": payload.idempotency_key,
                "lease_until": payload.lease_until.isoformat(),
            }
        )
    with line.connection() as connection, opened_by_first_query(connection) as sent:
        assert sent is not None
        dialect = connection.dialect
        log.lock_for_append(connection, durable=False, sent=sent)
        stepped = sent.add(*simple_statement(dialect, _STARTS, {"steps": steps_json(rows)}))
        ending = {"name": CORE_PROJECTION, "pid": planned[-1][0]["id"]}
        sent.add(*simple_statement(dialect, ENDING, ending))
        sent.add("COMMIT")
        sent.send()
        positions = dict(sent.rows(stepped))
    return [_started(*starts[n], position) for n, position in sorted(positions.items())]


def _started(
    read_row: Mapping[str, Any], values: dict[str, Any], payload: sp.ActionStarted, position: int
) -> lc.Transition:
    event = ev.Event.of_fields({**values, "position": position, "payload": payload})
    row = {
        **read_row,
        "state": "executing",
        "attempts": payload.attempt,
        "action_key": payload.idempotency_key,
        "phase": "started",
        "lease_until": payload.lease_until,
        "error": None,
        "retryable": None,
        "updated_at": event.occurred_at,
        "position": position,
    }
    return lc.Transition(True, row, (event,))
