"""`/customer` through the command layer: the slice, the open proposals with buttons, the memory summary."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bot.commands import Commands
from store import lifecycle as lc
from store.memory.retention import RetentionRule, apply_retention
from store.uow import EventStore
from tests.integration.memory_harness import (  # noqa: F401  (fixtures by name)
    MemoryFactory,
    at,
    backend_fixture,
    chroma_server_fixture,
    embedder_fixture,
    memory_factory_fixture,
    message,
)
from tests.integration.proposal_helpers import OPERATOR, email_proposal, settings_for


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_customer_shows_open_proposals_with_buttons_and_the_memory_summary(
    store: EventStore, engine: Engine, memory_factory: MemoryFactory, tmp_path: Path
) -> None:
    old = [
        message(store, "sam@bluebird.example", text, at(2023, month, 3), f"old{month}")
        for month, text in [
            (1, "We want customers to pre-order birthday cakes online with a deposit."),
            (2, "How do we stop same-day cake orders? Baking takes three days."),
        ]
    ]
    customer = old[0].stream
    memory = memory_factory(engine)
    memory.projection.catch_up(store)
    apply_retention(memory, store, now=at(2024, 7, 1), rules=(RetentionRule("message", timedelta(days=183)),))
    memory.projection.catch_up(store)
    pid, _ = lc.record_proposal(
        store, email_proposal(customer, to="sam@bluebird.example"), verdict="approval", rules=[], key="t:p1"
    )
    commands = Commands(store, settings_for(tmp_path), memory=lambda: memory)

    answer = commands.customer(OPERATOR, "sam@bluebird.example", None)

    assert answer.ok, answer.text
    memory_line = next(line for line in answer.lines if line.startswith("memory: "))
    assert "birthday cakes" in memory_line
    assert "open proposals: 1" in answer.lines
    assert [view.id for view in answer.proposals] == [pid]
    assert {button.action for button in answer.proposals[0].buttons} >= {"approve", "edit", "reject"}


def test_customer_without_memory_or_proposals_is_just_the_slice(store: EventStore, tmp_path: Path) -> None:
    message(store, "jo@kestrel.example", "Question about fonts.", at(2024, 1, 29), "m1")
    answer = Commands(store, settings_for(tmp_path)).customer(OPERATOR, "kestrel.example", None)
    assert answer.ok, answer.text
    assert answer.proposals == ()
    assert not any(line.startswith(("memory: ", "open proposals")) for line in answer.lines)
    assert any("Question about fonts." in line for line in answer.lines)
