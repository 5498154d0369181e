"""The memory record: one piece of text a customer's history holds, with where it came from.

Every record carries its provenance (customer, event id, log position, kind, time, confidence) so a
proposal's "Why?" can point at the exact event. Its Chroma id is derived from the event id and the chunk
index, so writing it twice or replaying the log changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["message", "note", "summary", "correction", "outcome"]
KINDS: tuple[Kind, ...] = ("message", "note", "summary", "correction", "outcome")
RAW_KINDS: tuple[Kind, ...] = ("message", "note", "correction", "outcome")


def memory_id(event_id: str, chunk: int = 0) -> str:
    """The Chroma id of chunk `chunk` of the memory written for `event_id`."""
    return f"{event_id}#{chunk}"


def event_id_of(memory_id_: str) -> str:
    """The event id a memory id was derived from."""
    return memory_id_.rsplit("#", 1)[0]


def epoch_seconds(moment: datetime) -> int:
    """Seconds since 1970 (UTC): Chroma filters ranges on numbers, not on date strings."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (UTC)")
    return int(moment.timestamp())


class MemoryRecord(BaseModel):
    """One memory (or one chunk of a long one) as stored in the collection."""

    model_config = ConfigDict(frozen=True)

    id: str
    customer_id: str
    event_id: str
    position: int
    kind: Kind
    event_type: str
    text: str
    occurred_at: datetime
    confidence: float = Field(ge=0.0, le=1.0)
    chunk: int = 0
    chunks: int = 1
    summarises: tuple[str, ...] = ()  # for summaries: the memory ids rolled up into this one
    corrects: str | None = None  # for corrections: the event id corrected

    def metadata(self) -> dict[str, str | int | float | bool]:
        """Flat scalar metadata, the shape Chroma stores and filters on."""
        meta: dict[str, str | int | float | bool] = {
            "customer_id": self.customer_id,
            "event_id": self.event_id,
            "position": self.position,
            "kind": self.kind,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
            "occurred_ts": epoch_seconds(self.occurred_at),
            "confidence": self.confidence,
            "chunk": self.chunk,
            "chunks": self.chunks,
        }
        if self.summarises:
            # Chroma metadata values are scalars; a list of ids travels as JSON text.
            meta["summarises"] = json.dumps(list(self.summarises))
        if self.corrects:
            meta["corrects"] = self.corrects
        return meta

    @classmethod
    def from_chroma(cls, record_id: str, document: str | None, meta: dict[str, Any]) -> MemoryRecord:
        """Rebuild a record from what Chroma returns."""
        return cls(
            id=record_id,
            customer_id=str(meta["customer_id"]),
            event_id=str(meta["event_id"]),
            position=int(meta["position"]),
            kind=meta["kind"],
            event_type=str(meta["event_type"]),
            text=document or "",
            occurred_at=datetime.fromisoformat(str(meta["occurred_at"])),
            confidence=float(meta["confidence"]),
            chunk=int(meta.get("chunk", 0)),
            chunks=int(meta.get("chunks", 1)),
            summarises=tuple(json.loads(str(meta["summarises"]))) if meta.get("summarises") else (),
            corrects=str(meta["corrects"]) if meta.get("corrects") else None,
        )


class Recalled(BaseModel):
    """A recalled memory with its relevance; field names match agents' `RecalledMemory` (id, kind, text,
    occurred_at, score), the rest is provenance for "Why?"."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: Kind
    text: str
    occurred_at: datetime
    score: float
    customer_id: str
    event_id: str
    position: int
    confidence: float
    summarises: tuple[str, ...] = ()

    @classmethod
    def of(cls, record: MemoryRecord, score: float) -> Recalled:
        return cls(
            id=record.id,
            kind=record.kind,
            text=record.text,
            occurred_at=record.occurred_at,
            score=score,
            customer_id=record.customer_id,
            event_id=record.event_id,
            position=record.position,
            confidence=record.confidence,
            summarises=record.summarises,
        )
