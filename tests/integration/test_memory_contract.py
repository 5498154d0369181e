"""The memory contract: the same tests against embedded Chroma and a `chroma run` server, on SQLite and
Postgres. Provenance, idempotent writes, isolation between customers, hybrid recall, replay, forgetting."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from jobs.handlers import MEMORY, handlers_of, remember
from store import events as ev
from store.memory.embeddings import MiniLMEmbedding
from store.memory.events import MemoryCorrected
from store.memory.projection import position
from store.memory.records import memory_id
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


def _snapshot(memory) -> dict[str, tuple[str, dict]]:  # type: ignore[no-untyped-def]
    found = memory.hot.get(include=["documents", "metadatas"])
    return {i: (d, m) for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)}


def test_an_event_becomes_a_memory_with_its_provenance(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    event = message(
        store, "dana@acme.example", "Please add the PO number to invoices.", at(2024, 1, 15), "e1"
    )
    memory = memory_factory(engine)

    assert memory.projection.catch_up(store) >= 2  # customer.created + message.received
    [record] = memory.by_event(event.id)

    assert record.id == memory_id(event.id, 0) == f"{event.id}#0"
    assert record.customer_id == event.stream
    assert (record.event_id, record.position, record.kind) == (event.id, event.position, "message")
    assert record.occurred_at == at(2024, 1, 15)
    assert record.confidence == 1.0
    assert record.text == "Please add the PO number to invoices."
    with engine.connect() as connection:
        assert position(connection) == event.position


def test_writing_twice_or_catching_up_again_changes_nothing(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    first = message(
        store, "sam@bluebird.example", "Can I pay the subscription in two parts?", at(2024, 5, 1), "b1"
    )
    memory = memory_factory(engine)
    memory.projection.catch_up(store)
    before = _snapshot(memory)

    assert memory.projection.handle(first) == 0  # already applied: recognised and skipped
    memory.upsert(memory.projection.records_for(first))  # a forced rewrite of the same event
    assert memory.projection.catch_up(store) == 0
    # The same signal delivered again is a duplicate in the log, so memory gains nothing either.
    again = message(
        store, "sam@bluebird.example", "Can I pay the subscription in two parts?", at(2024, 5, 1), "b1"
    )

    assert again.id == first.id
    assert memory.projection.catch_up(store) == 0
    assert _snapshot(memory) == before
    assert memory.count() == 1


def test_recall_for_one_customer_never_returns_another_customers_memories(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    a = message(store, "a@one.example", "Our invoice was charged twice, please refund.", at(2024, 4, 3), "a1")
    b = message(store, "b@two.example", "Our invoice was charged twice, please refund!", at(2024, 4, 3), "b1")
    note(store, b.stream, "Refunded the duplicate card charge for invoice 31.", at(2024, 4, 4), "b2")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    for query in ("refund a duplicate charge", "charged twice", ""):
        found = memory.recall(query, customer_id=a.stream, limit=10)
        assert [r.customer_id for r in found] == [a.stream]
    everyone = memory.recall("charged twice", customer_id=None, limit=10)
    assert {r.customer_id for r in everyone} == {a.stream, b.stream}
    assert memory.recall("refund", customer_id="cus_nobody", limit=10) == []


def test_recall_filters_by_kind_and_time_before_ranking(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    old = message(
        store, "jenna@harbor.example", "Members who skip classes should pay a fee.", at(2024, 2, 7), "h1"
    )
    customer = old.stream
    recent = note(store, customer, "No-show fee of 5 USD is live; attendance is up.", at(2024, 2, 12), "h2")
    note(store, customer, "Jenna asked about a white-label app.", at(2024, 6, 28), "h3")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    notes = memory.recall("fee for missed classes", customer_id=customer, kinds=["note"], limit=10)
    assert {r.kind for r in notes} == {"note"} and notes[0].event_id == recent.id
    window = memory.recall(
        "fee for missed classes", customer_id=customer, since=at(2024, 2, 1), until=at(2024, 2, 10), limit=10
    )
    assert [r.event_id for r in window] == [old.id]
    ranked = memory.recall("fee for missed classes", customer_id=customer, limit=3)
    assert {ranked[0].event_id, ranked[1].event_id} == {old.id, recent.id}
    assert ranked[0].score >= ranked[1].score >= ranked[2].score
    with pytest.raises(ValueError):
        memory.recall("x", customer_id=customer, limit=0)


def test_exact_ranking_within_a_customer_agrees_with_the_index(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    first = message(store, "ops@acme.example", "Dock bookings double up on Mondays.", at(2024, 1, 9), "x1")
    for i, text in enumerate(
        ["Drivers want bigger buttons.", "Invoices need the PO number.", "API for routes?"]
    ):
        note(store, first.stream, text, at(2024, 2, i + 1), f"x{i + 2}")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    exact = memory.recall("purchase order on bills", customer_id=first.stream, limit=4)
    indexed = memory.recall("purchase order on bills", customer_id=None, limit=4)  # the only customer

    assert [r.id for r in exact] == [r.id for r in indexed]
    assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(exact, indexed, strict=True))


class RefusingEmbedder(MiniLMEmbedding):
    """The real model's identity (same collection), but any attempt to embed fails the test."""

    def __call__(self, input):  # type: ignore[no-untyped-def,override]
        raise AssertionError("an exact lookup went through the embedding model")


def test_exact_lookups_never_embed(store: EventStore, engine: Engine, memory_factory: MemoryFactory) -> None:
    event = message(store, "tom@greenleaf.example", "VAT must show separately.", at(2024, 4, 20), "g1")
    memory_factory(engine).projection.catch_up(store)
    refusing = memory_factory(engine, embedding=RefusingEmbedder())

    assert [r.event_id for r in refusing.by_event(event.id)] == [event.id]
    assert [r.id for r in refusing.get([memory_id(event.id)])] == [memory_id(event.id)]
    assert refusing.count(event.stream) == 1
    assert refusing.by_event("no-such-event") == []
    with pytest.raises(AssertionError, match="embedding model"):
        refusing.recall("vat", customer_id=event.stream)


def test_a_long_email_is_chunked_and_every_part_is_recallable(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    paragraphs = [
        f"Section {i}. We reviewed the delivery schedule for depot {i} and the loading dock rota again."
        for i in range(40)
    ]
    paragraphs.append(
        "Finally: our finance director Ingrid Berg must approve every purchase above 10,000 EUR."
    )
    body = "\n\n".join(paragraphs)
    event = message(store, "pieter@acme.example", body, at(2024, 5, 20), "long", subject="Quarterly review")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    chunks = memory.by_event(event.id)
    assert len(chunks) >= 3
    assert [c.chunk for c in chunks] == list(range(len(chunks)))
    assert {c.chunks for c in chunks} == {len(chunks)}
    joined = " ".join(c.text for c in chunks)
    for paragraph in paragraphs:  # nothing was cut off
        assert paragraph in joined
    assert chunks[0].text.startswith("Subject: Quarterly review")
    assert all(memory.chunker.count(c.text) <= memory.chunker.window for c in chunks)
    [best] = memory.recall("who signs off on large purchases", customer_id=event.stream, limit=1)
    assert best.id == chunks[-1].id and "Ingrid Berg" in best.text


def test_merged_customers_memories_are_recalled_under_the_survivor(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    kept = message(store, "dana@acme.example", "Dock bookings double up on Mondays.", at(2024, 1, 9), "m1")
    gone = message(store, "d.ortiz@gmail.example", "Drivers need bigger buttons.", at(2024, 2, 2), "m2")
    store.append(
        ev.NewEvent(
            type="customer.merged",
            payload=ev.CustomerMerged(merged=gone.stream, reason="same person"),
            stream=kept.stream,
            idempotency_key="merge-1",
        )
    )
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    found = memory.recall("mobile layout for gloves", customer_id=kept.stream, limit=5)
    assert {r.event_id for r in found} == {kept.id, gone.id}
    assert memory.count(kept.stream) == 2


def test_replay_rebuilds_the_same_collection(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    first = message(
        store, "aisha@lumen.example", "Documents must be deleted after seven years.", at(2024, 5, 13), "l1"
    )
    note(store, first.stream, "Configured seven year retention.", at(2024, 5, 14), "l2")
    store.append(
        ev.NewEvent(
            type="memory.corrected",
            payload=MemoryCorrected(
                text="Correction: retention is ten years for employment files.", corrects=first.id
            ),
            stream=first.stream,
            idempotency_key="l3",
            occurred_at=at(2024, 5, 20),
            confidence=0.9,
        )
    )
    memory = memory_factory(engine)
    memory.projection.catch_up(store)
    live = _snapshot(memory)
    memory.hot.delete(ids=list(live)[:1])  # damage it

    reached = memory.projection.rebuild(store)

    assert _snapshot(memory) == live
    assert reached == memory.projection.position()
    [correction] = memory.recall("how long are files kept", customer_id=first.stream, kinds=["correction"])
    assert (correction.confidence, correction.kind) == (0.9, "correction")


def test_forgetting_a_customer_removes_their_memories_for_good(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    gone = message(
        store, "priya@northwind.example", "Patient data must stay in the EU.", at(2024, 1, 11), "n1"
    )
    note(store, gone.stream, "Signed the DPA.", at(2024, 1, 30), "n2")
    kept = message(store, "felix@orbit.example", "We need SSO with Google.", at(2024, 5, 8), "o1")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    assert memory.forget_customer(gone.stream, store) == 2

    assert memory.count(gone.stream) == 0 and memory.count(kept.stream) == 1
    assert memory.recall("data residency", customer_id=gone.stream) == []
    memory.projection.rebuild(store)
    assert memory.count(gone.stream) == 0 and memory.count(kept.stream) == 1
    # Contact after the request is remembered again: the request covered what existed then.
    later = message(store, "priya@northwind.example", "Hello again, new question.", at(2024, 9, 1), "n3")
    memory.projection.catch_up(store)
    assert [r.event_id for r in memory.recall("question", customer_id=later.stream)] == [later.id]


def test_the_job_subscriber_catches_up_from_the_recorded_position(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    memory = memory_factory(engine)
    ctx: Any = SimpleNamespace(memory=memory, store=store)
    first = message(store, "jo@kestrel.example", "Can invoices use our own font?", at(2024, 1, 29), "k1")
    remember(first, ctx)
    task = store.append(
        ev.NewEvent(
            type="task.created",
            payload=ev.TaskCreated(task_id="t1", title="send quote"),
            stream=first.stream,
            idempotency_key="k2",
        )
    ).event
    second = note(store, first.stream, "Built a custom invoice theme.", at(2024, 1, 30), "k3")

    assert MEMORY in handlers_of(first.type) and MEMORY in handlers_of(second.type)
    assert MEMORY not in handlers_of(task.type)
    remember(second, ctx)

    assert memory.projection.position() == second.position
    assert {r.event_id for r in memory.recall("branding", customer_id=first.stream, limit=5)} == {
        first.id,
        second.id,
    }


def test_context_memories_fit_the_budget(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    event = message(
        store, "tom@greenleaf.example", "Rain cancels half my jobs in spring.", at(2024, 2, 28), "c1"
    )
    for day in range(1, 8):
        note(
            store,
            event.stream,
            f"Visit {day}: mowed lawns and trimmed hedges.",
            at(2024, 3, day),
            f"c{day + 1}",
        )
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    picked = memory.context_memories(event.stream, "bad weather rescheduling", budget_chars=120)

    assert picked and sum(len(m.text) for m in picked) <= 120
    assert picked[0].event_id == event.id
    assert memory.context_memories(event.stream, "weather", budget_chars=0) == []
    recent = memory.context_memories(event.stream, "", budget_chars=10_000)
    assert recent[0].occurred_at == at(2024, 3, 7)
    assert recent == sorted(recent, key=lambda m: m.occurred_at, reverse=True)
    assert all(m.occurred_at >= at(2024, 2, 28) - timedelta(days=1) for m in recent)
