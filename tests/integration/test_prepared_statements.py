"""A log transaction's statements run as statements prepared on their connection (store.literals,
Binder.compose): they read and write what the same statements with their values in them do, and a
transaction never fails, nor runs a write twice, because the server has let them go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert, update

from store import db, literals

META = MetaData()
NOTES = Table("prepared_notes", META, Column("id", String, primary_key=True), Column("n", Integer))
READ = "SELECT n FROM prepared_notes WHERE id = %(id)s"
ADD = "INSERT INTO prepared_notes (id, n) VALUES (%(id)s, %(n)s)"


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0)  # one connection: every test's own
    META.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every query store.db sends as a simple query from now on (not the Binder's own PREPAREs)."""
    queries: list[str] = []
    for name in ("simple_query", "send_query"):  # at once, or its results read later
        monkeypatch.setattr(db, name, _noting(getattr(db, name), queries))
    return queries


def _noting(send: Any, queries: list[str]) -> Any:
    def noted(driver: Any, query: str) -> Any:
        queries.append(query)
        return send(driver, query)

    return noted


def transaction(
    engine: Engine, first: list[tuple[str, dict[str, Any] | None]], writes: list[tuple[Any, dict[str, Any]]]
) -> list[list[tuple[Any, ...]]]:
    """A log transaction as store.uow runs one: BEGIN and `first` in one query, then the writes and
    COMMIT in another; the rows of each statement of `first`."""
    with engine.connect() as connection, db.opened_by_first_query(connection) as together:
        assert together is not None
        indexes = [together.add(query, params) for query, params in first]
        together.send()
        rows = [together.rows(index) for index in indexes]
        assert db.commit_with(connection, writes)
        connection.commit()
    return rows


def on_server(engine: Engine) -> set[str]:
    """The names of the statements prepared on the engine's one connection."""
    with db.reading(engine) as connection:
        found = connection.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars()
        return set(found)


def on_server_now(connection: Any) -> set[str]:
    """The same, on a connection in use (inside its transaction)."""
    driver = connection.connection.driver_connection
    return {name for (name,) in driver.execute("SELECT name FROM pg_prepared_statements", prepare=False)}


def notes(engine: Engine) -> dict[str, int]:
    with db.reading(engine) as connection:
        found = connection.exec_driver_sql("SELECT id, n FROM prepared_notes")
        return {key: n for key, n in found}


def name_of(query: str) -> str:
    form = literals.prepared_form(query)
    assert form is not None
    return form.name


def test_statements_run_prepared_once_their_connection_holds_them(engine: Engine, sent: list[str]) -> None:
    add = (insert(NOTES), {"id": "a", "n": 1})
    assert transaction(engine, [(READ, {"id": "a"})], [add]) == [[]]
    # The read was prepared before it ran; the write, first seen inside a transaction, waits for the next.
    assert {literals.PING, name_of(READ)} <= on_server(engine)
    assert "EXECUTE " + name_of(READ) in sent[0]
    assert "INSERT INTO prepared_notes" in sent[1]
    sent.clear()
    bump = (update(NOTES).where(NOTES.c.id == "a").values(n=NOTES.c.n + 1), {})
    add = (insert(NOTES), {"id": "b", "n": 2})
    assert transaction(engine, [(READ, {"id": "a"})], [add, bump]) == [[(1,)]]
    assert "EXECUTE " + name_of(READ) in sent[0]
    assert sent[1].startswith("EXECUTE crm_") and "INSERT" not in sent[1]
    assert notes(engine) == {"a": 2, "b": 2}


def _deallocate_all(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.commit()


def _discard_all(engine: Engine) -> None:
    with db.reading(engine) as connection:
        connection.exec_driver_sql("DISCARD ALL")


def _psycopgs_rollback(engine: Engine) -> None:
    """psycopg prepares a statement of its own, then rolls back a transaction: it deallocates all."""
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        for _ in range(3):
            driver.execute("SELECT count(*) FROM prepared_notes", prepare=True)
        connection.rollback()


@pytest.mark.parametrize("let_go", [_deallocate_all, _discard_all, _psycopgs_rollback])
def test_a_transaction_that_finds_them_gone_is_sent_again_and_writes_once(
    engine: Engine, sent: list[str], let_go: Any
) -> None:
    transaction(engine, [(READ, {"id": "a"}), (ADD, {"id": "a", "n": 1})], [])
    assert name_of(ADD) in on_server(engine)
    let_go(engine)
    assert not any(name.startswith("crm_") for name in on_server(engine))
    sent.clear()
    # The first query writes before it reads: the attempt that failed must have kept nothing.
    rows = transaction(engine, [(ADD, {"id": "b", "n": 2}), (READ, {"id": "b"})], [])
    assert rows == [[], [(2,)]]
    # Tried, found them gone, rolled back, sent again once prepared; then the COMMIT.
    assert sent[0].startswith("BEGIN; EXECUTE crm_") and sent[1:3] == ["ROLLBACK", sent[0]]
    assert len(sent) == 4
    assert notes(engine) == {"a": 1, "b": 2}
    assert {literals.PING, name_of(ADD), name_of(READ)} <= on_server(engine)


def test_a_first_query_that_runs_none_of_ours_checks_them_before_the_writes_run_them(
    engine: Engine, sent: list[str]
) -> None:
    def add(key: str, n: int) -> tuple[Any, dict[str, Any]]:
        return (insert(NOTES), {"id": key, "n": n})

    transaction(engine, [], [add("a", 1)])  # the write is sent with its values, and kept to prepare
    transaction(engine, [], [add("b", 2)])  # prepared at this one's start: it runs prepared
    assert sent[-1].startswith("EXECUTE crm_")
    _deallocate_all(engine)
    sent.clear()
    transaction(engine, [], [add("c", 3)])
    # The check, in the query that opens it; found gone, so the write is sent with its values.
    assert sent[:3] == ["BEGIN; EXECUTE " + literals.PING, "ROLLBACK", "BEGIN"]
    assert len(sent) == 4 and sent[3].startswith("INSERT INTO prepared_notes")
    assert notes(engine) == {"a": 1, "b": 2, "c": 3}


def test_a_statement_postgres_cannot_prepare_is_sent_with_its_values_and_spoils_no_other(
    engine: Engine, sent: list[str]
) -> None:
    untyped = "SELECT %(v)s IS NULL"  # Postgres cannot tell $1's type: it will not prepare it
    for key in ("a", "b"):
        rows = transaction(engine, [(untyped, {"v": None}), (READ, {"id": key})], [])
        assert rows == [[(True,)], []]
    assert sent[-2] == f"BEGIN; SELECT NULL IS NULL; EXECUTE {name_of(READ)}('b')"
    held = on_server(engine)
    assert name_of(READ) in held and name_of(untyped) not in held


def test_a_first_query_that_commits_before_its_end_runs_none_of_ours(engine: Engine, sent: list[str]) -> None:
    transaction(engine, [(READ, {"id": "a"})], [])  # the read is prepared on the connection
    with engine.connect() as connection, db.opened_by_first_query(connection) as together:
        assert together is not None
        together.add(ADD, {"id": "a", "n": 1})
        together.add("COMMIT")
        together.add(READ, {"id": "a"})
        together.send()  # had it run ours and found them gone, it could not be sent again
    assert sent[-1].startswith("BEGIN; INSERT INTO prepared_notes (id, n) VALUES ('a', 1); COMMIT; SELECT")
    assert notes(engine) == {"a": 1}


@pytest.mark.parametrize("let_go", [None, "_deallocate_all", "_discard_all", "_psycopgs_rollback"])
def test_a_whole_transaction_in_one_query_runs_ours_and_is_sent_again_when_they_are_gone(
    engine: Engine, sent: list[str], let_go: str | None
) -> None:
    """BEGIN …; COMMIT as one query (store.handover): a statement of ours found gone fails it before
    its COMMIT, so nothing of it was kept, and it is sent again on statements prepared anew."""

    def whole(key: str, n: int) -> None:
        with engine.connect() as connection, db.opened_by_first_query(connection) as together:
            assert together is not None
            together.add(ADD, {"id": key, "n": n})
            together.add(READ, {"id": key})
            together.add("COMMIT")
            together.send()
            assert together.rows(2) == [(n,)]

    whole("a", 1)
    assert {name_of(ADD), name_of(READ)} <= on_server(engine)
    if let_go is not None:
        globals()[let_go](engine)
    sent.clear()
    whole("b", 2)
    executes = f"BEGIN; EXECUTE {name_of(ADD)}('b', 2); EXECUTE {name_of(READ)}('b'); COMMIT"
    if let_go is None:
        assert sent == [executes]
    else:  # tried, found them gone, rolled back, sent again once prepared
        assert sent[0] == executes and sent[1] == "ROLLBACK" and sent[-1] == executes
    assert notes(engine) == {"a": 1, "b": 2}


def test_a_check_of_ours_goes_before_the_commit_that_ends_the_query(engine: Engine, sent: list[str]) -> None:
    transaction(engine, [(READ, {"id": "a"})], [])  # ours are held on the connection: PING among them
    untyped = "SELECT %(v)s IS NULL"  # one Postgres will not prepare: the query runs none of ours
    for _ in range(2):
        with engine.connect() as connection, db.opened_by_first_query(connection) as together:
            assert together is not None
            together.add(untyped, {"v": None})
            together.add("COMMIT")
            together.send()
    assert sent[-1] == f"BEGIN; SELECT NULL IS NULL; EXECUTE {literals.PING}; COMMIT"


def test_a_statement_whose_table_changed_is_prepared_anew(engine: Engine, sent: list[str]) -> None:
    """A prepared read keeps the result type it was planned with: once a migration changes a column,
    Postgres refuses to run it ("cached plan must not change result type"). The transaction is sent
    again, on statements prepared anew."""
    wide = "SELECT id, n FROM prepared_notes WHERE id = %(id)s"
    transaction(engine, [(wide, {"id": "a"})], [(insert(NOTES), {"id": "a", "n": 1})])
    with db.make_engine(str(engine.url.render_as_string(hide_password=False))).begin() as migration:
        migration.exec_driver_sql("ALTER TABLE prepared_notes ALTER COLUMN n TYPE bigint")
    sent.clear()
    for _ in range(2):
        assert transaction(engine, [(wide, {"id": "a"})], []) == [[("a", 1)]]
    assert sent[1] == "ROLLBACK" and sent[2] == sent[0]  # found stale once, then no more
    assert len(sent) == 6


def test_a_value_an_execute_would_convert_otherwise_is_sent_in_the_statement(engine: Engine) -> None:
    """SQLAlchemy casts each value (`%(n)s::INTEGER`): a bool cast so is 1, where an EXECUTE, which
    converts as an assignment does, would refuse it. Every write must store what the first did."""
    for key in ("a", "b", "c"):
        transaction(engine, [], [(insert(NOTES), {"id": key, "n": True})])
    with db.reading(engine) as connection:  # a boolean column given integers, the other way round
        connection.exec_driver_sql("ALTER TABLE prepared_notes ADD COLUMN flag boolean")
    flag = "UPDATE prepared_notes SET flag = %(flag)s::BOOLEAN WHERE id = %(id)s"
    for key, value in (("a", 1), ("b", 0), ("c", 1)):
        transaction(engine, [(flag, {"flag": value, "id": key})], [])
    with db.reading(engine) as connection:
        rows = connection.exec_driver_sql("SELECT id, n, flag FROM prepared_notes ORDER BY id").all()
    assert [tuple(row) for row in rows] == [("a", 1, True), ("b", 1, False), ("c", 1, True)]
    assert name_of(flag) in on_server(engine)  # prepared; its integers simply did not go through it


def test_a_rollback_to_a_savepoint_inside_a_transaction_leaves_its_writes_unharmed(engine: Engine) -> None:
    """psycopg deallocates every prepared statement after a result tagged ROLLBACK when it holds
    statements of its own, in the middle of the transaction: the writes after it must not count on
    what the first query confirmed."""

    def add(key: str) -> tuple[Any, dict[str, Any]]:
        return (insert(NOTES), {"id": key, "n": 1})

    transaction(engine, [], [add("a")])
    transaction(engine, [], [add("b")])  # the insert is prepared from here on
    with engine.connect() as connection, db.opened_by_first_query(connection) as together:
        assert together is not None
        together.send()  # confirms them (the ping)
        for _ in range(6):  # psycopg prepares a statement of its own
            connection.exec_driver_sql("SELECT count(*) FROM prepared_notes").scalar_one()
        connection.begin_nested().rollback()
        assert literals.PING not in on_server_now(connection)
        assert db.commit_with(connection, [add("c")])
        connection.commit()
    assert notes(engine) == {"a": 1, "b": 1, "c": 1}


def test_a_binder_goes_with_its_connection(pg_url: str) -> None:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    driver = psycopg.connect(dsn, autocommit=True)
    binder = weakref.ref(literals.binder_for(driver))
    driver.close()
    del driver
    gc.collect()
    assert binder() is None
