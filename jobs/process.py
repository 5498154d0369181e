"""process_event: the job every dispatched event gets (hand it to the subscribers, then record it).

The customer is already resolved when the event is appended (`Transaction.record_signal` writes the
event on the resolved customer's stream, creating or merging customers in the same transaction), so
processing does not resolve again: `event.stream` is the canonical customer id at append time.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from jobs.context import JobContext, current
from jobs.handlers import run_handlers
from store import tables as t
from store.events import utcnow

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    PROCESSED = "processed"
    ALREADY_PROCESSED = "already processed"


class EventMissing(LookupError):
    """A job names an event the log does not hold (a wrong database, or a hand-made job)."""


def process_event(event_id: str) -> str:
    """RQ job: process one event with the installed JobContext; a second run is a no-op."""
    return handle_event(current(), event_id).value


def handle_event(ctx: JobContext, event_id: str) -> Outcome:
    """Run the event's handlers (jobs.handlers' table), then record the event as processed.

    Each handler's work is recorded as it finishes, so a retry after a failure runs only those left.
    Recording the event inserts the processed_events row and deletes the outbox row in one
    transaction; a paused agent's handler is left unrecorded and catches up when the agent resumes.
    An event already recorded returns at once; if two workers race on the same event, the loser's
    insert collides and it reports ALREADY_PROCESSED (handlers are idempotent, so its work was harmless).
    """
    if is_processed(ctx, event_id):
        return Outcome.ALREADY_PROCESSED
    event = ctx.store.get(event_id)
    if event is None:
        raise EventMissing(f"event {event_id} is not in the log")
    run_handlers(ctx, event)
    try:
        with ctx.store.engine.begin() as connection:
            connection.execute(delete(t.outbox).where(t.outbox.c.event_id == event_id))
            connection.execute(
                insert(t.processed_events).values(
                    event_id=event_id, position=event.position, processed_at=utcnow()
                )
            )
    except IntegrityError:
        log.info("event %s was processed concurrently by another worker", event_id)
        return Outcome.ALREADY_PROCESSED
    return Outcome.PROCESSED


def is_processed(ctx: JobContext, event_id: str) -> bool:
    """Whether processing of the event has been recorded."""
    pe = t.processed_events.c
    with ctx.store.engine.connect() as connection:
        found = connection.execute(select(pe.event_id).where(pe.event_id == event_id)).first()
    return found is not None
