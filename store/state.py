"""Where projections live while they are applied: SQL tables on the hot path, dictionaries on replay.

The projector is written once against `ProjectionState`; `SqlState` reads and writes rows in the
caller's transaction, `MemoryState` keeps them in dictionaries so a replay of a million events never
round-trips to the database per event, and is then written back in bulk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from sqlalchemy import Connection, Table, and_, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from store import tables as t

Row = dict[str, Any]
TABLES: dict[str, Table] = {table.name: table for table in t.PROJECTION_TABLES}


def register_table(table: Table) -> None:
    """Make a projection table known to both states (later layers add proposals this way)."""
    TABLES[table.name] = table


def primary_key(table_name: str) -> tuple[str, ...]:
    return tuple(column.name for column in TABLES[table_name].primary_key.columns)


class ProjectionState(Protocol):
    def get(self, table: str, **key: Any) -> Row | None: ...

    def put(self, table: str, row: Row) -> None: ...

    def scan(self, table: str, **equal: Any) -> list[Row]: ...


class MemoryState:
    """Projection rows in dictionaries keyed by primary key."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in TABLES}

    def get(self, table: str, **key: Any) -> Row | None:
        row = self.rows[table].get(tuple(key[name] for name in primary_key(table)))
        return dict(row) if row is not None else None

    def put(self, table: str, row: Row) -> None:
        self.rows[table][tuple(row[name] for name in primary_key(table))] = dict(row)

    def scan(self, table: str, **equal: Any) -> list[Row]:
        return [
            dict(row)
            for row in self.rows[table].values()
            if all(row.get(name) == value for name, value in equal.items())
        ]

    def items(self) -> Iterator[tuple[str, list[Row]]]:
        for name, rows in self.rows.items():
            yield name, list(rows.values())


class SqlState:
    """Projection rows in their tables, read and written inside the caller's transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._dialect = connection.dialect.name

    def get(self, table: str, **key: Any) -> Row | None:
        found = self.connection.execute(select(TABLES[table]).where(_equal(TABLES[table], key))).first()
        return dict(found._mapping) if found is not None else None

    def put(self, table: str, row: Row) -> None:
        target = TABLES[table]
        keys = primary_key(table)
        if self._dialect == "postgresql":
            stmt: Any = postgresql.insert(target).values(row)
        else:
            stmt = sqlite.insert(target).values(row)
        update = {name: stmt.excluded[name] for name in row if name not in keys}
        if update:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        self.connection.execute(stmt)

    def scan(self, table: str, **equal: Any) -> list[Row]:
        rows = self.connection.execute(select(TABLES[table]).where(_equal(TABLES[table], equal)))
        return [dict(row._mapping) for row in rows]


def _equal(table: Table, values: dict[str, Any]) -> Any:
    return and_(*(table.c[name] == value for name, value in values.items()))


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
        for start in range(0, len(rows), batch):
            connection.execute(insert(table), rows[start : start + batch])
