"""The memory projection: tails the event log and keeps the Chroma collections in step with it.

Like the SQL projections it records the log position it has applied (`projection_positions`, name
"memory"). Writes are upserts keyed by event id and chunk, so applying an event twice, a crash between
the Chroma write and the position update, or a full replay all end in the same collection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, insert, select, update

from store import events as ev
from store import tables as t
from store.memory.events import MemoryForgotten, MemorySummarised
from store.memory.extract import EXTRACTORS, extract
from store.memory.records import MemoryRecord, memory_id

if TYPE_CHECKING:
    from store.memory.service import Memory
    from store.uow import EventStore

log = logging.getLogger(__name__)

PROJECTION_NAME = "memory"
# Records embedded and upserted per Chroma call: bounds the worker's memory on a long replay while
# keeping Chroma's per-call overhead small.
WRITE_BATCH = 256
# Ids per Chroma get/delete when archiving: Chroma caps the size of one request.
ID_BATCH = 500
# Events whose effect is not a plain upsert; they flush what is pending first so order is kept.
CONTROL_TYPES = ("memory.summarised", "memory.forgotten")


def position(connection: Connection) -> int:
    """The last log position the memory projection applied (0 before the first)."""
    p = t.projection_positions.c
    found = connection.execute(select(p.position).where(p.name == PROJECTION_NAME)).scalar_one_or_none()
    return int(found or 0)


def set_position(connection: Connection, value: int, *, force: bool = False) -> None:
    """Record the applied position; only ever moves forward unless force (a rebuild starts from 0)."""
    p = t.projection_positions.c
    current = connection.execute(select(p.position).where(p.name == PROJECTION_NAME)).scalar_one_or_none()
    if current is None:
        connection.execute(insert(t.projection_positions).values(name=PROJECTION_NAME, position=value))
    elif force or value > current:
        connection.execute(
            update(t.projection_positions).where(p.name == PROJECTION_NAME).values(position=value)
        )


class MemoryProjection:
    """Applies log events to the memory collections."""

    name = PROJECTION_NAME

    def __init__(self, memory: Memory, engine: Engine) -> None:
        self.memory = memory
        self.engine = engine

    def wants(self, event: ev.Event) -> bool:
        """True for events that can change memory."""
        return event.type in EXTRACTORS or event.type in CONTROL_TYPES

    def position(self) -> int:
        with self.engine.connect() as connection:
            return position(connection)

    def records_for(self, event: ev.Event) -> list[MemoryRecord]:
        """The memory records (one per chunk) an event leaves; [] for most event types."""
        found = extract(event)
        if found is None:
            return []
        pieces = self.memory.chunker.chunks(found.text)
        return [
            MemoryRecord(
                id=memory_id(event.id, index),
                customer_id=event.stream,
                event_id=event.id,
                position=event.position,
                kind=found.kind,
                event_type=event.type,
                text=piece,
                occurred_at=event.occurred_at,
                confidence=found.confidence,
                chunk=index,
                chunks=len(pieces),
                summarises=found.summarises,
                corrects=found.corrects,
            )
            for index, piece in enumerate(pieces)
        ]

    def handle(self, event: ev.Event) -> int:
        """Apply one event now unless the projection has already passed it; returns records written.

        The position is left to `catch_up`, which applies events strictly in log order: a redelivered
        old event is skipped, so it cannot resurrect a memory a later roll-up archived.
        """
        if not self.wants(event) or event.position <= self.position():
            return 0
        return self.apply(iter([event]))

    def catch_up(self, store: EventStore) -> int:
        """Apply every event after the recorded position, in order; returns the events applied."""
        self._mirror_vectors()
        applied = 0
        after = self.position()
        for batch in _batches(store.read_all(after=after, batch=WRITE_BATCH), WRITE_BATCH):
            self.apply(iter(batch))
            with self.engine.begin() as connection:
                set_position(connection, batch[-1].position)
            applied += len(batch)
        return applied

    def _mirror_vectors(self) -> None:
        """Once, for a collection written before the rows beside the log existed: copy it there."""
        index = self.memory.vectors
        if index is None or index.complete():
            return
        if not int(self.memory.hot.count()):
            index.mark_complete()
            return
        log.info("memory: copying the vectors of %s beside the log (once)", index.collection)
        reported = [0]

        def progress(copied: int) -> None:
            if copied - reported[0] >= 50_000:
                log.info("memory: %d vectors copied", copied)
                reported[0] = copied

        copied = self.memory.backfill_vectors(progress)
        log.info("memory: %d vectors copied; recall reads them from now on", copied)

    def rebuild(self, store: EventStore) -> int:
        """Empty the collections and apply the whole log again (`crm replay --memory`)."""
        self.memory.reset()
        with self.engine.begin() as connection:
            set_position(connection, 0, force=True)
        self.catch_up(store)
        return self.position()

    def apply(self, events: Iterable[ev.Event]) -> int:
        """Apply events in order, upserting in bounded batches; returns records written."""
        pending: list[MemoryRecord] = []
        written = 0
        for event in events:
            if event.type in CONTROL_TYPES:
                written += self._flush(pending)
                pending = []
            if event.type == "memory.forgotten":
                self._forget(event)
                continue
            pending.extend(self.records_for(event))
            if event.type == "memory.summarised":
                written += self._flush(pending)
                pending = []
                self._archive(event)
            elif len(pending) >= WRITE_BATCH:
                written += self._flush(pending)
                pending = []
        return written + self._flush(pending)

    def _flush(self, records: list[MemoryRecord]) -> int:
        if records:
            self.memory.upsert(records)
        return len(records)

    def _archive(self, event: ev.Event) -> None:
        """Move the memories a roll-up summarises from the hot collection to the archive."""
        p = event.payload
        assert isinstance(p, MemorySummarised)
        ids = list(p.summarises)
        for start in range(0, len(ids), ID_BATCH):
            self.memory.archive_ids(ids[start : start + ID_BATCH])

    def _forget(self, event: ev.Event) -> None:
        p = event.payload
        assert isinstance(p, MemoryForgotten)
        self.memory.delete_customers([event.stream, *p.customers])


def _batches(events: Iterable[ev.Event], size: int) -> Iterable[list[ev.Event]]:
    batch: list[ev.Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["PROJECTION_NAME", "MemoryProjection", "position", "set_position"]
