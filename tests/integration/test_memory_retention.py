"""Retention: old raw messages fold into a summary that links to them, and leave the hot collection."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from store.memory.records import memory_id
from store.memory.retention import RetentionRule, apply_retention, extractive_summary
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

SIX_MONTHS = (RetentionRule("message", timedelta(days=183)),)


def test_old_messages_fold_into_a_summary_and_are_archived(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    old = [
        message(store, "sam@bluebird.example", text, at(2023, month, 3), f"old{month}")
        for month, text in [
            (1, "I want customers to pre-order birthday cakes online. They should pay a deposit."),
            (2, "How do I stop same-day cake orders? I need three days to bake."),
            (3, "A customer never got her confirmation email."),
        ]
    ]
    customer = old[0].stream
    recent = message(
        store, "sam@bluebird.example", "Can I add vegan options to the form?", at(2024, 6, 9), "new"
    )
    kept_note = note(store, customer, "Sam prefers voice notes.", at(2023, 1, 6), "note")
    other = message(store, "jo@kestrel.example", "Old question about fonts.", at(2023, 1, 29), "other")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    appended = apply_retention(memory, store, now=at(2024, 7, 1), rules=SIX_MONTHS)

    assert {e.stream for e in appended} == {customer, other.stream}
    [summary] = memory.recall("cake orders", customer_id=customer, kinds=["summary"])
    assert set(summary.summarises) == {memory_id(e.id) for e in old}
    assert summary.confidence == 0.8 and summary.occurred_at == at(2023, 3, 3)
    assert "pre-order birthday cakes online." in summary.text and "3 messages" in summary.text
    hot = {r.event_id for r in memory.recall("cakes", customer_id=customer, limit=20)}
    assert hot == {recent.id, kept_note.id, next(e for e in appended if e.stream == customer).id}
    assert [r.event_id for r in memory.get([memory_id(e.id) for e in old], archived=True)] == [
        e.id for e in old
    ]
    assert memory.count(customer, archived=True) == 3

    # Running again finds nothing due and appends nothing; a rebuild lands in the same place.
    assert apply_retention(memory, store, now=at(2024, 7, 1), rules=SIX_MONTHS) == []
    before = memory.count(customer), memory.count(customer, archived=True)
    memory.projection.rebuild(store)
    assert (memory.count(customer), memory.count(customer, archived=True)) == before

    # A redelivered old message must not bring an archived memory back into the hot set.
    assert memory.projection.handle(old[0]) == 0
    assert memory.by_event(old[0].id) == []

    context = memory.context_memories(customer, "vegan cake options", budget_chars=600)
    assert context[0].kind == "summary" and context[0].id == summary.id
    assert recent.id in {m.event_id for m in context[1:]}
    assert sum(len(m.text) for m in context) <= 600
    tiny = memory.context_memories(customer, "vegan", budget_chars=40)
    assert len(tiny) == 1 and len(tiny[0].text) <= 40 and tiny[0].text.endswith("…")


def test_the_default_rule_reads_the_setting(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory
) -> None:
    event = message(store, "tom@greenleaf.example", "Rain cancelled my jobs.", at(2024, 1, 10), "r1")
    memory = memory_factory(engine)
    memory.projection.catch_up(store)

    assert apply_retention(memory, store, now=at(2024, 6, 1)) == []  # 143 days < 183
    assert len(apply_retention(memory, store, now=at(2024, 8, 1))) == 1
    assert memory.by_event(event.id) == [] and memory.by_event(event.id, archived=True)


def test_extractive_summary_stays_within_its_size() -> None:
    from store.memory.records import MemoryRecord

    records = [
        MemoryRecord(
            id=f"e{i}#0",
            customer_id="c",
            event_id=f"e{i}",
            position=i,
            kind="message",
            event_type="message.received",
            text=("Subject: Order\n\n" if i % 2 else "") + "word " * 200,
            occurred_at=at(2023, 1, 1) + timedelta(days=i),
            confidence=1.0,
        )
        for i in range(200)
    ]
    text = extractive_summary("c", records)
    assert len(text) <= 4_000
    assert text.startswith("200 messages from 2023-01-01 to 2023-07-19")
    assert "more" in text.splitlines()[-1]
