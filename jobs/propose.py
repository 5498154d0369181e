"""The subscriber that turns a signal into proposals: context → agents → policy → record → act or ask.

Idempotent per event: proposals are recorded under keys derived from the event, agent and position,
posting skips surfaces that already show the proposal, and the auto-approval is a compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from agents.context import AgentContext, Correction, RecalledMemory, build_context
from agents.drafting import MEMORIES_IN_PROMPT
from agents.proposal import Draft, Source
from jobs.classified import append_classified, learn_corrections
from jobs.context import JobContext
from jobs.execute import schedule_execution
from jobs.proposal_service import auto_approve, schedule_wake
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.projector import canonical_id
from store.slice import group_of
from store.state import SqlState

log = logging.getLogger(__name__)

# How much recalled memory text an agent gets: a few paragraphs, cheap to send to a model.
MEMORY_BUDGET_CHARS = 4_000
CORRECTIONS_IN_CONTEXT = 10
# Events of the log's own (not signals from outside) an agent proposes on: a possible duplicate asks
# the curator for a merge proposal.
AGENT_EVENT_TYPES = frozenset({"customer.possible_duplicate"})


def corrections_of(connection: Any, customer_id: str) -> list[Correction]:
    """The operator's corrections for a customer (and everyone merged into them), newest first."""
    found = []
    for event in lc.corrections_for(
        connection, group_of(connection, customer_id), limit=CORRECTIONS_IN_CONTEXT
    ):
        p = event.payload
        assert isinstance(p, sp.CorrectionRecorded)
        found.append(
            Correction(
                kind=p.kind,
                original=Draft(**p.original) if p.original and p.original.get("body") is not None else None,
                edited=Draft(**p.edited) if p.edited and p.edited.get("body") is not None else None,
                rejection_reason=p.rejection_reason,
                at=event.occurred_at,
                agent=p.agent,
                customer_id=customer_id,
                proposal_id=p.proposal_id,
            )
        )
    return found


def recalled(memory: Any, customer_id: str, query: str) -> list[RecalledMemory]:
    """Memories for the context, or none when there is no memory or it fails (agents carry on)."""
    if memory is None or not query.strip():
        return []
    try:
        found = memory.context_memories(customer_id, query, MEMORY_BUDGET_CHARS)
    except Exception:
        log.exception("memory recall failed for %s; proposing without memories", customer_id)
        return []
    return [
        RecalledMemory(id=m.id, kind=m.kind, text=m.text, occurred_at=m.occurred_at, score=m.score)
        for m in found
    ]


def agent_context(ctx: JobContext, event: ev.Event) -> AgentContext | None:
    """The agents' context for this event: slice, history, corrections and recalled memories."""
    with ctx.store.engine.connect() as connection:
        customer_id = canonical_id(SqlState(connection), event.stream)
    # Recall before opening the connection the context is built on: the memory layer may use the
    # database itself, and SQLite allows one writer-transaction at a time.
    query = getattr(event.payload, "text", None) or event.type
    memories = recalled(ctx.memory, customer_id, query)
    with ctx.store.engine.connect() as connection:
        corrections = corrections_of(connection, customer_id)
        return build_context(
            connection,
            event,
            customer_id,
            memories=memories,
            corrections=corrections,
            operator_timezone=ctx.settings.crm_timezone,
            webhook_url=ctx.settings.crm_webhook_url,
        )


def propose_for(ctx: JobContext, agent: str, event: ev.Event) -> list[str]:
    """One agent's proposals for a signal, recorded and routed; returns their ids."""
    if event.type not in ev.SIGNAL_TYPES and event.type not in AGENT_EVENT_TYPES:
        return []
    if agent == "inbox_triage":
        learn_corrections(ctx.store)
    context = agent_context(ctx, event)
    if context is None:
        return []
    reviewed_all = ctx.runtime.propose(context, only=agent)
    if agent == "inbox_triage":
        append_classified(ctx.store, event, reviewed_all)  # the audit record "Why?" shows
    return [route(ctx, event, index, reviewed, context) for index, reviewed in enumerate(reviewed_all)]


def with_memory_sources(proposal: Any, context: AgentContext) -> Any:
    """A model-written draft was given the first recalled memories (agents.drafting): list them as its
    sources, so "Why?" shows them; a template used none. Sources the agent listed itself stay."""
    if proposal.drafted_from_template or not context.memories:
        return proposal
    if any(source.kind == "memory" for source in proposal.sources):
        return proposal
    used = tuple(Source(kind="memory", id=m.id) for m in context.memories[:MEMORIES_IN_PROMPT])
    return proposal.model_copy(update={"sources": (*proposal.sources, *used)})


def route(ctx: JobContext, event: ev.Event, index: int, reviewed: Any, context: AgentContext) -> str:
    """Record one reviewed proposal; auto-approve and queue it, or post it for a decision.

    A proposal the policy holds (quiet hours, caps) is posted at once saying when it would be sent;
    one held to run automatically wakes by a job queued for the end of the hold.
    """
    settings, store = ctx.settings, ctx.store
    proposal, verdict = reviewed.proposal, reviewed.verdict
    if proposal.event_id is None:
        proposal = proposal.model_copy(update={"event_id": event.id})
    proposal = with_memory_sources(proposal, context)
    rules = [f"{rule.name}: {rule.explanation}" for rule in verdict.rules]
    pid, _ = lc.record_proposal(
        store,
        proposal.model_dump(mode="json"),
        verdict=verdict.decision,
        rules=rules,
        key=f"proposal:{event.id}:{proposal.agent}:{index}",
        refusal="; ".join(rules) if verdict.decision == "refused" else None,
        expires_at=context.now + timedelta(hours=settings.proposal_ttl_hours),
        not_before=verdict.not_before,
        then=getattr(verdict, "then", None),
        correlation_id=event.correlation_id or event.id,
    )
    if verdict.decision == "refused":
        log.info("policy refused %s from %s: %s", proposal.kind, proposal.agent, rules)
        return pid
    if verdict.decision == "deferred" and verdict.not_before is not None:
        schedule_wake(ctx.queue, pid, verdict.not_before)
    if verdict.decision == "auto" and auto_approve(store, pid, settings.undo_window_seconds, ev.utcnow()):
        schedule_execution(ctx, pid)
    ctx.notifier.post(pid)
    return pid
