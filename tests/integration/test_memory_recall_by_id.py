"""A customer's memories looked up by id from the log return exactly what Chroma's metadata filter
returns: the same memories in the same order, with chunked, merged, archived and forgotten ones about."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from store import events as ev
from store.memory.recall import latest_summary
from store.memory.retention import RetentionRule, apply_retention
from store.memory.service import Memory
from store.uow import EventStore
from tests.integration.memory_harness import (  # noqa: F401  (fixtures by name)
    MemoryFactory,
    at,
    backend_fixture,
    chroma_server_fixture,
    embedder_fixture,
    memory_factory_fixture,
    message,
    note,
)


class FilterOnly(Memory):
    """The same memory read the way it was before ids: Chroma's `where` on customer_id."""

    def written_ids(self, customer_ids: Sequence[str]) -> list[str] | None:
        return None

    def aliases_and_written_ids(self, customer_id: str) -> tuple[list[str], list[str] | None]:
        return self.aliases(customer_id), None


def _long_email(topic: str) -> str:
    return "\n\n".join(
        f"Section {i}. The {topic} schedule for depot {i} and the loading dock rota changed again."
        for i in range(30)
    )


def test_lookup_by_id_returns_what_the_metadata_filter_returns(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    first = message(store, "ana@acme.example", "Invoices need the PO number.", at(2023, 1, 5), "a1")
    ana = first.stream
    message(store, "ana@acme.example", _long_email("delivery"), at(2024, 3, 2), "a2", subject="Rota")
    for day in range(1, 6):
        note(
            store, ana, f"Call {day}: asked about refunds and the PO field.", at(2024, 4, day), f"a{day + 2}"
        )
    other = message(store, "bo@bluebird.example", "Invoices need the PO number!", at(2024, 4, 3), "b1")
    note(store, other.stream, "Refunded invoice 31.", at(2024, 4, 4), "b2")
    merged = message(store, "a.s@gmail.example", "Refund the double charge, please.", at(2024, 2, 2), "m1")
    store.append(
        ev.NewEvent(
            type="customer.merged",
            payload=ev.CustomerMerged(merged=merged.stream, reason="same person"),
            stream=ana,
            idempotency_key="merge-1",
        )
    )
    gone = message(store, "cy@northwind.example", "Refunds go to the EU account.", at(2024, 1, 11), "c1")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)
    memory.forget_customer(gone.stream, store)
    rules = (RetentionRule("message", at(2024, 6, 1) - at(2023, 6, 1)),)
    assert apply_retention(memory, store, now=at(2024, 6, 1), rules=rules)  # archives the 2023 message
    old = memory_factory(engine, kind=FilterOnly)

    for customer in (ana, merged.stream, other.stream, gone.stream, "cus_nobody"):
        for query in ("refund for a double charge", "purchase order on invoices", "loading dock"):
            for filters in (
                {},
                {"kinds": ["note"]},
                {"kinds": ["message", "summary"]},
                {"since": at(2024, 3, 1)},
                {"since": at(2024, 4, 2), "until": at(2024, 4, 4)},
            ):
                for limit in (1, 5, 100):
                    new = memory.recall(query, customer_id=customer, limit=limit, **filters)  # type: ignore[arg-type]
                    assert new == old.recall(query, customer_id=customer, limit=limit, **filters)  # type: ignore[arg-type]
            assert memory.context_memories(customer, query, 400) == old.context_memories(customer, query, 400)
        assert memory.context_memories(customer, "", 10_000) == old.context_memories(customer, "", 10_000)
        ids = memory.aliases(customer)
        assert latest_summary(memory, ids) == latest_summary(old, ids)

    found = memory.recall("loading dock rota", customer_id=ana, limit=100)
    assert len({r.event_id for r in found}) < len(found)  # the long email's chunks are all there
    assert {r.kind for r in found} >= {"message", "note", "summary"}
    assert memory.recall("refund", customer_id=gone.stream) == []


def test_aliases_and_their_memory_ids_come_in_one_read_as_they_do_in_two(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    ana = message(store, "ana@acme.example", "Invoices need the PO number.", at(2024, 1, 5), "a1").stream
    note(store, ana, "Asked about refunds.", at(2024, 1, 6), "a2")
    chain = [
        message(store, f"m{i}@x.example", f"Hello {i}", at(2024, 2, i + 1), f"m{i}").stream for i in range(3)
    ]
    for absorbed, into in ((chain[2], chain[1]), (chain[1], chain[0]), (chain[0], ana)):  # ana ← 0 ← 1 ← 2
        store.append(
            ev.NewEvent(
                type="customer.merged",
                payload=ev.CustomerMerged(merged=absorbed, reason="same person"),
                stream=into,
                idempotency_key=f"merge-{absorbed}",
            )
        )
    memory = memory_factory(engine)
    for customer in (ana, chain[1], "cus_nobody"):
        aliases, written = memory.aliases_and_written_ids(customer)
        assert aliases[0] == customer and sorted(aliases) == sorted(memory.aliases(customer))
        assert sorted(written or []) == sorted(memory.written_ids(memory.aliases(customer)) or [])
    aliases, written = memory.aliases_and_written_ids(ana)
    assert len(aliases) == 4 and len(written or []) >= 5
