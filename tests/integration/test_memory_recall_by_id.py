"""A customer's memories ranked on the rows beside the log (store.memory.vectors), or looked up by id
from the log, return exactly what Chroma's metadata filter returns: the same memories in the same order
with the same scores, with chunked, merged, archived and forgotten ones about — also when the rows were
copied from a collection written before they existed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, delete, select

from store import events as ev
from store import tables as t
from store.memory.recall import latest_summary
from store.memory.retention import RetentionRule, apply_retention
from store.memory.service import Memory
from store.memory.vectors import VectorIndex
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


class ById(Memory):
    """The same memory read the way it was before the rows beside the log: ids from the log, vectors
    and metadata from Chroma."""

    def ranking_index(self) -> VectorIndex | None:
        return None


class FilterOnly(ById):
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
    by_id = memory_factory(engine, kind=ById)
    assert memory.ranking_index() is not None  # written beside the log from the first memory on
    with engine.connect() as connection:
        rows = {row.id: row.customer_id for row in connection.execute(select(t.memory_vectors))}
    assert gone.stream not in rows.values()  # forgotten: vectors too
    assert f"{first.id}#0" not in rows  # archived by retention: recall ranks the hot collection only
    assert set(rows) == set(memory.hot.get(include=[])["ids"])
    # A database from before the rows existed: they are copied from the collection on the next catch-up.
    with engine.begin() as connection:
        assert connection.execute(delete(t.memory_vectors)).rowcount >= 12
        connection.execute(delete(t.memory_vector_sets))
    copied = memory_factory(engine)
    assert copied.ranking_index() is None
    copied.projection.catch_up(store)
    assert copied.ranking_index() is not None

    for customer in (ana, merged.stream, other.stream, gone.stream, "cus_nobody"):
        for query in ("refund for a double charge", "purchase order on invoices", "loading dock"):
            for filters in (
                {},
                {"kinds": ["note"]},
                {"kinds": ["message", "summary"]},
                {"since": at(2024, 3, 1)},
                {"since": at(2024, 4, 2), "until": at(2024, 4, 4)},
                {"until": at(2024, 4, 3)},
            ):
                for limit in (1, 5, 100):
                    expected = old.recall(query, customer_id=customer, limit=limit, **filters)  # type: ignore[arg-type]
                    for reader in (copied, by_id):
                        assert reader.recall(query, customer_id=customer, limit=limit, **filters) == expected  # type: ignore[arg-type]
            for reader in (copied, by_id):
                assert reader.context_memories(customer, query, 400) == old.context_memories(
                    customer, query, 400
                )
        for reader in (copied, by_id):
            assert reader.context_memories(customer, "", 10_000) == old.context_memories(customer, "", 10_000)
        ids = memory.aliases(customer)
        assert latest_summary(copied, ids) == latest_summary(old, ids)
        assert latest_summary(by_id, ids) == latest_summary(old, ids)
    memory = copied

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


def test_a_row_whose_memory_chroma_lost_is_skipped(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    """The rows mirror the collection, but a memory removed from Chroma behind their back (or between
    the two writes) must not be recalled, nor hide the next one."""
    ana = message(store, "ana@acme.example", "Refund the double charge on invoice 7.", at(2024, 1, 5), "a1")
    for day in range(2, 5):
        note(
            store,
            ana.stream,
            f"Call {day}: refund for invoice 7 still open.",
            at(2024, 1, day + 5),
            f"a{day}",
        )
    memory = memory_factory(engine)
    memory.projection.catch_up(store)
    before = memory.recall("refund invoice 7", customer_id=ana.stream, limit=2)
    newest = memory.context_memories(ana.stream, "", 10_000)[0]
    memory.hot.delete(ids=[before[0].id, newest.id])  # the rows beside the log stay

    after = memory.recall("refund invoice 7", customer_id=ana.stream, limit=2)
    assert before[0].id not in {r.id for r in after} and len(after) == 2
    assert after[0] == before[1]
    recent = memory.context_memories(ana.stream, "", 10_000)
    assert newest.id not in {r.id for r in recent} and len(recent) == 2
