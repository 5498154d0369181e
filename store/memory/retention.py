"""Retention: per-kind rules fold old raw memories into a summary and archive them from the hot set.

A roll-up is an event (`memory.summarised`) appended to the log, so it is itself a memory (kind
"summary") that links to what it summarises, and a replay archives the same memories again. The
default summariser is extractive and deterministic; the curator agent can pass a better one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from store.events import Event, NewEvent, utcnow
from store.memory.events import MAX_SUMMARY_CHARS, MemorySummarised
from store.memory.recall import where_filter
from store.memory.records import Kind, MemoryRecord

if TYPE_CHECKING:
    from store.memory.service import Memory
    from store.uow import EventStore

# A roll-up line quotes the start of each memory: enough to recognise it, short enough that a year of
# messages still fits a prompt.
LINE_CHARS = 160
# The extractive summary's size; well under MAX_SUMMARY_CHARS so a curator's edit has room.
SUMMARY_CHARS = 4_000
# Memories read from Chroma per page while looking for what is due.
SCAN_PAGE = 1_000

Summariser = Callable[[str, list[MemoryRecord]], str]


@dataclass(frozen=True)
class RetentionRule:
    """Memories of `kind` older than `fold_after` are rolled up into a summary and archived."""

    kind: Kind
    fold_after: timedelta


def default_rules(message_days: int) -> tuple[RetentionRule, ...]:
    """Raw messages fold after message_days; notes, corrections, outcomes and summaries stay hot."""
    return (RetentionRule("message", timedelta(days=message_days)),)


def extractive_summary(customer_id: str, records: list[MemoryRecord]) -> str:
    """A dated line per memory (its first sentence), oldest first, within SUMMARY_CHARS."""
    firsts = sorted((r for r in records if r.chunk == 0), key=lambda r: (r.occurred_at, r.position))
    if not firsts:
        firsts = sorted(records, key=lambda r: (r.occurred_at, r.position))
    start, end = firsts[0].occurred_at, firsts[-1].occurred_at
    header = f"{len(firsts)} {firsts[0].kind}s from {start:%Y-%m-%d} to {end:%Y-%m-%d} (rolled up):"
    lines = [header]
    used = len(header)
    for index, record in enumerate(firsts):
        line = f"- {record.occurred_at:%Y-%m-%d}: {_first_sentence(record.text)}"
        if used + len(line) + 1 > SUMMARY_CHARS - 40:
            lines.append(f"… and {len(firsts) - index} more")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    if flat.lower().startswith("subject:"):
        flat = flat[len("subject:") :].strip()
    for stop in (". ", "? ", "! "):
        cut = flat.find(stop)
        if 0 < cut < LINE_CHARS:
            return flat[: cut + 1]
    return flat if len(flat) <= LINE_CHARS else flat[: LINE_CHARS - 1].rstrip() + "…"


def due(memory: Memory, rules: Sequence[RetentionRule], now: datetime) -> dict[str, list[MemoryRecord]]:
    """Hot memories past their rule's age, grouped by the customer id they were recorded under."""
    groups: dict[str, list[MemoryRecord]] = defaultdict(list)
    for rule in rules:
        where = where_filter(None, kinds=[rule.kind], until=now - rule.fold_after)
        offset = 0
        while True:
            page = memory.hot.get(
                where=where, limit=SCAN_PAGE, offset=offset, include=["documents", "metadatas"]
            )
            for i, d, m in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                record = MemoryRecord.from_chroma(i, d, m)
                groups[record.customer_id].append(record)
            if len(page["ids"]) < SCAN_PAGE:
                break
            offset += SCAN_PAGE
    return dict(groups)


def apply_retention(
    memory: Memory,
    store: EventStore,
    *,
    now: datetime | None = None,
    rules: Sequence[RetentionRule] | None = None,
    summariser: Summariser = extractive_summary,
) -> list[Event]:
    """Roll up what is due for each customer; returns the `memory.summarised` events appended.

    Idempotent: the event's key is derived from what it summarises, so running twice appends once.
    """
    now = now or utcnow()
    rules = rules if rules is not None else default_rules(memory.settings.message_retention_days)
    appended = []
    for customer_id, records in sorted(due(memory, rules, now).items()):
        # Chunks share their event's time, so an event is due (and archived) whole.
        whole = records
        ids = tuple(sorted(r.id for r in whole))
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]
        text = summariser(customer_id, whole)[:MAX_SUMMARY_CHARS]
        latest = max(r.occurred_at for r in whole)
        result = store.append(
            NewEvent(
                type="memory.summarised",
                payload=MemorySummarised(
                    text=text,
                    summarises=ids,
                    period_start=min(r.occurred_at for r in whole),
                    period_end=latest,
                ),
                stream=customer_id,
                idempotency_key=f"memory.summarised:{customer_id}:{digest}",
                actor="retention",
                # The summary stands where the newest memory it covers stood in the customer's story.
                occurred_at=latest,
            ),
            dispatch=False,
        )
        if not result.duplicate:
            appended.append(result.event)
    if memory.engine is not None:
        memory.projection.catch_up(store)
    return appended


__all__ = ["RetentionRule", "apply_retention", "default_rules", "due", "extractive_summary"]
