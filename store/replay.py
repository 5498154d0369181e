"""Rebuild projections from the log (`crm replay`) and check the live ones against a rebuild (`--verify`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from store import log, projector
from store import tables as t
from store.state import TABLES, MemoryState, primary_key, read_tables, write_tables
from store.uow import CORE_PROJECTION

Progress = Callable[[int, int], None]  # (events applied, events in total)


def _noop(done: int, total: int) -> None:
    pass


def rebuild(engine: Engine, progress: Progress = _noop, batch: int = 10_000) -> tuple[MemoryState, int]:
    """Every projection rebuilt in memory from the whole log; returns it with the last position applied."""
    with engine.connect() as connection:
        total = log.head(connection)
    state, last = MemoryState(), 0
    for event in log.stream_all(engine, until=total, batch=batch):
        projector.apply(event, state)
        last = event.position
        if last % batch == 0:
            progress(last, total)
    progress(last, total)
    return state, last


def _catch_up(connection: Any, state: MemoryState, after: int) -> int:
    """Apply what was appended while we rebuilt; the caller holds the append lock."""
    query = select(t.events).where(t.events.c.position > after).order_by(t.events.c.position)
    for row in connection.execute(query):
        event = log.to_event(row._mapping)
        projector.apply(event, state)
        after = event.position
    return after


def replay(engine: Engine, progress: Progress = _noop) -> int:
    """Replace the live projections with a rebuild from the log; returns the position reached."""
    state, last = rebuild(engine, progress)
    with engine.begin() as connection:
        log.lock_for_append(connection)
        last = _catch_up(connection, state, last)
        write_tables(connection, state)
        positions = t.projection_positions
        connection.execute(delete(positions).where(positions.c.name == CORE_PROJECTION))
        connection.execute(insert(positions).values(name=CORE_PROJECTION, position=last))
    return last


@dataclass
class Difference:
    table: str
    key: tuple[Any, ...]
    live: dict[str, Any] | None
    replayed: dict[str, Any] | None

    def describe(self) -> str:
        where = f"{self.table} {'/'.join(map(str, self.key))}"
        if self.live is None:
            return f"{where}: missing from the live projection"
        if self.replayed is None:
            return f"{where}: in the live projection but not in the log"
        changed = [
            f"{name} live={self.live.get(name)!r} replayed={self.replayed.get(name)!r}"
            for name in sorted(set(self.live) | set(self.replayed))
            if self.live.get(name) != self.replayed.get(name)
        ]
        return f"{where}: " + "; ".join(changed)


@dataclass
class Verification:
    position: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def verify(engine: Engine, progress: Progress = _noop) -> Verification:
    """Rebuild into a shadow copy in memory and compare it with the live projections."""
    shadow, last = rebuild(engine, progress)
    with engine.begin() as connection:
        log.lock_for_append(connection)  # hold writers still while we read a consistent picture
        last = _catch_up(connection, shadow, last)
        live = read_tables(connection)
    return Verification(position=last, differences=compare(live, shadow))


def compare(live: MemoryState, replayed: MemoryState) -> list[Difference]:
    differences = []
    for name in TABLES:
        live_rows, replayed_rows = live.rows[name], replayed.rows[name]
        for key in sorted(set(live_rows) | set(replayed_rows), key=repr):
            a, b = live_rows.get(key), replayed_rows.get(key)
            if a != b:
                differences.append(Difference(name, key, a, b))
    return differences


__all__ = ["Difference", "Verification", "primary_key", "rebuild", "replay", "verify"]
