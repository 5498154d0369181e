"""A batch checks its keys against the log by index, whatever the planner's statistics say.

Written as NOT EXISTS, "the key is not in the log" became an anti-join, which Postgres ran as a hash
of the whole log for a batch of a couple of hundred rows while the log held tens of thousands of
events: 8-10 ms of the server per batch instead of 0.3 ms, paid by every sequencer batch and every
staged burst. Each statement below runs inside a transaction that is rolled back, against a log of
LOG_SIZE events whose statistics are older than its growth, as while a burst fills it faster than
autovacuum looks (there the planner chose the hash for both), and must not have read the log from end
to end (pg_stat_xact_user_tables counts the sequential scans of the transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection

from store import events as ev
from store.db import make_engine
from store.intake import _row
from store.intake_async import _BATCH_SQL, batch_rows
from store.log import insert_all_unless_known

LOG_SIZE = 30_000
BATCH = 200


def _scans_of_the_log(cursor: Any) -> int:
    cursor.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'")
    return int(cursor.fetchone()[0])


@pytest.fixture
def big_log(pg_url: str) -> Iterator[str]:
    """pg_url with LOG_SIZE events written straight into the log, and no statistics taken since."""
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute("ALTER TABLE events SET (autovacuum_enabled = off)")
        connection.execute(
            "INSERT INTO events (position, id, stream, type, version, payload, actor, source, occurred_at,"
            " recorded_at, idempotency_key) SELECT g, 'evt-' || g, 'cus_' || (g %% 500), 'note.added', 1,"
            " '{\"text\": \"x\", \"author\": \"test\"}'::json, 'test', 'test', now(), now(), 'key-' || g"
            " FROM generate_series(1, %s) AS g",
            (LOG_SIZE,),
        )
        connection.execute("SELECT setval(pg_get_serial_sequence('events', 'position'), %s)", (LOG_SIZE,))
    yield pg_url


def test_the_sequencers_batch_insert_looks_each_key_up_by_index(big_log: str) -> None:
    news = [
        ev.NewEvent(
            type="note.added",
            payload=ev.NoteAdded(text=f"note {n}", author="test"),
            stream="cus_1",
            idempotency_key=f"new-{uuid.uuid4()}",
        )
        for n in range(BATCH - 1)
    ] + [
        ev.NewEvent(  # one key the log holds: the lookup must still find it
            type="note.added",
            payload=ev.NoteAdded(text="known", author="test"),
            stream="cus_1",
            idempotency_key="key-7",
        )
    ]
    engine = make_engine(big_log)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            inserted = insert_all_unless_known(connection, news)
            scans = _scans_in(connection)
            transaction.rollback()
    finally:
        engine.dispose()
    assert [event is not None for event in inserted] == [True] * (BATCH - 1) + [False]
    assert scans == 0, "the batch read the whole log"


def _scans_in(connection: Connection) -> int:
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        return _scans_of_the_log(cursor)


def test_the_web_stagers_batch_insert_looks_each_key_up_by_index(big_log: str) -> None:
    signal = ev.SIGNAL_TYPES["lead.created"](customer=ev.CustomerRef(name="Ada", email="ada@example.com"))
    rows = [
        _row("lead.created", signal.model_dump_json(), f"signals:{uuid.uuid4()}", "signals", None)
        for _ in range(BATCH - 1)
    ] + [_row("lead.created", signal.model_dump_json(), "key-7", "signals", datetime.now(UTC))]
    with psycopg.connect(big_log.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        cursor.execute(_BATCH_SQL, {"rows": batch_rows(rows)})
        staged = {event_id for _, event_id in cursor.fetchall()}
        scans = _scans_of_the_log(cursor)
        connection.rollback()
    assert staged == {row["event_id"] for row in rows[:-1]}, "every new key staged, the known one not"
    assert scans == 0, "the batch read the whole log"
