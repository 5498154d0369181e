"""Where projections live while they are applied: SQL tables on the hot path, dictionaries on replay.

The projector is written once against `ProjectionState`; `SqlState` reads and writes rows in the
caller's transaction, `MemoryState` keeps them in dictionaries so a replay of a million events never
round-trips to the database per event, and is then written back in bulk.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from psycopg import sql
from sqlalchemy import JSON, Connection, Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store import tables as t
from store.db import SentTogether, commit_with, pipelined, upsert_rows

Row = dict[str, Any]
TABLES: dict[str, Table] = {table.name: table for table in t.PROJECTION_TABLES}


def register_table(table: Table) -> None:
    """Make a projection table known to both states (later layers add proposals this way)."""
    TABLES[table.name] = table


def key_getter(table_name: str) -> Callable[[Row], tuple[Any, ...]]:
    """The primary key of a row (or of keyword arguments naming its columns) of this table, as a
    tuple: replay asks millions of times, where a tuple built from a generator cost a third of a
    microsecond more each time."""
    getter = _KEY_GETTERS.get(table_name)
    if getter is None:
        getter = _KEY_GETTERS[table_name] = _values_of(primary_key(table_name))
    return getter


def _values_of(names: tuple[str, ...] | list[str]) -> Callable[[Row], tuple[Any, ...]]:
    """What reads these columns' values from a row, as a tuple (an itemgetter gives a bare value for
    one name)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    only = operator.itemgetter(names[0])
    return lambda row: (only(row),)


_KEY_GETTERS: dict[str, Callable[[Row], tuple[Any, ...]]] = {}


def primary_key(table_name: str) -> tuple[str, ...]:
    key = _PRIMARY_KEYS.get(table_name)
    if key is None:
        key = _PRIMARY_KEYS[table_name] = tuple(
            column.name for column in TABLES[table_name].primary_key.columns
        )
    return key


_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}


class ProjectionState(Protocol):
    def get(self, table: str, **key: Any) -> Row | None: ...

    def put(self, table: str, row: Row) -> None: ...

    def update(self, table: str, changes: Row, **key: Any) -> None:
        """Change some columns of the row with this primary key, if there is one."""
        ...

    def scan(self, table: str, **equal: Any) -> list[Row]: ...


class MemoryState:
    """Projection rows in dictionaries keyed by primary key.

    `scan` is served from an index per (table, column), built on the first scan of that column and kept
    up to date by `put`: a full scan per event made replay quadratic (every subscription event scans
    the customer's subscriptions, every merge their contact points).
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in TABLES}
        self._keys = {name: key_getter(name) for name in TABLES}
        # (table, column) -> column value -> primary keys of the rows holding it (a dict as ordered set)
        self._indexes: dict[tuple[str, str], dict[Any, dict[tuple[Any, ...], None]]] = {}
        self._indexed: dict[str, list[str]] = {name: [] for name in TABLES}

    def get(self, table: str, **key: Any) -> Row | None:
        row = self.rows[table].get(self._keys[table](key))
        return dict(row) if row is not None else None

    def put(self, table: str, row: Row) -> None:
        pk = self._keys[table](row)
        rows = self.rows[table]
        for column in self._indexed[table]:
            index = self._indexes[(table, column)]
            old = rows.get(pk)
            if old is not None:
                if old.get(column) == row.get(column):
                    continue
                index[old.get(column)].pop(pk, None)
            index.setdefault(row.get(column), {})[pk] = None
        rows[pk] = dict(row)

    def update(self, table: str, changes: Row, **key: Any) -> None:
        row = self.rows[table].get(self._keys[table](key))
        if row is not None:
            self.put(table, {**row, **changes})

    def scan(self, table: str, **equal: Any) -> list[Row]:
        rows = self.rows[table]
        if not equal:
            return [dict(row) for row in rows.values()]
        (column, value), *rest = equal.items()
        index = self._indexes.get((table, column))
        if index is None:
            index = self._index(table, column)
        return [
            dict(row)
            for row in (rows[pk] for pk in index.get(value, ()))
            if all(row.get(name) == other for name, other in rest)
        ]

    def _index(self, table: str, column: str) -> dict[Any, dict[tuple[Any, ...], None]]:
        index: dict[Any, dict[tuple[Any, ...], None]] = {}
        for pk, row in self.rows[table].items():
            index.setdefault(row.get(column), {})[pk] = None
        self._indexes[(table, column)] = index
        self._indexed[table].append(column)
        return index

    def items(self) -> Iterator[tuple[str, list[Row]]]:
        for name, rows in self.rows.items():
            yield name, list(rows.values())


class SqlState:
    """Projection rows in their tables, read and written inside the caller's transaction.

    With remember=True (one log transaction, which holds the append lock), a row read by primary key
    is kept, and so is a whole row written: a proposal's transition reads the row, its projector reads
    it again to change it, and the transition reads the result — only the first read goes to the
    database. A row written with some columns left out is forgotten (the database fills those in).
    Writes always go to the database.
    """

    def __init__(self, connection: Connection, *, remember: bool = False) -> None:
        self.connection = connection
        self._dialect = connection.dialect.name
        self._remember = remember
        self._read: dict[tuple[str, tuple[Any, ...]], Row | None] = {}
        # Reads asked for by read_ahead() whose answers get() has not taken yet: (sent, index, names).
        self._ahead: dict[tuple[str, tuple[Any, ...]], Any] = {}
        # A read of several rows asked for by read_ahead_rows(): (table, what takes its rows).
        self._ahead_rows: tuple[str, Callable[[], list[Row]]] | None = None
        # Writes held back by defer(), sent together by flush().
        self._deferring = False
        self._writes: list[tuple[Any, Row]] = []

    def defer(self) -> None:
        """Hold writes back until flush() (or a read that is not remembered), then send them together.

        Only for a caller that reads the projection tables through this state alone until it flushes:
        another read on the connection would not see the held writes.
        """
        self._deferring = True

    def write(self, statement: Any, params: Row) -> None:
        """Run a statement whose result nobody reads: now, or at flush() while deferring."""
        if self._deferring:
            self._writes.append((statement, params))
        else:
            self.connection.execute(statement, params)

    def flush(self) -> None:
        """Send the held writes, in order, in one round trip on Postgres."""
        if not self._writes:
            return
        writes, self._writes = self._writes, []
        with pipelined(self.connection):
            for statement, params in writes:
                self.connection.execute(statement, params)

    def flush_and_commit(self, commit: Callable[[], None]) -> None:
        """Send the held writes and commit, in one round trip on Postgres: as one simple query where
        every write allows it (store.db.commit_with), else pipelined. `commit` is the caller's commit,
        run after (SQLAlchemy's; a no-op for the server once the query has committed)."""
        if commit_with(self.connection, self._writes):
            self._writes = []
            commit()
            return
        with pipelined(self.connection):
            self.flush()
            commit()

    def read_ahead(self, sent: SentTogether | None, table: str, **key: Any) -> None:
        """Add the read of one row by primary key to `sent` (Postgres with remember=True), so it goes
        with the round trip that takes the append lock (after it, so it sees every commit before it);
        `get` takes its answer. Elsewhere `get` simply reads as usual."""
        cache_key = self._cache_key(table, key)
        if cache_key is None or sent is None:
            return
        query, names = driver_sql(self.connection, _select(table, tuple(key)))
        self._ahead[cache_key] = (sent, sent.add(query, key), names)

    def read_ahead_rows(self, sent: SentTogether | None, table: str, statement: Any, params: Row) -> None:
        """A read of whole rows of `table`, as read_beside's; `rows_ahead()` takes them, each
        remembered by primary key."""
        self._ahead_rows = (table, self.read_beside(sent, statement, params))

    def read_beside(self, sent: SentTogether | None, statement: Any, params: Row) -> Callable[[], list[Row]]:
        """A read of any rows, not remembered, added to `sent` (without: it runs when taken): what it
        returns takes them, as dictionaries by column name."""
        if sent is None:
            return lambda: [dict(row._mapping) for row in self.connection.execute(statement, params)]
        query, names = driver_sql(self.connection, statement)
        index = sent.add(query, params)
        return lambda: [dict(zip(names, values, strict=True)) for values in sent.rows(index)]

    def rows_ahead(self) -> list[Row]:
        """The rows read_ahead_rows() asked for, remembered by primary key (none if it was not asked)."""
        found, self._ahead_rows = self._ahead_rows, None
        if found is None:
            return []
        table, take = found
        rows = take()
        self.remember_rows(table, rows)
        return rows

    def remember_rows(self, table: str, rows: Iterable[Row]) -> None:
        """Keep whole rows read by the caller in this transaction, as if get() had read them."""
        if not self._remember:
            return
        names = primary_key(table)
        for row in rows:
            self._read[(table, tuple(row[name] for name in names))] = dict(row)

    def get(self, table: str, **key: Any) -> Row | None:
        cache_key = self._cache_key(table, key)
        if cache_key in self._ahead:
            sent, index, names = self._ahead.pop(cache_key)
            found = sent.rows(index)
            self._read[cache_key] = dict(zip(names, found[0], strict=True)) if found else None
        if cache_key in self._read:
            known = self._read[cache_key]
            return dict(known) if known is not None else None
        self.flush()
        found = self.connection.execute(_select(table, tuple(key)), key).first()
        row = dict(found._mapping) if found is not None else None
        if cache_key is not None:
            self._read[cache_key] = dict(row) if row is not None else None
        return row

    def put(self, table: str, row: Row) -> None:
        self.write(_upsert(self._dialect, table, tuple(row)), row)
        if self._remember:
            cache_key = (table, tuple(row.get(name) for name in primary_key(table)))
            if len(row) == len(TABLES[table].columns):
                self._read[cache_key] = dict(row)
            else:
                self._read.pop(cache_key, None)

    def update(self, table: str, changes: Row, **key: Any) -> None:
        """One UPDATE, without reading the row first (a finished action changes three columns)."""
        values = {f"set_{name}": value for name, value in changes.items()}
        values.update({f"key_{name}": value for name, value in key.items()})
        self.write(_update(table, tuple(key), tuple(changes)), values)
        cache_key = self._cache_key(table, key)
        known = self._read.get(cache_key) if cache_key is not None else None
        if known is not None:
            known.update(changes)

    def scan(self, table: str, **equal: Any) -> list[Row]:
        self.flush()
        rows = self.connection.execute(_select(table, tuple(equal)), equal)
        return [dict(row._mapping) for row in rows]

    def _cache_key(self, table: str, key: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        """The key a read by primary key is remembered under; None for other reads or remember=False."""
        names = primary_key(table)
        if not self._remember or len(key) != len(names) or not all(name in key for name in names):
            return None
        return table, tuple(key[name] for name in names)


# Statements are built once per (table, columns) with bound parameters, not once per call with the
# values inlined: building and cache-keying a fresh statement cost more than running it on the hot path.
_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _select(table: str, columns: tuple[str, ...]) -> Any:
    cache_key = ("select", table, *columns)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        target = TABLES[table]
        stmt = select(target).where(and_(*(target.c[name] == bindparam(name) for name in columns)))
        _STATEMENTS[cache_key] = stmt
    return stmt


def driver_sql(connection: Connection, statement: Any) -> tuple[str, tuple[str, ...]]:
    """A select's SQL as the driver takes it (for a read sent with the lock, past SQLAlchemy) and the
    names of the columns it reads, in order (asking the cursor builds an object per column, per read):
    worked out once per statement and dialect."""
    cache_key = ("driver-sql", connection.dialect.name, str(id(statement)))
    found = _STATEMENTS.get(cache_key)
    if found is None:
        sql = str(statement.compile(dialect=connection.dialect))
        names = tuple(column.name for column in statement.selected_columns)
        # The statement is kept beside its SQL so its id cannot be reused by another statement.
        found = _STATEMENTS[cache_key] = (sql, names, statement)
    return found[0], found[1]


def _update(table: str, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    cache_key = ("update", table, *keys, "set", *columns)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        target = TABLES[table]
        # Parameters are renamed: SQLAlchemy keeps a column's own name for its VALUES/SET clause.
        stmt = (
            update(target)
            .where(and_(*(target.c[name] == bindparam(f"key_{name}") for name in keys)))
            .values({name: bindparam(f"set_{name}") for name in columns})
        )
        _STATEMENTS[cache_key] = stmt
    return stmt


def _upsert(dialect: str, table: str, columns: tuple[str, ...]) -> Any:
    cache_key = ("upsert", dialect, table, *columns)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        target = TABLES[table]
        keys = primary_key(table)
        stmt = postgresql.insert(target) if dialect == "postgresql" else sqlite.insert(target)
        update = {name: stmt.excluded[name] for name in columns if name not in keys}
        if update:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        _STATEMENTS[cache_key] = stmt
    return stmt


def read_tables(connection: Connection) -> MemoryState:
    """Everything the live projection tables hold, as a MemoryState (for --verify)."""
    state = MemoryState()
    for name, table in TABLES.items():
        for row in connection.execute(select(table)):
            state.put(name, dict(row._mapping))
    return state


def write_tables(connection: Connection, state: MemoryState, batch: int = 5_000) -> None:
    """Replace the live projection tables with what a MemoryState holds."""
    for name, table in TABLES.items():
        connection.execute(delete(table))
        rows = list(state.rows[name].values())
        if rows and _can_copy(connection, table, rows[0]):
            _copy(connection, table, rows)
            continue
        for start in range(0, len(rows), batch):
            connection.execute(insert(table), rows[start : start + batch])


def _can_copy(connection: Connection, table: Table, first: Row) -> bool:
    """COPY (several times faster than executemany on replay) only where it writes exactly what INSERT
    would: Postgres, every column given (no defaults to fill in), no JSON to adapt."""
    return (
        connection.dialect.name == "postgresql"
        and all(column.name in first for column in table.columns)
        and not any(isinstance(column.type, JSON) for column in table.columns)
    )


def _copy(connection: Connection, table: Table, rows: list[Row]) -> None:
    names = [column.name for column in table.columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    values = _values_of(names)
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(values(row))


class BatchState(SqlState):
    """SqlState for one transaction that appends a batch: rows loaded in bulk up front, read from memory,
    written once per table at the end (`flush`), or earlier when a read needs the table itself.

    Reads answer what SqlState would at the same point of the transaction. A row read by primary key
    comes from memory when known (loaded, read before, or put whole in this batch; or known absent),
    else from the table. A scan on one column comes from memory when every row with that value is
    known (`load` was told so, a scan of the table found them, or `complete` says none exist yet);
    otherwise the pending writes are flushed and the table answers. Writes to one row are merged into
    one upsert: an upsert of the merged columns leaves the row as the upserts one after the other would.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self._known: dict[str, dict[tuple[Any, ...], Row | None]] = {name: {} for name in TABLES}
        self._pending: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in TABLES}
        # (table, column) -> value -> primary keys of the known rows holding it; and the (table, column,
        # value) triples for which those are all the rows there are.
        self._index: dict[tuple[str, str], dict[Any, set[tuple[Any, ...]]]] = {}
        self._indexed: dict[str, list[tuple[str, dict[Any, set[tuple[Any, ...]]]]]] = {
            name: [] for name in TABLES
        }
        self._complete: set[tuple[str, str, Any]] = set()
        self._partly_written: set[str] = set()
        # Per table, looked up once here rather than on each of a batch's tens of thousands of reads and
        # writes: what gives its primary key and how many columns a whole row has.
        self._keys = {name: key_getter(name) for name in TABLES}
        self._widths = {name: len(table.columns) for name, table in TABLES.items()}

    def load(
        self,
        table: str,
        rows: Iterable[Row],
        complete: Iterable[tuple[str, Any]] = (),
        absent: Iterable[tuple[Any, ...]] = (),
    ) -> None:
        """Know these rows of table; that they are all the rows with each (column, value) of `complete`;
        and that no row has any of the primary keys in `absent`."""
        for row in rows:
            self._keep(table, row)
        for pk in absent:
            self._known[table].setdefault(pk, None)
        for column, value in complete:
            self.complete(table, **{column: value})

    def complete(self, table: str, **equal: Any) -> None:
        """Know that the rows already known are all the rows with this column's value."""
        ((column, value),) = equal.items()
        self._index_of(table, column)
        self._complete.add((table, column, value))

    def get(self, table: str, **key: Any) -> Row | None:
        pk = self._keys[table](key)
        known = self._known[table]
        if pk not in known:
            if pk in self._pending[table]:  # written in part: the table has the whole row
                self.flush()
            found = self.connection.execute(_select(table, tuple(key)), key).first()
            known[pk] = None
            if found is not None:
                self._keep(table, dict(found._mapping), pk)
        row = known[pk]
        return dict(row) if row is not None else None

    def put(self, table: str, row: Row) -> None:
        pk = self._keys[table](row)
        pending = self._pending[table]
        # One copy serves both: neither a pending nor a known row is changed in place, only replaced.
        kept = dict(row)
        pending[pk] = {**pending[pk], **kept} if pk in pending else kept
        if len(kept) == self._widths[table]:
            self._keep(table, kept, pk, copy=False)
        else:
            self._forget(table, pk)

    def update(self, table: str, changes: Row, **key: Any) -> None:
        row = self.get(table, **key)
        if row is not None:
            self.put(table, {**row, **changes})

    def scan(self, table: str, **equal: Any) -> list[Row]:
        (column, value), *rest = equal.items()
        if (table, column, value) in self._complete:
            known = self._known[table]
            rows = (known[pk] for pk in self._index[(table, column)].get(value, ()))
            return [dict(row) for row in rows if row is not None and all(row[k] == v for k, v in rest)]
        self.flush()
        found = super().scan(table, **equal)
        for row in found:
            self._keep(table, row)
        if not rest:
            self.complete(table, **equal)
        return found

    def known(self, table: str, **equal: Any) -> list[Row] | None:
        """The rows known to have this column's value, perhaps not all the table holds; None once a row of
        the table was written in part (a known row may then differ from the table's)."""
        ((column, value),) = equal.items()
        if table in self._partly_written:
            return None
        known = self._known[table]
        rows = []
        for pk in self._index_of(table, column).get(value, ()):
            row = known.get(pk)
            if row is not None:
                rows.append(dict(row))
        return rows

    def flush(self) -> None:
        """Write every pending row (an upsert of many rows per table and set of columns; on SQLite an
        executemany), then what SqlState holds: one round trip on Postgres."""
        with pipelined(self.connection):
            for table, pending in self._pending.items():
                groups: dict[tuple[str, ...], list[Row]] = {}
                for row in pending.values():
                    groups.setdefault(tuple(row), []).append(row)
                for columns, rows in groups.items():
                    if self._dialect == "postgresql":
                        upsert_rows(self.connection, TABLES[table], rows)
                    else:
                        self.connection.execute(_upsert(self._dialect, table, columns), rows)
                pending.clear()
            super().flush()

    def flush_and_commit(self, commit: Callable[[], None]) -> None:
        """A batch's writes are rows in bulk (multi-row upserts, COPY): pipelined, then the commit."""
        with pipelined(self.connection):
            self.flush()
            commit()

    def _keep(self, table: str, row: Row, pk: tuple[Any, ...] | None = None, *, copy: bool = True) -> None:
        """Know this whole row (with its primary key when the caller has it; a copy unless told the
        caller keeps no reference to change)."""
        if pk is None:
            pk = self._keys[table](row)
        known = self._known[table]
        old = known.get(pk)
        for column, index in self._indexed[table]:
            if old is not None:
                index[old[column]].discard(pk)
            index.setdefault(row[column], set()).add(pk)
        known[pk] = dict(row) if copy else row

    def _forget(self, table: str, pk: tuple[Any, ...]) -> None:
        """A row no longer known whole (written in part): it, and every scan of its table, is read from
        the table again. No projector writes part of a row today."""
        old = self._known[table].pop(pk, None)
        self._partly_written.add(table)
        for column, index in self._indexed[table]:
            if old is not None:
                index[old[column]].discard(pk)
        self._complete = {triple for triple in self._complete if triple[0] != table}

    def _index_of(self, table: str, column: str) -> dict[Any, set[tuple[Any, ...]]]:
        index = self._index.get((table, column))
        if index is None:
            index = self._index[(table, column)] = {}
            self._indexed[table].append((column, index))
            for pk, row in self._known[table].items():
                if row is not None:
                    index.setdefault(row[column], set()).add(pk)
        return index
