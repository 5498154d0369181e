"""A merge identity resolution made on its own (two records shared a strong key) is told to the operator.

The merge has already happened when the signal was recorded (who a signal is about cannot wait for a
tap), so it is posted as a `merge_customers` proposal the identity rule approved: the executor finds
the two already merged and records how to undo it, and the card carries Undo on every surface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.proposal import Proposal, Source
from jobs.execute import schedule_execution
from jobs.proposal_service import auto_approve
from store import events as ev
from store import lifecycle as lc

if TYPE_CHECKING:
    from jobs.context import JobContext

# The agent an automatic merge is shown as proposed by, and the rule it followed.
IDENTITY = "identity"
STRONG_KEY_RULE = "identity: a strong key (email, phone, chat handle, external id) names both customers"


def announce_merge(event: ev.Event, ctx: JobContext) -> list[str]:
    """Post an automatic merge with Undo; returns the proposal id (none for merges a proposal made)."""
    payload = event.payload
    if event.source == "executor" or not isinstance(payload, ev.CustomerMerged):
        return []  # an approved merge proposal made it: its own card already shows it
    proposal = Proposal(
        agent=IDENTITY,
        kind="merge_customers",
        customer_id=event.stream,
        params={"into": event.stream, "merged": payload.merged, "reason": payload.reason},
        rationale=f"Merged automatically: {payload.reason}"[:500],
        sources=(Source(kind="event", id=event.id),),
        confidence=1.0,
        event_id=event.id,
    )
    pid, duplicate = lc.record_proposal(
        ctx.store,
        proposal.model_dump(mode="json"),
        verdict="auto",
        rules=[STRONG_KEY_RULE],
        key=f"merged:{event.id}",
        correlation_id=event.correlation_id or event.id,
    )
    if not duplicate and auto_approve(ctx.store, pid, ctx.settings.undo_window_seconds, ev.utcnow()):
        schedule_execution(ctx, pid)
    ctx.notifier.post(pid)
    return [pid]
