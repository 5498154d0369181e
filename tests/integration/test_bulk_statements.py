"""The statements a batch sends in bulk (store.db). upsert_rows (a batch's projection rows in one multi-row
statement) writes what an executemany of the single-row upsert (store.state, SqlState.put) writes, and
fails as SQLAlchemy's statements do; one_of (a list bound as one array on Postgres) finds what IN finds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Connection, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from store import db
from store import tables as t
from store.db import make_engine, one_of, pipelined, upsert_rows
from store.state import _upsert

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
