"""The intake inbox: accept a signal with one insert, sequence it into the log shortly after, in batches.

Appending to the log is serialised (store.log's append lock keeps positions gap-free and in commit
order), and a signal's append resolves its customer and updates the projections: about fifteen
statements under that lock. A webhook sender wants a quick 2xx, and a burst of deliveries would queue
behind the lock. So the web routes `stage` a signal (one statement, no lock; the answer carries the
event id the signal will have in the log) and `sequence` moves staged rows into the log, many per
transaction, in staging order, under the ids already given out. DESIGN.md's flow keeps its shape:
intake, then the log with its outbox row in one transaction, then process_event.

Idempotency (invariant 2): a key is known when the log or the inbox holds it. A key's inbox row is kept
after sequencing, as its receipt (its copy of the signal is cleared), so a redelivery answers the same
event id whether or not the first delivery has reached the log yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, func, select, text, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from store import tables as t
from store.batch import BatchTransaction
from store.db import one_of
from store.events import SIGNAL_TYPES, Signal, new_id, utcnow
from store.log import storable_key
from store.uow import EventStore, Transaction

log = logging.getLogger(__name__)

# Rows moved into the log per transaction: large enough that a burst costs one commit per batch, small
# enough that the append lock is never held for long.
SEQUENCE_BATCH = 200
# A row that fails this many sequencing attempts (a signal the log refuses) is left for a person; the
# error is on the row and in the log, and /metrics counts such rows.
MAX_ATTEMPTS = 5
# Failures that say the database is unreachable, not that a row is bad: stop and let the caller retry.
UNREACHABLE = (OperationalError, InterfaceError)

_IN = t.intake.c
_COLUMNS = ("idempotency_key", "event_id", "type", "source", "occurred_at", "signal", "staged_at", "attempts")


@dataclass(frozen=True)
class Staged:
    """The outcome of staging: the event id (the original one for a known key), and the inbox row."""

    event_id: str
    duplicate: bool
    row_id: int | None = None


def _insert_unless_known(dialect: str) -> Any:
    """INSERT … SELECT … WHERE the log lacks the key ON CONFLICT (key) DO NOTHING RETURNING id."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = select(*(bindparam(name, type_=_IN[name].type) for name in _COLUMNS)).where(
        ~exists().where(t.events.c.idempotency_key == bindparam("idempotency_key"))
    )
    return (
        insert(t.intake)
        .from_select(list(_COLUMNS), values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_IN.id)
    )


# Built once per dialect: a fresh statement per request costs more to compile than to run.
_STAGE = {dialect: _insert_unless_known(dialect) for dialect in ("postgresql", "sqlite")}
_KNOWN = union_all(
    select(t.events.c.id).where(t.events.c.idempotency_key == bindparam("key")),
    select(_IN.event_id).where(_IN.idempotency_key == bindparam("key")),
)
_MARK = (
    update(t.intake)
    .where(_IN.id == bindparam("row"))
    .values(position=bindparam("at"), event_id=bindparam("event"), signal=None, error=None)
)
# The same for a whole batch on Postgres, in one statement over arrays: an executemany of _MARK is a
# statement per row.
_MARK_ALL = text(
    "UPDATE intake SET position = marked.at, event_id = marked.event, signal = NULL, error = NULL"
    " FROM unnest(CAST(:rows AS BIGINT[]), CAST(:ats AS BIGINT[]), CAST(:events AS VARCHAR[]))"
    " AS marked(row_id, at, event) WHERE intake.id = marked.row_id"
)

# Which of the rows bound as `ids` are still to be sequenced, in staging order: what recording them reads.
_UNSEQUENCED = {
    dialect: select(
        _IN.id,
        _IN.idempotency_key,
        _IN.event_id,
        _IN.type,
        _IN.source,
        _IN.occurred_at,
        _IN.signal,
        _IN.staged_at,
    )
    .where(one_of(_IN.id, "ids", dialect), _IN.position.is_(None))
    .order_by(_IN.id)
    for dialect in ("postgresql", "sqlite")
}


def _single_statement(engine: Engine) -> AbstractContextManager[Connection]:
    """A connection for one statement: autocommit on Postgres (no BEGIN and COMMIT round trips); on
    SQLite a transaction, as its BEGIN IMMEDIATE is what serialises writers (store.db)."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return engine.begin()


def stage(
    engine: Engine,
    signal_type: str,
    signal: Signal,
    idempotency_key: str,
    *,
    source: str,
    occurred_at: datetime | None = None,
) -> Staged:
    """Put a validated signal in the inbox unless its key is known; one statement when it is new."""
    values = staging_row(signal_type, signal, idempotency_key, source=source, occurred_at=occurred_at)
    try:
        return _stage_once(engine, values)
    except DBAPIError as exc:
        # An engine without pre-ping meets a connection the server dropped only when it uses it; the
        # pool has discarded it, so once more is enough. Safe: staging a key twice stages it once.
        if not exc.connection_invalidated:
            raise
        return _stage_once(engine, values)


def staging_row(
    signal_type: str,
    signal: Signal,
    idempotency_key: str,
    *,
    source: str,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """The inbox row `stage_all` takes for a validated signal (its event id chosen now)."""
    return _row(signal_type, signal.model_dump(mode="json"), idempotency_key, source, occurred_at)


def stage_all(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[Staged]:
    """Stage `staging_row`s in the caller's transaction, in order, each as `stage` would.

    For a batch whose staging must commit together with something else (the mailbox watch stores how
    far it read in the same transaction): nothing is staged unless all of it is. A key repeated within
    the batch is staged once; the repeats answer the first one's event id.
    """
    statement = _STAGE[connection.dialect.name]
    staged = []
    for values in rows:
        row_id = connection.execute(statement, values).scalar_one_or_none()
        if row_id is not None:
            staged.append(Staged(values["event_id"], duplicate=False, row_id=row_id))
        else:
            known = connection.execute(_KNOWN, {"key": values["idempotency_key"]}).scalars().first()
            staged.append(_known(values, known))
    return staged


def _row(
    signal_type: str, signal: Any, idempotency_key: str, source: str, occurred_at: datetime | None
) -> dict[str, Any]:
    """The inbox row's values; `signal` as the JSON column takes it (a dict, or JSON text on the async
    path). The event id is chosen here and is the one the event gets in the log."""
    return {
        "idempotency_key": storable_key(idempotency_key),
        "event_id": new_id(),
        "type": signal_type,
        "source": source,
        "occurred_at": occurred_at,
        "signal": signal,
        "staged_at": utcnow(),
        "attempts": 0,
    }


def _stage_once(engine: Engine, values: dict[str, Any]) -> Staged:
    with _single_statement(engine) as connection:
        row_id = connection.execute(_STAGE[connection.dialect.name], values).scalar_one_or_none()
        if row_id is not None:
            return Staged(values["event_id"], duplicate=False, row_id=row_id)
        # Known: in the log already, or staged before (by a concurrent delivery, whose insert this
        # statement waited for; a new statement sees it committed).
        known = connection.execute(_KNOWN, {"key": values["idempotency_key"]}).scalars().first()
    return _known(values, known)


def _known(values: dict[str, Any], event_id: str | None) -> Staged:
    if event_id is None:  # pragma: no cover - a unique key neither inserted nor found cannot happen
        raise RuntimeError(f"intake: key {values['idempotency_key']!r} neither staged nor found")
    return Staged(event_id, duplicate=True)


def sequence(
    store: EventStore,
    *,
    rows: Collection[int] | None = None,
    staged_before: datetime | None = None,
    batch: int = SEQUENCE_BATCH,
    linger: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Move staged rows (all, these `rows`, or those staged before a time) into the log; how many moved.

    Each batch is one transaction under the append lock: the signal is recorded as its customer's
    event (resolution, projections, outbox row) with the promised event id, and its row is marked. A
    row the log refuses is retried on its own, so one bad row never holds back the others; it counts
    an attempt and is skipped for the rest of this call. Raises only when the database is unreachable.

    `linger` (seconds; open-ended calls only, the sequencing job's): after a batch of more than one row
    but less than a full one, wait that long before looking again. Such a batch says signals arrive
    faster than one transaction records them; waiting lets more of them share the next transaction's
    fixed cost (the lock, the reads of keys, a write per table). A lone signal, or a full backlog, goes
    on at once.
    """
    moved = 0
    skip: set[int] = set()
    open_ended = rows is None and staged_before is None
    while True:
        ids = _pending(store.engine, rows, staged_before, batch, skip)
        if not ids:
            return moved
        try:
            done, refused = _sequence_rows(store, ids)
        except UNREACHABLE:
            raise
        except Exception as exc:
            if len(ids) > 1:
                for one in ids:
                    moved += sequence(store, rows=[one])
            else:
                _count_failure(store.engine, ids[0], exc)
            skip.update(ids)
            continue
        moved += done
        for row_id, error in refused.items():
            _count_failure(store.engine, row_id, error)
        skip.update(refused)
        if linger and open_ended and 1 < len(ids) < batch:
            sleep(linger)


def _pending(
    engine: Engine,
    rows: Collection[int] | None,
    staged_before: datetime | None,
    batch: int,
    skip: set[int],
) -> list[int]:
    query = select(_IN.id).where(_IN.position.is_(None), _IN.attempts < MAX_ATTEMPTS)
    if rows is not None:
        query = query.where(_IN.id.in_(list(rows)))
    if staged_before is not None:
        query = query.where(_IN.staged_at <= staged_before)
    if skip:
        query = query.where(_IN.id.not_in(list(skip)))
    with engine.connect() as connection:
        return list(connection.execute(query.order_by(_IN.id).limit(batch)).scalars())


def _sequence_rows(store: EventStore, ids: list[int]) -> tuple[int, dict[int, Exception]]:
    """Record these rows in one transaction: how many, and the rows left out as unrecordable, with why.

    One row is recorded as any signal is; more as a batch (store.batch). A row that `check` tells will
    fail is left out rather than failing the others.
    """
    with store.transaction(Transaction if len(ids) == 1 else BatchTransaction) as tx:
        # Read again under the lock: a sequencer in another process may have moved some meanwhile.
        query = _UNSEQUENCED[tx.connection.dialect.name]
        staged, refused = [], {}
        for row in tx.connection.execute(query, {"ids": ids}).mappings().all():
            try:
                signal = SIGNAL_TYPES[row["type"]].model_validate(row["signal"])
                tx.check(signal)
            except Exception as exc:
                refused[row["id"]] = exc
                continue
            staged.append((row, signal))
        tx.prepare([(row["idempotency_key"], signal) for row, signal in staged])
        marks = []
        for row, signal in staged:
            appended = tx.record_signal(
                row["type"],
                signal,
                row["idempotency_key"],
                source=row["source"],
                # Received when staged: a late sequencing must not move the signal in time.
                occurred_at=row["occurred_at"] or row["staged_at"],
                event_id=row["event_id"],
            )
            # A key the log already held (recorded another way) keeps its first event: the receipt
            # points there from now on.
            marks.append({"row": row["id"], "at": appended.event.position, "event": appended.event.id})
        _mark(tx.connection, marks)
    return len(marks), refused


def _mark(connection: Connection, marks: list[dict[str, Any]]) -> None:
    """Give sequenced rows their receipts: the event's position and id; their copy of the signal cleared."""
    if len(marks) > 1 and connection.dialect.name == "postgresql":
        arrays = {f"{name}s": [mark[name] for mark in marks] for name in ("row", "at", "event")}
        connection.execute(_MARK_ALL, arrays)
    elif marks:
        connection.execute(_MARK, marks)


def _count_failure(engine: Engine, row_id: int, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    with engine.begin() as connection:
        connection.execute(
            update(t.intake).where(_IN.id == row_id).values(attempts=_IN.attempts + 1, error=error)
        )
        query = select(_IN.attempts, _IN.idempotency_key).where(_IN.id == row_id)
        attempts, key = connection.execute(query).one()
    if attempts >= MAX_ATTEMPTS:
        log.error(
            "signal %s could not be recorded after %d attempts and is left in the intake table "
            "(row %d): %s. Fix the cause, then set its attempts to 0 and run `crm jobs relay`",
            key,
            attempts,
            row_id,
            error,
        )
    else:
        log.warning("signal %s could not be recorded (attempt %d): %s", key, attempts, error)


def refused(engine: Engine, *, unreported: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """Signals accepted (answered 202) that the log refused for good, newest first, with their error."""
    query = select(
        _IN.id, _IN.idempotency_key, _IN.type, _IN.source, _IN.staged_at, _IN.error, _IN.reported_at
    ).where(_IN.position.is_(None), _IN.attempts >= MAX_ATTEMPTS)
    if unreported:
        query = query.where(_IN.reported_at.is_(None))
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(_IN.id.desc()).limit(limit)).mappings().all()
    return [dict(row) for row in rows]


def mark_reported(engine: Engine, row_ids: list[int]) -> None:
    """Record that refused rows were reported to the operator (they are not reported again)."""
    with engine.begin() as connection:
        connection.execute(update(t.intake).where(_IN.id.in_(row_ids)).values(reported_at=utcnow()))


def retry_refused(engine: Engine) -> int:
    """Give every refused row fresh attempts (after its cause was fixed); how many."""
    with engine.begin() as connection:
        result = connection.execute(
            update(t.intake)
            .where(_IN.position.is_(None), _IN.attempts >= MAX_ATTEMPTS)
            .values(attempts=0, reported_at=None)
        )
    return int(result.rowcount or 0)


def backlog(engine: Engine) -> dict[str, int]:
    """Rows waiting to be sequenced, and rows given up on (for /metrics)."""
    query = select(
        func.count().filter(_IN.attempts < MAX_ATTEMPTS), func.count().filter(_IN.attempts >= MAX_ATTEMPTS)
    ).where(_IN.position.is_(None))
    with engine.connect() as connection:
        waiting, failed = connection.execute(query).one()
    return {"waiting": int(waiting), "failed": int(failed)}
