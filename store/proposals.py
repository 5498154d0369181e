"""Proposal, decision and action events (their projection handlers: `store.proposal_projection`).

A proposal's events live on its own stream (`prp_…`); corrections go on the customer's stream so the
memory projection and the next agent context find them. Every value a handler writes comes from the
event, so `crm replay` rebuilds the same rows.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from store import events as ev
from store import tables as t
from store.state import register_table

# Proposal states from which a human decision (approve, edit, reject, snooze) may be taken.
DECIDABLE = frozenset({"pending"})


def new_proposal_id() -> str:
    """`prp_` + milliseconds + randomness (24 characters; fits Telegram's 64-byte callback data)."""
    return f"prp_{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


_PROPOSAL_ID = re.compile(r"prp_[0-9a-f]{20}")


def is_proposal_id(text: str) -> bool:
    """Whether text is a whole proposal id as new_proposal_id makes them (a button's, not typed)."""
    return _PROPOSAL_ID.fullmatch(text) is not None


class ProposalRecorded(ev.Payload):
    """An agent's proposal as the policy judged it. `proposal` is `agents.proposal.Proposal` as JSON."""

    proposal: dict[str, Any]
    verdict: Literal["auto", "approval", "refused", "deferred"]
    rules: list[str] = Field(default_factory=list)
    refusal: str | None = None
    expires_at: datetime | None = None
    not_before: datetime | None = None  # deferred by policy until then
    then: Literal["auto", "approval"] | None = None  # what a deferred proposal becomes at not_before


class ProposalDecided(ev.Payload):
    """The one decision on a proposal (its idempotency key is unique per proposal)."""

    decision: Literal["approved", "edited", "rejected", "auto"]
    by: str  # "surface:id", or "policy" for auto
    by_name: str | None = None
    surface: str | None = None
    reason: str | None = None
    approved: dict[str, Any] | None = None  # {"params": …, "draft": …} as it will be executed
    not_before: datetime | None = None  # end of the undo window


class ProposalExpired(ev.Payload):
    note: str = "expired without a decision; nothing was sent"


class ProposalWithdrawn(ev.Payload):
    """The proposal became moot before anyone decided: the operator answered the thread themselves."""

    reason: str
    message_event_id: str  # the message.sent that answered it


class ProposalSnoozed(ev.Payload):
    until: datetime
    by: str
    by_name: str | None = None
    surface: str | None = None


class ProposalWoke(ev.Payload):
    expires_at: datetime | None = None


class ProposalReminded(ev.Payload):
    """The operator was reminded that a pending proposal expires soon (once per expiry time)."""

    expires_at: datetime
    surfaces: list[str] = Field(default_factory=list)  # where the reminder went


class DecisionRefused(ev.Payload):
    """Somebody not on OPERATORS tried to decide; logged, nothing changed."""

    by: str
    by_name: str | None = None
    surface: str | None = None
    action: str
    reason: str


class ProposalUndone(ev.Payload):
    by: str
    by_name: str | None = None
    surface: str | None = None
    how: Literal["cancelled", "compensated"]


class ProposalMessagePosted(ev.Payload):
    surface: str
    chat_id: str
    message_id: str


class ActionStarted(ev.Payload):
    """Checkpoint written before a connector is called."""

    attempt: int = Field(ge=1)
    connector: str
    idempotency_key: str
    lease_until: datetime


class ActionHandover(ev.Payload):
    """Checkpoint written just before the step that cannot be taken back (SMTP DATA, a chat send)."""

    attempt: int = Field(ge=1)


class ActionExecuted(ev.Payload):
    attempt: int = Field(ge=1)
    reference: str | None = None
    compensation: dict[str, Any] | None = None  # how to undo it (internal updates)


class ActionFailed(ev.Payload):
    attempt: int = Field(ge=1)
    error: str
    retryable: bool  # True: the operator may press Retry


class ActionUncertain(ev.Payload):
    """A crash left the outcome unknown and the connector cannot deduplicate: "may have been sent"."""

    attempt: int = Field(ge=1)
    note: str


class ActionResolved(ev.Payload):
    """The operator's answer to "may have been sent", a Retry after a failure, or an edited copy sent
    in a failed one's place (`superseded`: the failed one is closed, never retried)."""

    choice: Literal["resend", "keep", "retry", "superseded"]
    by: str
    by_name: str | None = None
    surface: str | None = None


class AgentPaused(ev.Payload):
    agent: str  # "*" for every agent
    paused: bool
    by: str


class CorrectionRecorded(ev.Payload):
    """What the operator changed or refused, for this customer and action kind (memory reads it)."""

    proposal_id: str
    agent: str
    kind: str
    original: dict[str, Any] | None = None  # the draft as proposed ({"subject", "body"})
    edited: dict[str, Any] | None = None  # the draft as approved; None for a rejection
    params_before: dict[str, Any] = Field(default_factory=dict)
    params_after: dict[str, Any] | None = None
    rejection_reason: str | None = None
    by: str
    text: str  # one sentence a person or a model can read


class NoteRetracted(ev.Payload):
    """Compensates a note added by an action."""

    note_id: str
    reason: str


class TaskCancelled(ev.Payload):
    """Compensates a task created by an action."""

    task_id: str
    reason: str


EVENT_MODELS: dict[str, type[ev.Payload]] = {
    "proposal.recorded": ProposalRecorded,
    "proposal.decided": ProposalDecided,
    "proposal.expired": ProposalExpired,
    "proposal.snoozed": ProposalSnoozed,
    "proposal.withdrawn": ProposalWithdrawn,
    "proposal.woke": ProposalWoke,
    "proposal.reminded": ProposalReminded,
    "proposal.undone": ProposalUndone,
    "proposal.message_posted": ProposalMessagePosted,
    "decision.refused": DecisionRefused,
    "action.started": ActionStarted,
    "action.handover": ActionHandover,
    "action.executed": ActionExecuted,
    "action.failed": ActionFailed,
    "action.uncertain": ActionUncertain,
    "action.resolved": ActionResolved,
    "agent.paused": AgentPaused,
    "correction.recorded": CorrectionRecorded,
    "note.retracted": NoteRetracted,
    "task.cancelled": TaskCancelled,
}

# The events that end an attempt: what the operator is shown as its outcome.
RESULTS = frozenset({"action.executed", "action.failed", "action.uncertain"})

for _table in (t.proposals, t.counters, t.proposal_messages, t.actions, t.agent_pauses):
    register_table(_table)
