"""The statements a batch sends in bulk (store.db). upsert_rows (a batch's projection rows in one multi-row
statement) writes what an executemany of the single-row upsert (store.state, SqlState.put) writes, and
fails as SQLAlchemy's statements do; one_of (a list bound as one array on Postgres) finds what IN finds;
commit_with (a transaction's writes and COMMIT as one query) writes what SQLAlchemy's statements write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from store import db, log, uow
from store import tables as t
from store.db import make_engine, one_of, pipelined, upsert_rows
from store.state import _update, _upsert

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))


@pytest.fixture
def connection(pg_url: str) -> Iterator[Connection]:
    engine = make_engine(pg_url)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def customer(number: int, **changes: Any) -> dict[str, Any]:
    row = {
        "id": f"cus_{number:04d}",
        "name": f"Person {number}",
        "name_key": f"person {number}",
        "company": None,
        "domain": f"company{number % 3}.example",
        "stage": "lead",
        "mrr_cents": 10**12 + number,
        "lifetime_value_cents": 0,
        "renewal_date": date(2027, 1, 1) if number % 2 else None,
        "notes": "a note, with 'quotes' and \\ and \N{SNOWMAN}" if number % 3 == 0 else None,
        "timezone": None,
        "merged_into": None,
        "created_at": AT,
        "updated_at": AT.astimezone(PARIS) + timedelta(minutes=number),  # stored in UTC either way
        "last_touch_at": None,
        "position": number,
    }
    row.update(changes)
    return row


def written(connection: Connection, batches: list[list[dict[str, Any]]], multi_row: bool) -> list[Any]:
    """The customers table after writing these batches one way or the other, then rolled back."""
    transaction = connection.begin()
    try:
        for rows in batches:
            if multi_row:
                upsert_rows(connection, t.customers, rows)
            else:
                connection.execute(_upsert("postgresql", "customers", tuple(rows[0])), rows)
        found = connection.execute(select(t.customers).order_by(t.customers.c.id)).all()
    finally:
        transaction.rollback()
    return [tuple(row) for row in found]


def test_a_multi_row_upsert_writes_what_one_upsert_per_row_writes(
    connection: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "MAX_PARAMETERS", 16 * 7)  # seven rows per statement: several statements
    inserted = [customer(number) for number in range(40)]
    updated = [customer(number, stage="customer", merged_into="cus_0000") for number in range(20, 60)]
    not_null = ("id", "stage", "mrr_cents", "lifetime_value_cents", "created_at", "updated_at", "position")
    some_columns = [{**{name: row[name] for name in not_null}, "name": "Renamed"} for row in updated[::3]]
    batches = [inserted, updated, some_columns]
    assert written(connection, batches, multi_row=True) == written(connection, batches, multi_row=False)
    assert len(written(connection, batches, multi_row=True)) == 60


def test_rows_whose_columns_are_all_the_key_are_inserted_once(connection: Connection) -> None:
    pairs = Table(
        "test_pairs",
        MetaData(),
        Column("a", String(8), primary_key=True),
        Column("b", String(8), primary_key=True),
    )
    with connection.begin():
        pairs.create(connection)
        upsert_rows(connection, pairs, [{"a": "x", "b": "1"}, {"a": "x", "b": "2"}])
        upsert_rows(connection, pairs, [{"a": "x", "b": "2"}, {"a": "y", "b": "1"}])
        assert connection.execute(select(pairs).order_by(pairs.c.a, pairs.c.b)).all() == [
            ("x", "1"),
            ("x", "2"),
            ("y", "1"),
        ]
        pairs.drop(connection)


def test_a_row_the_table_refuses_fails_the_statement_as_sqlalchemys_error(connection: Connection) -> None:
    with pytest.raises(IntegrityError), connection.begin(), pipelined(connection):
        upsert_rows(connection, t.customers, [customer(1), customer(2, stage=None)])
    with connection.begin():  # the connection is usable again
        assert connection.execute(select(t.customers)).all() == []


def test_a_list_bound_as_one_array_matches_whole_values_only(db_url: str) -> None:
    engine = make_engine(db_url)
    widest = "cus_" + "a" * 60  # as wide as the column
    with engine.begin() as connection:
        connection.execute(insert(t.customers), [customer(1, id=widest), customer(2)])
        query = select(t.customers.c.id).where(one_of(t.customers.c.id, "ids", connection.dialect.name))
        found = {
            tuple(ids): sorted(connection.execute(query, {"ids": ids}).scalars())
            for ids in ([widest], [widest + "zz"], [widest + "zz", "cus_0002"], [])
        }
    engine.dispose()
    assert found == {
        (widest,): [widest],
        (widest + "zz",): [],  # not cut to the column's width, so not taken for the row it starts like
        (widest + "zz", "cus_0002"): ["cus_0002"],
        (): [],
    }


# ---- a transaction's writes and its COMMIT in one query (store.db.commit_with) --------------------

TRICKY = (
    'it\'s; 50% off %(name)s \\ "quoted" \N{SNOWMAN}\N{ZERO WIDTH JOINER}\N{PILE OF POO} -- not a comment'
)


def the_writes() -> list[tuple[Any, dict[str, Any]]]:
    """What log transactions write (a whole row's upsert, a partial update, the position's upsert with a
    constant of its own, an event with a JSON payload, the wait for the disk), with awkward values."""
    whole = customer(1, notes=TRICKY, company="O'Brien; Sons")
    event = {
        "id": "ev-1",
        "stream": "cus_0001",
        "type": "note.added",
        "version": 1,
        "payload": {"text": TRICKY, "nested": {"list": [1, 2.5, None, True], "empty": {}}},
        "actor": "operator",
        "source": "test",
        "confidence": None,
        "correlation_id": None,
        "causation_id": None,
        "occurred_at": AT.astimezone(PARIS),
        "recorded_at": AT,
        "idempotency_key": "k;1",
    }
    changes = {
        "set_name": TRICKY,
        "set_updated_at": AT.astimezone(PARIS) + timedelta(hours=1),
        "key_id": "cus_0001",
    }
    return [
        (_upsert("postgresql", "customers", tuple(whole)), whole),
        (_upsert("postgresql", "customers", tuple(customer(2))), customer(2)),
        (_update("customers", ("id",), ("name", "updated_at")), changes),
        (insert(t.events), event),
        (uow._SAVE_APPLIED["postgresql"], {"p": 7}),
        (uow._SAVE_APPLIED["postgresql"], {"p": 5}),  # moves forward only: stays at 7
        (log.WAIT, {}),
    ]


def tables_now(connection: Connection) -> list[Any]:
    with connection.begin():
        return [
            connection.execute(select(table).order_by(*table.primary_key.columns)).all()
            for table in (t.customers, t.events, t.projection_positions)
        ]


def test_writes_sent_with_the_commit_in_one_query_write_what_sqlalchemy_writes(
    connection: Connection, other_pg_url: str
) -> None:
    connection.begin()
    assert db.commit_with(connection, the_writes())
    connection.commit()  # SQLAlchemy's end of the transaction the query committed: sends nothing more
    one_query = tables_now(connection)
    engine = make_engine(other_pg_url)
    with engine.connect() as other:
        with other.begin():
            for statement, params in the_writes():
                other.execute(statement, params)
        assert one_query == tables_now(other)
    engine.dispose()
    customers, events, positions = one_query
    assert [row.name for row in customers] == [TRICKY, "Person 2"] and customers[0].notes == TRICKY
    assert events[0].payload["text"] == TRICKY and events[0].idempotency_key == "k;1"
    assert [tuple(row) for row in positions] == [("core", 7)]


def test_a_write_refused_in_the_query_fails_as_sqlalchemys_error_and_commits_nothing(
    connection: Connection,
) -> None:
    first, second, *_ = the_writes()
    refused = (second[0], {**second[1], "stage": None})  # NOT NULL
    transaction = connection.begin()
    with pytest.raises(IntegrityError):
        db.commit_with(connection, [first, refused, first])
    db.end_failed_commit(connection)
    transaction.rollback()
    assert tables_now(connection)[0] == []  # not even the write before it


def test_what_the_query_cannot_carry_is_left_to_sqlalchemy(connection: Connection, sqlite_url: str) -> None:
    defaulted = Table(
        "test_defaulted",
        MetaData(),
        Column("a", String(8), primary_key=True),
        Column("n", Integer, default=1),
    )
    connection.begin()
    assert not db.commit_with(connection, [(insert(defaulted), {"a": "x"})])  # SQLAlchemy fills `n` in
    assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1  # nothing was sent: still usable
    connection.rollback()
    engine = make_engine(sqlite_url)
    with engine.connect() as lite, lite.begin():
        assert not db.commit_with(lite, [(log.WAIT, {})])
    engine.dispose()


def test_statements_sent_together_give_each_its_rows_and_fail_as_sqlalchemys_error(
    connection: Connection,
) -> None:
    connection.begin()
    sent = db.SentTogether(connection)
    missing = sent.add("SELECT id FROM customers WHERE id = %(id)s", {"id": "x'; DROP TABLE customers; --"})
    three = sent.add("SELECT n, %(s)s FROM generate_series(1, 3) AS n", {"s": TRICKY})
    command = sent.add("SET LOCAL synchronous_commit = off")
    sent.send()
    assert (sent.rows(missing), sent.rows(command)) == ([], [])
    assert sent.rows(three) == [(1, TRICKY), (2, TRICKY), (3, TRICKY)]
    connection.rollback()
    connection.begin()
    failing = db.SentTogether(connection)
    failing.add("SELECT 1 / %(zero)s", {"zero": 0})
    with pytest.raises(DBAPIError, match="division by zero"):
        failing.send()
    connection.rollback()
    assert tables_now(connection)[0] == []  # the connection is usable again
