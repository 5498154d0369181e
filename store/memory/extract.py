"""What each event contributes to memory: kind, text and confidence. Pure functions of the event.

Later layers add their own (e.g. the job pipeline's `action.executed` as an outcome) with
`register_extractor`; an event type with no extractor leaves no memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from store import events as ev
from store.memory.events import MemoryCorrected, MemorySummarised
from store.memory.records import Kind

# A roll-up is a paraphrase: it may drop or blur a detail, so it ranks as less certain than the raw
# text it came from unless its author says otherwise (the event's confidence).
SUMMARY_CONFIDENCE = 0.8


@dataclass(frozen=True)
class Extracted:
    kind: Kind
    text: str
    confidence: float = 1.0
    summarises: tuple[str, ...] = ()
    corrects: str | None = None


Extractor = Callable[[ev.Event], Extracted | None]
EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(event_type: str, extractor: Extractor) -> None:
    """Make events of this type leave a memory (later layers: outcomes of executed actions)."""
    EXTRACTORS[event_type] = extractor


def extract(event: ev.Event) -> Extracted | None:
    """The memory an event leaves, or None."""
    extractor = EXTRACTORS.get(event.type)
    found = extractor(event) if extractor is not None else None
    if found is None or not found.text.strip():
        return None
    if event.confidence is not None:
        return Extracted(found.kind, found.text, event.confidence, found.summarises, found.corrects)
    return found


def _signal(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, ev.Signal)
    if not p.text or not p.text.strip():
        return None
    data = p.typed_data()
    subject = data.subject if isinstance(data, ev.MessageData) else None
    return Extracted("message", f"Subject: {subject}\n\n{p.text}" if subject else p.text)


def _note(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, ev.NoteAdded)
    return Extracted("note", p.text)


def _customer_notes(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, ev.CustomerCreated | ev.CustomerUpdated)
    return Extracted("note", p.notes) if p.notes else None


def _stage(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, ev.StageChanged)
    return Extracted("outcome", f"Stage changed to {p.stage}: {p.reason}") if p.reason else None


def _summary(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, MemorySummarised)
    return Extracted("summary", p.text, SUMMARY_CONFIDENCE, summarises=p.summarises)


def _correction(event: ev.Event) -> Extracted | None:
    p = event.payload
    assert isinstance(p, MemoryCorrected)
    return Extracted("correction", p.text, corrects=p.corrects)


for _type in ev.SIGNAL_TYPES:
    register_extractor(_type, _signal)
register_extractor("note.added", _note)
register_extractor("customer.created", _customer_notes)
register_extractor("customer.updated", _customer_notes)
register_extractor("stage.changed", _stage)
register_extractor("memory.summarised", _summary)
register_extractor("memory.corrected", _correction)
