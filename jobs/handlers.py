"""The handler table: which handlers react to each event type, declared once, run by every process.

`EVENT_HANDLERS` maps an event type to the names of its handlers, in the order they run (memory first,
so an agent recalls what the triggering event just added); `HANDLERS` maps each name to its function.
A process that runs jobs runs this table whatever command started it (cosmicpython's EVENT_HANDLERS).

Processing is tracked per (handler, event) in `handled_events` (pyeventsourcing's tracking rows): a
handler that raised leaves no row and runs again on the retry; a paused agent answers DEFERRED and
leaves no row either, so `catch_up` finds its events when it is resumed; a handler added later finds
the recent events it never saw with `catch_up` at the next start (`CATCH_UP_HORIZON`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, exists, insert, select
from sqlalchemy.exc import IntegrityError

from store import events as ev
from store import lifecycle as lc
from store import tables as t
from store.log import to_event

if TYPE_CHECKING:
    from jobs.context import JobContext

log = logging.getLogger(__name__)

MEMORY = "memory"
# Agent handlers are named after their roles (agents.roles); pausing an agent pauses its handler.
INBOX_TRIAGE = "inbox_triage"
LEAD_QUALIFICATION = "lead_qualification"
RENEWAL_NUDGES = "renewal_nudges"
BILLING_MONITOR = "billing_monitor"
MEMORY_CURATOR = "memory_curator"
# The agents, by the names `/pause` and `/resume` take.
AGENTS = (INBOX_TRIAGE, LEAD_QUALIFICATION, RENEWAL_NUDGES, BILLING_MONITOR, MEMORY_CURATOR)
# Queues the execution of an approval, a retry or a resend (the tap's process queues it too, under the
# same job id: this one matters when that job was lost).
EXECUTOR = "executor"
# Withdraws the reply proposals of a thread the operator answered from their own mail client.
ANSWERED = "answered_outside"
# Teaches the triage classifier an operator's correction ("Wrong intent → …", "Spam", "Not spam").
CLASSIFIER = "classifier"
# Tells the operator of a merge identity resolution made through a strong key, with Undo.
IDENTITY = "identity"

EVENT_HANDLERS: Mapping[str, tuple[str, ...]] = {
    "message.received": (MEMORY, INBOX_TRIAGE, MEMORY_CURATOR),
    "message.sent": (MEMORY, ANSWERED),
    "lead.created": (MEMORY, LEAD_QUALIFICATION),
    "lead.quiet": (MEMORY,),
    "invoice.created": (MEMORY,),
    "invoice.overdue": (MEMORY, BILLING_MONITOR),
    "invoice.paid": (MEMORY, BILLING_MONITOR),
    "subscription.created": (MEMORY,),
    "subscription.updated": (MEMORY,),
    "subscription.renewal_due": (MEMORY, RENEWAL_NUDGES),
    "subscription.cancelled": (MEMORY,),
    "customer.created": (MEMORY,),
    "customer.updated": (MEMORY,),
    # A same-name or same-domain pair: the curator asks "Merge / Not the same?".
    "customer.possible_duplicate": (MEMORY_CURATOR,),
    "customer.merged": (IDENTITY,),
    "note.added": (MEMORY, MEMORY_CURATOR),
    "stage.changed": (MEMORY,),
    "correction.recorded": (MEMORY,),
    "memory.summarised": (MEMORY,),
    "memory.corrected": (MEMORY,),
    "memory.forgotten": (MEMORY,),
    "intent.corrected": (CLASSIFIER,),
    "proposal.decided": (EXECUTOR,),
    "action.resolved": (EXECUTOR,),
}

# A handler that was not there when an event was processed (added in a later release) handles events
# up to this old at the next start; older ones would only make stale proposals.
CATCH_UP_HORIZON = timedelta(days=7)
# Events handled per catch-up round trip.
CATCH_UP_BATCH = 200
# Marks events processed before tracking was per handler: every handler of the time saw them.
ALL_HANDLERS = "*"


class Handled(StrEnum):
    """What a handler did with an event."""

    DONE = "done"  # recorded: never run again for this event
    DEFERRED = "deferred"  # not recorded: its agent is paused; `catch_up` runs it on resume


Handler = Callable[[ev.Event, "JobContext"], Handled | None]


def remember(event: ev.Event, ctx: JobContext) -> Handled:
    """The memory projection applies the log up to this event (it tracks its own position)."""
    ctx.memory.projection.catch_up(ctx.store)
    return Handled.DONE


def run_agent(agent: str, event: ev.Event, ctx: JobContext) -> Handled:
    """One agent's proposals for the event, recorded and routed; DEFERRED while the agent is paused."""
    from jobs.propose import propose_for

    with ctx.store.engine.connect() as connection:
        paused = lc.paused_agents(connection)
    if agent in paused or "*" in paused:
        log.info("%s is paused; %s waits for its resume", agent, event.id)
        return Handled.DEFERRED
    propose_for(ctx, agent, event)
    return Handled.DONE


def queue_execution(event: ev.Event, ctx: JobContext) -> Handled:
    """An approval (by a person or the policy), a retry or a resend: queue the proposal's execution."""
    from jobs.execute import schedule_execution
    from store import proposals as sp

    payload = event.payload
    rejected = isinstance(payload, sp.ProposalDecided) and payload.decision == "rejected"
    kept = isinstance(payload, sp.ActionResolved) and payload.choice == "keep"
    if not (rejected or kept):
        schedule_execution(ctx, event.stream)
    return Handled.DONE


def announce_merge(event: ev.Event, ctx: JobContext) -> Handled:
    """An automatic merge (a shared strong key) is posted to the operator with Undo."""
    from jobs.reconcile import announce_merge as announce

    announce(event, ctx)
    return Handled.DONE


def learn_correction(event: ev.Event, ctx: JobContext) -> Handled:
    """The classifier of this process uses an operator's correction from now on."""
    from jobs.classified import learn_correction as learn

    learn(event, ctx)
    return Handled.DONE


def withdraw_answered(event: ev.Event, ctx: JobContext) -> Handled:
    """The operator replied in the thread themselves: its undecided reply proposals are withdrawn."""
    from jobs.answered import withdraw_answered as withdraw

    withdraw(event, ctx)
    return Handled.DONE


HANDLERS: Mapping[str, Handler] = {
    MEMORY: remember,
    CLASSIFIER: learn_correction,
    ANSWERED: withdraw_answered,
    EXECUTOR: queue_execution,
    IDENTITY: announce_merge,
    INBOX_TRIAGE: partial(run_agent, INBOX_TRIAGE),
    LEAD_QUALIFICATION: partial(run_agent, LEAD_QUALIFICATION),
    RENEWAL_NUDGES: partial(run_agent, RENEWAL_NUDGES),
    BILLING_MONITOR: partial(run_agent, BILLING_MONITOR),
    MEMORY_CURATOR: partial(run_agent, MEMORY_CURATOR),
}


def handlers_of(event_type: str) -> tuple[str, ...]:
    """The names of the handlers that react to an event type, in the order they run."""
    return EVENT_HANDLERS.get(event_type, ())


def types_of(handler: str) -> list[str]:
    """The event types a handler reacts to."""
    return [event_type for event_type, names in EVENT_HANDLERS.items() if handler in names]


def handled_by(connection: Connection, event_id: str) -> set[str]:
    """The handlers recorded as having handled an event ("*": all of them, before per-handler tracking)."""
    h = t.handled_events.c
    return set(connection.execute(select(h.handler).where(h.event_id == event_id)).scalars())


def record_handled(ctx: JobContext, handler: str, event: ev.Event, outcome: str = Handled.DONE) -> None:
    """Record that `handler` is done with `event` (a second record, from a racing worker, is a no-op)."""
    try:
        with ctx.store.engine.begin() as connection:
            connection.execute(
                insert(t.handled_events).values(
                    handler=handler,
                    event_id=event.id,
                    position=event.position,
                    outcome=str(outcome),
                    handled_at=ev.utcnow(),
                )
            )
    except IntegrityError:
        log.info("%s handled %s concurrently in another worker", handler, event.id)


def run_handlers(
    ctx: JobContext, event: ev.Event, handlers: Mapping[str, Handler] | None = None
) -> list[str]:
    """Run every handler of the event that has not handled it yet; returns the deferred ones' names.

    A handler that raises stops the run (the job is retried with backoff); those before it keep their
    records and are not run again.
    """
    table = handlers if handlers is not None else ctx.handlers
    with ctx.store.engine.connect() as connection:
        done = handled_by(connection, event.id)
    deferred: list[str] = []
    if ALL_HANDLERS in done:
        return deferred
    for name in handlers_of(event.type):
        if name in done:
            continue
        handler = table.get(name)
        if handler is None:
            continue
        if handler(event, ctx) is Handled.DEFERRED:
            deferred.append(name)
            continue
        record_handled(ctx, name, event)
    return deferred


def unhandled(connection: Connection, handler: str, since: datetime, limit: int) -> list[ev.Event]:
    """Events of the handler's types recorded since `since` that it has not handled, oldest first."""
    e, h = t.events.c, t.handled_events.c
    seen = exists().where(
        and_(h.event_id == e.id, h.handler.in_([handler, ALL_HANDLERS])),
    )
    rows = connection.execute(
        select(t.events)
        .where(e.type.in_(types_of(handler)), e.recorded_at >= since, ~seen)
        .where(exists().where(t.processed_events.c.event_id == e.id))  # the live path is done with it
        .order_by(e.position)
        .limit(limit)
    ).all()
    return [to_event(row._mapping) for row in rows]


def catch_up(ctx: JobContext, handler: str, since: datetime | None = None) -> int:
    """Run a handler on every event it missed since `since` (default: CATCH_UP_HORIZON ago).

    Returns how many events it handled; stops early when the handler defers (its agent is paused).
    """
    since = since or ev.utcnow() - CATCH_UP_HORIZON
    function = ctx.handlers.get(handler)
    if function is None:
        return 0
    count = 0
    while True:
        with ctx.store.engine.connect() as connection:
            batch = unhandled(connection, handler, since, CATCH_UP_BATCH)
        if not batch:
            return count
        for event in batch:
            if function(event, ctx) is Handled.DEFERRED:
                return count
            record_handled(ctx, handler, event)
            count += 1


def catch_up_handler(handler: str, since_iso: str | None = None) -> int:
    """Job function: `catch_up` with the installed context (queued on resume and at start)."""
    from jobs.context import current

    since = datetime.fromisoformat(since_iso) if since_iso else None
    handled = catch_up(current(), handler, since)
    if handled:
        log.info("%s caught up on %d event(s)", handler, handled)
    return handled


def catch_up_all(ctx: JobContext) -> dict[str, int]:
    """Every handler catches up on the recent events it missed (a start of `crm worker` / `crm run`)."""
    return {name: catch_up(ctx, name) for name in ctx.handlers}
