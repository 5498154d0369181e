"""The event log: append (idempotent, serialised so positions follow commit order) and read."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import queue
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    String,
    Text,
    bindparam,
    cast,
    exists,
    func,
    insert,
    select,
    text,
)

from store import tables as t
from store.db import MAX_PARAMETERS, SentTogether, bind_processors, bound_values, insert_rows, pipelined
from store.events import Event, NewEvent, Payload, parse_payload, parse_stored, payload_model, utcnow

# pg_advisory_xact_lock key for appends: one writer at a time keeps positions gap-free and in commit
# order, which is what lets projections and readers trust "everything up to position N".
APPEND_LOCK_KEY = 0x63726D6C6F67  # "crmlog"


def lock_for_append(
    connection: Connection, *, durable: bool = True, sent: SentTogether | None = None
) -> None:
    """Serialise appenders until this transaction ends (SQLite's BEGIN IMMEDIATE already does).

    `durable=False`: the commit does not wait for Postgres to flush it to disk (`synchronous_commit
    off` for this transaction only). The next durable commit flushes it too, since the write-ahead
    log is flushed in order; a crash of Postgres before then loses it, nothing else.
    `sent`: the statements join those (Postgres), to go with the reads that follow them.
    """
    if connection.dialect.name != "postgresql":
        return
    if sent is not None:
        sent.add(LOCK)
        if not durable:
            sent.add(_NO_WAIT)
        return
    with pipelined(connection):  # the transaction's BEGIN and the lock in one round trip
        connection.exec_driver_sql(LOCK)
        if not durable:
            connection.exec_driver_sql(_NO_WAIT)


# Set at BEGIN for a commit that need not wait for the disk, and set back by one that finds, later in
# the transaction, that it must (store.uow.Transaction.wait_for_disk).
_NO_WAIT = "SET LOCAL synchronous_commit = off"
LOCK = f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"
WAIT = text("SET LOCAL synchronous_commit = on")


# Built once: a fresh statement per append costs more to build and cache-key than to run.
_FIND_BY_KEY = select(t.events).where(t.events.c.idempotency_key == bindparam("key"))
_INSERT = insert(t.events).returning(t.events.c.position)
_COLUMNS = tuple(column.name for column in t.events.c if column.name != "position")
# The insert for a key not looked up first: it writes nothing when the log holds the key (one round
# trip instead of a lookup and an insert). It is an INSERT … SELECT … WHERE NOT EXISTS rather than
# ON CONFLICT DO NOTHING so a known key draws no position from the sequence (no gap); the append
# lock keeps anyone from adding the key between the check and the insert.
_INSERT_UNLESS_KNOWN = (
    insert(t.events)
    .from_select(
        list(_COLUMNS),
        select(*(bindparam(name, type_=t.events.c[name].type) for name in _COLUMNS)).where(
            ~exists().where(t.events.c.idempotency_key == bindparam("idempotency_key"))
        ),
    )
    .returning(t.events.c.position)
)


# The idempotency_key column's width. Keys are source + external id, and derived keys add a suffix
# ("…#contact:external:<id>"), so an outside id near the limit would not fit: longer keys are stored
# as their SHA-256, the same way on every backend.
MAX_KEY_LENGTH = 255


def storable_key(idempotency_key: str) -> str:
    """The key as stored: itself when it fits the column, else `sha256:<hex>` of it."""
    if len(idempotency_key) <= MAX_KEY_LENGTH:
        return idempotency_key
    return "sha256:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def find_by_key(connection: Connection, idempotency_key: str) -> Event | None:
    row = connection.execute(_FIND_BY_KEY, {"key": storable_key(idempotency_key)}).first()
    return to_event(row._mapping) if row is not None else None


def insert_event(connection: Connection, new: NewEvent, recorded_at: datetime | None = None) -> Event:
    """Insert one event; the caller holds the append lock and has checked the key."""
    event = _insert(connection, new, recorded_at, _INSERT)
    assert event is not None
    return event


def insert_unless_known(connection: Connection, new: NewEvent) -> Event | None:
    """Insert one event unless the log holds its key (then None); the caller holds the append lock."""
    return _insert(connection, new, None, _INSERT_UNLESS_KNOWN)


def insert_all_unless_known(connection: Connection, news: list[NewEvent]) -> list[Event | None]:
    """insert_unless_known for each event, in one statement and one round trip on Postgres: positions
    are drawn in the given order, and none for a known key (None in its place). Events sharing a key
    (the second would be known once the first is in), or too many for one statement's parameters, are
    inserted one by one, as elsewhere. The caller holds the append lock."""
    keys = [storable_key(new.idempotency_key) for new in news]
    one_statement = 2 <= len(news) <= MAX_PARAMETERS // len(_COLUMNS) and len(set(keys)) == len(keys)
    if connection.dialect.name != "postgresql" or not one_statement:
        return [insert_unless_known(connection, new) for new in news]
    made = [event_row(new) for new in news]
    processors = bind_processors(connection, t.events, _COLUMNS)
    parameters: list[Any] = []
    for values, _ in made:
        parameters += bound_values(values, _COLUMNS, processors)
    driver = connection.connection.driver_connection
    assert driver is not None
    with pipelined(connection), psycopg.RawCursor(driver) as cursor:
        cursor.execute(_insert_all_sql(connection.dialect, len(news)), parameters)
        positions = dict((key, position) for position, key in cursor.fetchall())
    return [
        Event(position=positions[key], **{**values, "payload": model}) if key in positions else None
        for key, (values, model) in zip(keys, made, strict=True)
    ]


# "Not in the log", for rows `v` with an `idempotency_key`: one lookup of the key's index per row. As
# NOT EXISTS the planner turned it into an anti-join and, from about a hundred rows on and up to a log
# of some hundred thousand events, hashed the whole log instead: a batch of 200 rows took 7.7-10 ms of
# Postgres at 30,000 events against 0.3 ms. A scalar subquery is not turned into a join, so it stays a
# lookup per row whatever the statistics say.
NOT_IN_LOG = "(SELECT true FROM events e WHERE e.idempotency_key = v.idempotency_key LIMIT 1) IS NULL"


@functools.lru_cache(maxsize=64)
def _insert_all_sql(dialect: Any, count: int) -> bytes:
    """INSERT INTO events … SELECT … FROM (VALUES …) WHERE the key is not in the log, in the rows' order
    (the order positions are drawn in), for psycopg's raw cursor. Each value is cast to its column's
    type, so the VALUES list's types do not depend on which values are NULL; strings to VARCHAR without
    a length, which would cut a longer value instead of refusing it as the column does."""
    width = len(_COLUMNS)
    types = [
        "VARCHAR" if isinstance(column.type, String) else column.type.compile(dialect=dialect)
        for column in (t.events.c[name] for name in _COLUMNS)
    ]
    rows = ", ".join(
        "(" + ", ".join(f"${row * width + n + 1}::{types[n]}" for n in range(width)) + f", {row})"
        for row in range(count)
    )
    names = ", ".join(f'"{name}"' for name in _COLUMNS)
    picked = ", ".join(f'v."{name}"' for name in _COLUMNS)
    return (
        f"INSERT INTO events ({names}) SELECT {picked} FROM (VALUES {rows}) AS v({names}, ord)"
        f" WHERE {NOT_IN_LOG}"
        " ORDER BY v.ord RETURNING position, idempotency_key"
    ).encode()


def _insert(
    connection: Connection, new: NewEvent, recorded_at: datetime | None, statement: Any
) -> Event | None:
    values, model = event_row(new, recorded_at)
    position = connection.execute(statement, values).scalar_one_or_none()
    if position is None:
        return None
    return Event(position=position, **{**values, "payload": model})


def event_row(new: NewEvent, recorded_at: datetime | None = None) -> tuple[dict[str, Any], Payload]:
    """The log row of a new event (all but its position), and its payload as its type's model."""
    payload = new.payload.model_dump(mode="json", exclude_defaults=False)
    # A row that its type's model cannot read back (unknown type, another model's payload) would stop
    # every replay; refuse it before it is written. Raises UnknownEventType or ValidationError.
    model = new.payload
    if not isinstance(model, payload_model(new.type)):
        model = payload_model(new.type).model_validate(payload)
    recorded = recorded_at or utcnow()
    values: dict[str, Any] = {
        "id": new.id,
        "stream": new.stream,
        "type": new.type,
        "version": type(model).VERSION,
        "payload": payload,
        "actor": new.actor,
        "source": new.source,
        "confidence": new.confidence,
        "correlation_id": new.correlation_id,
        "causation_id": new.causation_id,
        "occurred_at": new.occurred_at or recorded,
        "recorded_at": recorded,
        "idempotency_key": storable_key(new.idempotency_key),
    }
    return values, model


# Appending a batch: the events are written together at the end of the transaction, so their positions
# are given out in order before they are written, from where the log would put the next one (Postgres:
# its serial's sequence, which a rolled-back append also moved on; SQLite: one past the highest rowid).
# Nothing else appends meanwhile: the caller holds the append lock.
_SEQUENCE = "pg_get_serial_sequence('events', 'position')"
NEXT_POSITION_SQL = f"SELECT coalesce(pg_sequence_last_value({_SEQUENCE}::regclass), 0) + 1"
_NEXT_POSITION = {
    "postgresql": text(NEXT_POSITION_SQL),
    "sqlite": text("SELECT coalesce(max(position), 0) + 1 FROM events"),
}
SET_SEQUENCE = text(f"SELECT setval({_SEQUENCE}, :last)")
# A transaction that sends its appends with its other writes, at commit (store.uow, Transaction.append_all
# with new_keys), reads the next position with the lock (NEXT_POSITION_SQL, by the driver), inserts the
# events at the positions it gives them, and moves the sequence past the last (SET_SEQUENCE).
INSERT_AT = insert(t.events)


def next_position(connection: Connection) -> int:
    """The position the next event appended gets; the caller holds the append lock."""
    return int(connection.execute(_NEXT_POSITION[connection.dialect.name]).scalar_one())


def insert_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert event_rows at the positions given them (consecutive, from next_position)."""
    insert_rows(connection, t.events, rows)
    if connection.dialect.name == "postgresql":
        connection.execute(SET_SEQUENCE, {"last": rows[-1]["position"]})


def to_event(row: Mapping[Any, Any]) -> Event:
    return Event(
        position=row["position"],
        id=row["id"],
        stream=row["stream"],
        type=row["type"],
        version=row["version"],
        payload=parse_payload(row["type"], row["version"], row["payload"]),
        actor=row["actor"],
        source=row["source"],
        confidence=row["confidence"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        idempotency_key=row["idempotency_key"],
    )


# Bulk reads (replay, catch-up) take the payload as the JSON text the log holds and decode it with
# parse_stored: one pass in pydantic-core instead of a JSON decode, then a validation of the dict.
# The columns are in the table's order, which is Event's field order.
_TEXT_COLUMNS = tuple(
    cast(column, Text).label("payload") if column.name == "payload" else column for column in t.events.c
)


def _from_text_row(row: Row[Any]) -> Event:
    position, event_id, stream, event_type, version, payload, *rest = tuple(row)
    return Event(
        position, event_id, stream, event_type, version, parse_stored(event_type, version, payload), *rest
    )


# replay's read on Postgres: the same columns, streamed through one server-side cursor.
_STREAM = (
    "SELECT position, id, stream, type, version, payload::text, actor, source, confidence,"
    " correlation_id, causation_id, occurred_at, recorded_at, idempotency_key"
    " FROM events WHERE position > %s AND position <= %s ORDER BY position"
)


def stream_all(engine: Engine, until: int, batch: int = 10_000) -> Iterator[Event]:
    """Every event up to position `until`, in order, for replay: one query, fetched `batch` rows at a
    time (bounded memory). On Postgres a thread fetches the next batch while this one is decoded, so
    the server's work on it is not waited for (about 1.3 s of a million events' 9 s of reading and
    decoding, docs/benchmarks.md); it holds one connection until the stream ends or is closed, and its
    error is raised here. read_all serves everything else."""
    if engine.dialect.name != "postgresql":
        yield from read_all(engine, batch=batch, until=until)
        return
    batches: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()
    fetching = (engine, until, batch, batches, stop)
    fetcher = threading.Thread(target=_fetch_batches, args=fetching, name="crm-replay-fetch", daemon=True)
    fetcher.start()
    try:
        while (rows := batches.get()) is not None:
            if isinstance(rows, BaseException):
                raise rows
            for row in rows:
                yield _from_stream_row(row)
    finally:
        stop.set()
        while fetcher.is_alive():  # a fetcher waiting to hand over a batch sees `stop` once it can
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.05)
        fetcher.join()


def _fetch_batches(
    engine: Engine,
    until: int,
    batch: int,
    batches: queue.Queue[list[tuple[Any, ...]] | BaseException | None],
    stop: threading.Event,
) -> None:
    """stream_all's fetching thread: puts each batch of rows, then None at the end, or the error that
    ended it; stops early once `stop` is set."""
    try:
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            # Timestamps then arrive in UTC already (psycopg gives `timezone.utc` for a 'UTC' session, a
            # zone object to convert for 'Etc/UTC'): no conversion per row.
            driver.execute("SET LOCAL TIME ZONE 'UTC'")
            with driver.cursor(name="crm_replay") as cursor:
                cursor.execute(_STREAM, (0, until))
                while not stop.is_set() and (rows := cursor.fetchmany(batch)):
                    batches.put(rows)
        batches.put(None)
    except BaseException as exc:  # handed to the reader, which raises it
        batches.put(exc)


def _from_stream_row(row: tuple[Any, ...]) -> Event:
    (position, event_id, stream, event_type, version, payload, actor, source, confidence) = row[:9]
    correlation_id, causation_id, occurred, recorded, key = row[9:]
    return Event.of_fields(
        {
            "position": position,
            "id": event_id,
            "stream": stream,
            "type": event_type,
            "version": version,
            "payload": parse_stored(event_type, version, payload),
            "actor": actor,
            "source": source,
            "confidence": confidence,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "occurred_at": occurred if occurred.tzinfo is UTC else occurred.astimezone(UTC),
            "recorded_at": recorded if recorded.tzinfo is UTC else recorded.astimezone(UTC),
            "idempotency_key": key,
        }
    )


def read_all(engine: Engine, after: int = 0, batch: int = 5_000, until: int | None = None) -> Iterator[Event]:
    """Every event after position `after`, in order, fetched in batches (bounded memory)."""
    position = t.events.c.position
    while True:
        query = select(*_TEXT_COLUMNS).where(position > after)
        if until is not None:
            query = query.where(position <= until)
        with engine.connect() as connection:
            rows = connection.execute(query.order_by(position).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield _from_text_row(row)
        after = rows[-1].position


def read_streams(connection: Connection, streams: list[str], until: datetime | None = None) -> list[Event]:
    """The events of some streams in log order, optionally only those that occurred by `until`."""
    query = select(t.events).where(t.events.c.stream.in_(streams))
    if until is not None:
        query = query.where(t.events.c.occurred_at <= until)
    return [to_event(row._mapping) for row in connection.execute(query.order_by(t.events.c.position))]


def head(connection: Connection) -> int:
    """The highest position in the log (0 when empty)."""
    return connection.execute(select(func.coalesce(func.max(t.events.c.position), 0))).scalar_one()
