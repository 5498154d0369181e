"""The memory layer's own event types: roll-ups, corrections and forget requests, recorded in the log.

They are events (not direct writes to Chroma) so that `crm replay --memory` rebuilds exactly the same
collection: a summary, what it archived and what a privacy request removed all come back from the log.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from store.events import Payload

# Long enough for a curator's roll-up of a year of messages, short enough to stay one log row.
MAX_SUMMARY_CHARS = 20_000


class MemorySummarised(Payload):
    """A roll-up of some memories of one customer (the event's stream); the listed ones are archived."""

    text: str = Field(min_length=1, max_length=MAX_SUMMARY_CHARS)
    summarises: tuple[str, ...] = Field(min_length=1)  # memory ids (event id + chunk) rolled up
    period_start: datetime
    period_end: datetime
    author: str = "retention"


class MemoryCorrected(Payload):
    """The operator corrects what the CRM remembers (e.g. "she left Acme in March")."""

    text: str = Field(min_length=1, max_length=MAX_SUMMARY_CHARS)
    corrects: str | None = None  # the event id whose memory this corrects, when there is one
    author: str = "operator"


class MemoryForgotten(Payload):
    """A privacy request: every memory of the customer (the event's stream) recorded so far is removed."""

    reason: str = "privacy request"
    customers: tuple[str, ...] = ()  # other ids merged into this customer at the time, forgotten too


MEMORY_EVENT_TYPES: dict[str, type[Payload]] = {
    "memory.summarised": MemorySummarised,
    "memory.corrected": MemoryCorrected,
    "memory.forgotten": MemoryForgotten,
}
