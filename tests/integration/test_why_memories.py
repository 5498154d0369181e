"""Why? shows the memories a proposal used: what kind, when, a snippet, and the event it came from.

The memory is asked first; a memory it no longer holds (archived, forgotten, or no memory wired) is
quoted from the log event it was written for; one whose event is gone says so. SQLite and Postgres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from agents.context import AgentContext, RecalledMemory
from agents.proposal import Proposal, Source
from jobs.propose import with_memory_sources
from store import events as ev
from store.memory.records import memory_id
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    commands,
    email_proposal,
    make_customer,
    record,
    settings_for,
)


class _Memory:
    """What Why? asks of the memory: records by id, hot and archived (this one holds none)."""

    def get(self, ids: list[str], *, archived: bool = False) -> list[Any]:
        return []


def test_why_quotes_each_memory_the_proposal_used_with_its_date_and_source_event(
    store: EventStore, tmp_path: Path
) -> None:
    customer = make_customer(store)
    note = store.append(
        ev.NewEvent(
            type="note.added",
            payload=ev.NoteAdded(text="Prefers   calls after 3pm;\nnever before.", author="op"),
            stream=customer,
            idempotency_key="note:1",
        )
    ).event
    payload = email_proposal(customer)
    payload["sources"] = [
        {"kind": "event", "id": note.id, "note": None},
        {"kind": "memory", "id": memory_id(note.id), "note": None},
        {"kind": "memory", "id": memory_id("gone-event"), "note": None},
    ]
    pid = record(store, payload)
    cmds, _, _ = commands(store, settings_for(tmp_path), memory=lambda: _Memory())

    lines = cmds.why(OPERATOR, pid).lines
    day = f"{note.occurred_at:%Y-%m-%d}"
    quoted = "“Prefers calls after 3pm; never before.”"
    assert f"Memory used: event, {day}: {quoted} — from event {note.id} (note.added)" in lines
    assert f"Memory used: memory {memory_id('gone-event')} (its event is no longer in the log)" in lines
    assert f"Source: event {note.id}" in lines, "events stay listed as before"


def test_a_model_draft_lists_the_memories_it_was_given_and_a_template_none(store: EventStore) -> None:
    memories = [
        RecalledMemory(id=f"e{n}#0", kind="note", text=f"memory {n}", occurred_at=ev.utcnow())
        for n in range(5)
    ]
    context = cast(AgentContext, type("Context", (), {"memories": memories})())
    drafted = Proposal(
        agent="inbox_triage",
        kind="send_email",
        customer_id="cus_1",
        rationale="asked",
        confidence=0.8,
        drafted_from_template=False,
        sources=(Source(kind="event", id="e9"),),
    )
    used = with_memory_sources(drafted, context)
    assert [s.id for s in used.sources] == ["e9", "e0#0", "e1#0", "e2#0"]
    template = drafted.model_copy(update={"drafted_from_template": True})
    assert with_memory_sources(template, context).sources == template.sources
