"""Engines and schema migrations for SQLite (the embedded default) and Postgres."""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from psycopg.pq import ExecStatus, PipelineStatus, TransactionStatus
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    insert,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, DisconnectionError

from store.literals import Binder, binder_for, is_stale, query_results, send_query, simple_query, unconfirm

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x63726D6D6967  # "crmmig"
# A pooled Postgres connection unused for longer than this is pinged before it is handed out (a server
# restart or an idle timeout may have dropped it). One in steady use is not: pinging on every checkout
# is a round trip more on every read and every transaction. A connection dropped while in steady use
# fails its statement like any outage would, and SQLAlchemy then replaces every pooled connection.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for url; SQLite gets WAL, a busy timeout and write transactions that lock up front."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _sqlite_transactions(engine)
        return engine
    ping_when_idle = kwargs.pop("pool_pre_ping", True)
    # Connections past pool_size are closed when returned, so a burst above it pays for a new Postgres
    # backend per request; keep enough for a web app's concurrent requests (its thread pool queues the
    # rest, which is cheaper than connecting), and few enough that every process of a deployment
    # stays under Postgres's default of 100 connections.
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 5)
    engine = create_engine(url, **kwargs)
    if ping_when_idle:
        _ping_when_idle(engine)
    _unconfirm_when_deallocating(engine)
    return engine


# Statements after which psycopg deallocates every prepared statement of the connection, ours with its
# own, when it holds some of its own: those whose result is tagged ROLLBACK (a rollback to a savepoint
# too), DROP, ALTER, DISCARD ALL or DEALLOCATE ALL.
_DEALLOCATING = re.compile(r"\s*(?:ROLLBACK|ABORT|DROP|ALTER|DISCARD|DEALLOCATE)\b", re.IGNORECASE)


def _unconfirm_when_deallocating(engine: Engine) -> None:
    """After such a statement inside a log transaction, the rest of it runs none of the prepared
    statements its first query confirmed (store.literals.Binder.unconfirm)."""

    @event.listens_for(engine, "after_cursor_execute")
    def _after(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if _DEALLOCATING.match(statement):
            driver = connection.connection.driver_connection
            if driver is not None:
                unconfirm(driver)


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, but only for a connection that sat in the pool past PING_AFTER_IDLE_SECONDS."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        ping(engine.dialect, dbapi_connection)  # DisconnectionError: the pool replaces it, checks out again


def ping(dialect: Any, dbapi_connection: Any) -> None:
    """Ask the server whether a connection is still there: DisconnectionError where it is gone (the
    dialect's ping raised, or answered False, as some versions of SQLAlchemy do)."""
    try:
        answered = dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as exc:
        raise DisconnectionError(str(exc)) from exc
    if answered is False:
        raise DisconnectionError("the connection did not answer a ping")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads on a hot path: in autocommit on Postgres, so a read is one round trip,
    without a BEGIN before it and a ROLLBACK after. Each statement sees what was committed when it
    began, as under READ COMMITTED; nothing written through it is kept."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """Statements executed inside go to Postgres together, in one round trip (psycopg's pipeline mode).

    Only for statements whose results nobody reads (writes without RETURNING, a lock, COMMIT): their
    errors surface when the block ends, raised as SQLAlchemy's own exceptions like any other
    statement's. Inside another pipelined block, statements join the outer one's round trip.
    Elsewhere (SQLite) the statements simply run one by one.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    if driver.pgconn.pipeline_status != PipelineStatus.OFF:
        yield
        return
    with driver_errors(connection), driver.pipeline():
        yield


@contextmanager
def driver_errors(connection: Connection) -> Iterator[None]:
    """Errors of statements sent by the driver itself (past SQLAlchemy's execution) raised as SQLAlchemy's
    own exceptions, as its statements' are; a lost connection is invalidated, as SQLAlchemy does."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        driver = connection.connection.driver_connection
        lost = connection.dialect.is_disconnect(exc, driver, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, dbapi.Error, connection_invalidated=lost) from exc


def commit_with(connection: Connection, writes: Sequence[tuple[Any, dict[str, Any]]]) -> bool:
    """Postgres: send the writes (statement, parameters), whose results nobody reads, and COMMIT as one
    simple query: one message and one round trip, past SQLAlchemy's per-statement execution and
    psycopg's pipeline machinery, which cost a log transaction more client CPU than its whole time in
    Postgres. The values are bound client-side by psycopg (its ClientCursor, with the server's own
    quoting rules), converted first as SQLAlchemy would (the binds' processors).

    Returns False, having sent nothing, where this cannot be done: SQLite, or a statement that needs
    SQLAlchemy at execution (a default to fill in, a parameter rendered at execution). A failed write
    aborts the rest and the transaction: raised as SQLAlchemy's own exception, the transaction left for
    the caller to roll back (end_failed_commit)."""
    if connection.dialect.name != "postgresql":
        return False
    dialect = connection.dialect
    prepared = [_simple(dialect, statement, tuple(params)) for statement, params in writes]
    if any(found is None for found in prepared):
        return False
    sent = SentTogether(connection)
    for found, (_, params) in zip(prepared, writes, strict=True):
        assert found is not None
        sent.add(found.sql, found.values(params))
    sent.add("COMMIT")
    sent.send()
    return True


@contextmanager
def opened_by_first_query(connection: Connection) -> Iterator[SentTogether | None]:
    """A transaction on `connection` (SQLAlchemy's, rolled back if the block raises) whose BEGIN, on
    Postgres, is the first statement of the query it yields (SentTogether), sent by the caller: one
    round trip fewer than psycopg's way, which sends BEGIN on its own before a transaction's first
    statement. The connection is in autocommit for it, so psycopg sends no BEGIN of its own; every
    statement after it runs in the transaction the query opened, and commit and rollback end that
    transaction as usual (psycopg asks the server whether one is open). Elsewhere (SQLite) yields None
    and the transaction begins as usual."""
    if connection.dialect.name != "postgresql":
        with connection.begin():
            yield None
        return
    sent = together_in_autocommit(connection)
    sent.add("BEGIN")
    with connection.begin():
        yield sent


def together_in_autocommit(connection: Connection) -> SentTogether:
    """Statements to send as one query on `connection` (Postgres), switched to autocommit: each runs
    on its own, or in the transaction a BEGIN among them opens (opened_by_first_query)."""
    # Every switch to autocommit goes through execution_options, which the pool sets back at checkin:
    # one in autocommit already (a connection kept for a run of these, store.handover.Line) stays so.
    driver = connection.connection.driver_connection
    if not (driver is not None and driver.autocommit):
        connection.execution_options(isolation_level="AUTOCOMMIT")
    return SentTogether(connection)


class SentTogether:
    """Statements sent to Postgres as one simple query: one message and one round trip, without the
    client work of psycopg's pipeline mode or of SQLAlchemy's execution. psycopg binds the values
    client-side (its ClientCursor, quoting as the server's rules say); the caller converts them first
    where SQLAlchemy would. A failed statement aborts the ones after it and the transaction, raised as
    SQLAlchemy's error. Each statement's rows are taken by the index `add` gave it, once sent."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._queries: list[str] = []
        self._params: list[Any] = []
        self._rows: list[list[tuple[Any, ...]]] | None = None

    def add(self, query: str, params: Any = None) -> int:
        """Queue a statement (psycopg's `%(name)s` placeholders when params are given); its index."""
        self._queries.append(query)
        self._params.append(params)
        return len(self._queries) - 1

    def send(self) -> None:
        for _ in self.sending():
            pass

    def sending(self) -> Iterator[None]:
        """send() in two steps: yields once the query is on its way, so the caller can do something
        else while Postgres runs it, and ends with its rows taken (where psycopg opens the transaction
        itself, it has run the query before it yields)."""
        driver = self.connection.connection.driver_connection
        assert driver is not None and self._rows is None
        with driver_errors(self.connection):
            binder = binder_for(driver)
            statements = list(zip(self._queries, self._params, strict=True))
            if driver.autocommit or driver.pgconn.transaction_status != TransactionStatus.IDLE:
                yield from self._sending_composed(driver, binder, statements)
                return
            # psycopg would open the transaction first: its cursor sends the BEGIN.
            query = "; ".join(
                query if params is None else binder.render(query, params) for query, params in statements
            )
            rows: list[list[tuple[Any, ...]]] = []
            with psycopg.ClientCursor(driver) as cursor:
                cursor.execute(query, prepare=False)
                while True:
                    result = cursor.pgresult
                    returned = result is not None and result.status == ExecStatus.TUPLES_OK
                    rows.append(cursor.fetchall() if returned else [])
                    if not cursor.nextset():
                        break
            self._rows = rows
            yield

    def _sending_composed(
        self, driver: psycopg.Connection[Any], binder: Binder, statements: list[tuple[str, Any]]
    ) -> Iterator[None]:
        """The statements as Binder.compose puts them, prepared statements run where it can; a
        transaction's first query that finds ours gone from the server, or stale, is rolled back and
        sent again (then before the generator ends)."""
        transaction = self.connection.get_transaction()
        composed = binder.compose(statements, transaction)
        send_query(driver, composed.query)
        try:
            yield
        except GeneratorExit:  # abandoned on its way: its results are read so the connection is usable
            with contextlib.suppress(psycopg.Error):
                query_results(driver)
            raise
        try:
            rows = query_results(driver)
        except psycopg.Error as exc:
            if not (composed.executes and is_stale(exc)):
                raise
            binder.forget(exc)
            if not composed.confirms:
                raise
            if driver.pgconn.transaction_status == TransactionStatus.INERROR:
                simple_query(driver, "ROLLBACK")
            composed = binder.compose(statements, transaction)
            rows = simple_query(driver, composed.query)
        binder.confirm(composed, transaction)
        self._rows = rows

    def rows(self, index: int) -> list[tuple[Any, ...]]:
        """The rows the statement at `index` returned (none for a command)."""
        assert self._rows is not None, "not sent yet"
        return self._rows[index]


@dataclass(frozen=True)
class _Simple:
    """A statement compiled for psycopg's client-side binding, for one set of parameters given."""

    statement: Any  # kept, so its id is not reused by another statement while cached
    sql: str
    processors: tuple[tuple[str, Any], ...]  # (parameter, what converts its value)
    constants: dict[str, Any]  # the values it binds of its own (a literal in the statement)

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        values = {**self.constants, **params} if self.constants else dict(params)
        for name, processor in self.processors:
            if name in values:
                values[name] = processor(values[name])
        return values


# (id of the statement, dialect, its parameters' names) -> _Simple, or None where it cannot be used
_SIMPLE: dict[tuple[int, str, tuple[str, ...]], tuple[Any, _Simple | None]] = {}


def _simple(dialect: Any, statement: Any, names: tuple[str, ...]) -> _Simple | None:
    """The statement for commit_with, compiled once per statement and set of parameters given; None
    where SQLAlchemy would add values at execution (a column default) or render some at execution.
    Statements on this path are built once (module constants), so their ids stay theirs."""
    key = (id(statement), dialect.name, names)
    found = _SIMPLE.get(key)
    if found is None:
        # The names given are columns to set only for a statement that sets some (SQLAlchemy would
        # otherwise set them in a data-modifying WITH of a SELECT, too: store.handover's steps).
        keys = list(names) if statement.is_dml else None
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        usable = not (
            getattr(compiled, "insert_prefetch", None)
            or getattr(compiled, "update_prefetch", None)
            or compiled.literal_execute_params
            or compiled.post_compile_params
        )
        processors = tuple(
            (name, processor)
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )
        given = dict.fromkeys(names)
        bound = compiled.construct_params(given)
        constants = {name: value for name, value in bound.items() if name not in given}
        simple = _Simple(statement, str(compiled), processors, constants)
        found = _SIMPLE[key] = (statement, simple if usable else None)
    return found[1]


def simple_statement(dialect: Any, statement: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(query, values) for SentTogether.add: `statement` (built once, a module constant) compiled for
    psycopg's client-side binding, and `params` converted as SQLAlchemy would. Raises ValueError for a
    statement that needs SQLAlchemy at execution (see _simple)."""
    found = _simple(dialect, statement, tuple(params))
    if found is None:
        raise ValueError(f"not a statement to send past SQLAlchemy: {statement}")
    return found.sql, found.values(params)


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows that all have the same columns: on Postgres by COPY, about twice as fast as the
    executemany used elsewhere for a batch's hundreds of rows, with each value converted as the
    INSERT's would be (the columns' bind processors: UTC datetimes, JSON). A column left out must have
    no default that SQLAlchemy fills in; errors are raised as SQLAlchemy's, as `pipelined`'s are."""
    names = list(rows[0])
    dialect = connection.dialect
    if dialect.name != "postgresql":
        connection.execute(insert(table), rows)
        return
    assert all(column.default is None for column in table.columns if column.name not in names)
    processors = bind_processors(connection, table, names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver_errors(connection), driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(bound_values(row, names, processors))


# The most parameters Postgres takes in one statement (its wire protocol counts them in 16 bits).
MAX_PARAMETERS = 65_535


def upsert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Postgres: write rows that all have the same columns, each inserted or, when its primary key is
    taken, updating that row's other columns given (INSERT … ON CONFLICT (key) DO UPDATE), in one
    multi-row statement (per MAX_PARAMETERS), in a pipelined block. The rows' keys must differ: one
    statement cannot update a row twice. Writes what an executemany of the single-row upsert would,
    values converted alike (the columns' bind processors), for a fraction of its client CPU: one
    statement with positional parameters, sent past SQLAlchemy and psycopg's query parsing, instead of
    a statement and its parameters per row."""
    names = tuple(rows[0])
    processors = bind_processors(connection, table, names)
    per_statement = MAX_PARAMETERS // len(names)
    driver = connection.connection.driver_connection
    assert driver is not None
    with pipelined(connection), psycopg.RawCursor(driver) as cursor:
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            parameters: list[Any] = []
            for row in part:
                parameters += bound_values(row, names, processors)
            cursor.execute(_multi_row_upsert(table, names, len(part)), parameters)


def bound_values(row: dict[str, Any], names: Sequence[str], processors: list[tuple[int, Any]]) -> list[Any]:
    """A row's values in the order of names, converted as SQLAlchemy would before sending them."""
    values = [row[name] for name in names]
    for index, processor in processors:
        values[index] = processor(values[index])
    return values


def bind_processors(connection: Connection, table: Table, names: Sequence[str]) -> list[tuple[int, Any]]:
    """(index in names, processor) for the columns whose values SQLAlchemy converts before sending."""
    dialect = connection.dialect
    return [
        (index, processor)
        for index, name in enumerate(names)
        if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]


@functools.lru_cache(maxsize=512)
def _multi_row_upsert(table: Table, names: tuple[str, ...], count: int) -> bytes:
    """INSERT INTO table (names) VALUES ($1, …), … (count rows) ON CONFLICT (primary key) DO UPDATE SET
    each other column to the value given (DO NOTHING when there is none), as psycopg's raw cursor takes it."""
    keys = [column.name for column in table.primary_key.columns]
    width = len(names)
    rows = ", ".join(
        "(" + ", ".join(f"${row * width + column}" for column in range(1, width + 1)) + ")"
        for row in range(count)
    )
    updated = [name for name in names if name not in keys]
    action = (
        "DO UPDATE SET " + ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in updated)
        if updated
        else "DO NOTHING"
    )
    columns = ", ".join(f'"{name}"' for name in names)
    conflict = ", ".join(f'"{name}"' for name in keys)
    return f'INSERT INTO "{table.name}" ({columns}) VALUES {rows} ON CONFLICT ({conflict}) {action}'.encode()


def one_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column IN` the list bound as `name`. On Postgres `= ANY` one array parameter: the statement's
    SQL is the same whatever the list's length, so neither SQLAlchemy (which renders an expanding IN
    anew for each execution) nor psycopg (which parses a long query anew, and never caches it) pays
    per element; a batch's lists have hundreds. Elsewhere an expanding IN."""
    if dialect == "postgresql":
        # A string's array without the column's length: a cast to VARCHAR(n) would cut a longer value
        # to n characters, and it could then match a row holding its first n.
        element = String() if isinstance(column.type, String) else column.type
        return column == any_(bindparam(name, type_=ARRAY(element)))
    return column.in_(bindparam(name, expanding=True))


def end_failed_commit(connection: Connection) -> None:
    """After a COMMIT that failed inside a pipelined block: the transaction is aborted on the server,
    while SQLAlchemy holds it ended (it asked for the commit) and would hand the connection back to
    the pool as it is. Roll it back; a connection that cannot be rolled back is dropped."""
    if connection.dialect.name != "postgresql" or connection.invalidated:
        return
    driver = connection.connection.driver_connection
    try:
        assert driver is not None
        driver.rollback()
    except Exception:
        connection.invalidate()


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite's own BEGIN handling defers locks, so two writers can deadlock on upgrade; take
    # control of BEGIN (the SQLAlchemy-documented recipe) and write with BEGIN IMMEDIATE.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # two processes starting at once migrate in turn
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
