"""Concurrent appends on Postgres: one idempotency key, many transactions at once → exactly one event.

Each thread has its own connection (its own engine) and all of them start their transaction together
behind a barrier, as N web processes would on a webhook redelivered while the first delivery is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, Table, func, select

from store import events as ev
from store import replay
from store import tables as t
from store.db import make_engine
from store.uow import Appended, EventStore

WRITERS = 6
TIMEOUT = 30  # seconds a writer may wait at the barrier or for the append lock before the test fails

R = TypeVar("R")


@pytest.fixture
def engines(pg_url: str) -> Iterator[list[Engine]]:
    """One engine (so one connection) per writer."""
    made = [make_engine(pg_url, pool_size=1, max_overflow=0) for _ in range(WRITERS)]
    yield made
    for engine in made:
        engine.dispose()


def all_at_once(engines: list[Engine], work: Callable[[EventStore, int], R]) -> list[R]:
    """Run work(store, i) in one thread per engine, all released together once connected."""
    barrier = threading.Barrier(len(engines), timeout=TIMEOUT)

    def writer(i: int) -> R:
        store = EventStore(engines[i])
        with engines[i].connect():  # connect before the barrier so the race is on the append
            pass
        barrier.wait()
        return work(store, i)

    with ThreadPoolExecutor(max_workers=len(engines)) as pool:
        return list(pool.map(writer, range(len(engines)), timeout=TIMEOUT))


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_concurrent_appends_of_one_key_write_exactly_one_event(engines: list[Engine]) -> None:
    def append(store: EventStore, i: int) -> Appended:
        new = ev.NewEvent(
            type="note.added",
            payload=ev.NoteAdded(text=f"writer {i}", author="ops"),
            stream="cus_a",
            idempotency_key="webhook:msg_1",
        )
        return store.append(new)

    results = all_at_once(engines, append)
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.event.id for r in results}) == 1
    assert count(engines[0], t.events) == 1
    assert count(engines[0], t.outbox) == 1
    assert count(engines[0], t.notes) == 1


def test_concurrent_deliveries_of_one_signal_create_one_customer(engines: list[Engine]) -> None:
    def deliver(store: EventStore, i: int) -> Appended:
        signal = ev.LeadCreated(customer=ev.CustomerRef(name="Ann", email="ann@acme.com"))
        return store.record_signal("lead.created", signal, "form:submission-7", source="form")

    results = all_at_once(engines, deliver)
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.event.id for r in results}) == 1
    assert count(engines[0], t.customers) == 1
    assert count(engines[0], t.contact_points) == 1


def test_concurrent_signals_about_one_new_person_resolve_to_one_customer(engines: list[Engine]) -> None:
    """Different keys, same email: without serialised appends each would create its own customer."""

    def deliver(store: EventStore, i: int) -> Appended:
        signal = ev.MessageReceived(customer=ev.CustomerRef(email=f"  Ann@ACME.com{' ' * i}"))
        return store.record_signal("message.received", signal, f"mail:{i}", source="email")

    results = all_at_once(engines, deliver)
    assert not any(r.duplicate for r in results)
    assert len({r.event.stream for r in results}) == 1
    assert count(engines[0], t.customers) == 1
    assert replay.verify(engines[0]).ok


def test_concurrent_appends_get_distinct_positions_with_no_gaps(engines: list[Engine]) -> None:
    def append_three(store: EventStore, i: int) -> list[int]:
        positions = []
        for j in range(3):
            new = ev.NewEvent(
                type="task.completed",
                payload=ev.TaskCompleted(task_id=f"{i}-{j}"),
                stream=f"cus_{i}",
                idempotency_key=f"task:{i}:{j}",
            )
            positions.append(store.append(new).event.position)
        return positions

    results = all_at_once(engines, append_three)
    everything = sorted(p for positions in results for p in positions)
    assert everything == list(range(1, WRITERS * 3 + 1))
    for positions in results:
        assert positions == sorted(positions)
