"""What an agent returns: a proposed action, never the action itself (DESIGN.md invariant 6)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Every action kind the system knows. A role declares the subset it may propose.
ActionKind = Literal[
    "send_email",  # params: to, subject, body, in_reply_to?, references?
    "send_chat_reply",  # params: surface (slack|telegram), chat/channel id, text
    "post_webhook",  # params: url, json
    "create_task",  # params: title, due_date?
    "add_note",  # params: text
    "change_stage",  # params: stage
    "escalate",  # params: reason — puts it in front of the operator
    "merge_customers",  # params: into, merged, reason
    "offer_discount",  # params: percent | amount_cents, reason — always needs approval
    "issue_refund",  # params: invoice_id, amount_cents, reason — always needs approval
]

ACTION_KINDS: tuple[str, ...] = get_args(ActionKind)
# Each kind as a person says it after "not allowed to approve …" (OPERATORS rights).
KIND_NOUNS: dict[str, str] = {
    "send_email": "emails",
    "send_chat_reply": "chat replies",
    "post_webhook": "webhook calls",
    "create_task": "tasks",
    "add_note": "notes",
    "change_stage": "stage changes",
    "escalate": "escalations",
    "merge_customers": "merges",
    "offer_discount": "discounts",
    "issue_refund": "refunds",
}

OUTBOUND_KINDS: frozenset[str] = frozenset({"send_email", "send_chat_reply", "post_webhook"})
MONEY_KINDS: frozenset[str] = frozenset({"offer_discount", "issue_refund"})


class Draft(BaseModel):
    """The text as it will be sent, for kinds that send something."""

    model_config = ConfigDict(frozen=True)
    subject: str | None = None
    body: str


class Cost(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str | None = None  # None: drafted from template, no model call
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0


class Source(BaseModel):
    """Something the agent used: an event or a memory, by id."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["event", "memory", "correction", "rule"]
    id: str
    note: str | None = None


class Proposal(BaseModel):
    """One proposed action with everything a person needs to decide on it."""

    model_config = ConfigDict(frozen=True)
    agent: str
    kind: ActionKind
    customer_id: str
    params: dict[str, Any] = Field(default_factory=dict)
    draft: Draft | None = None
    rationale: str = Field(max_length=500)
    sources: tuple[Source, ...] = ()
    confidence: float = Field(ge=0.0, le=1.0)
    cost: Cost = Field(default_factory=Cost)
    drafted_from_template: bool = True
    event_id: str | None = None  # the event that prompted it
