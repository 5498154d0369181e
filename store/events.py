"""Event payloads: versioned pydantic models, the type registry and the upcasters for old versions.

A payload is validated when it is written; what is read back is upcast to the current version first,
so stored rows are never rewritten (DESIGN.md invariant 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

STAGES = ("lead", "qualified", "trial", "customer", "at_risk", "churned")


class Payload(BaseModel):
    """Base of every event payload. VERSION is the schema version written today."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    VERSION: ClassVar[int] = 1


class ContactPoint(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["email", "phone", "slack", "telegram", "external"]
    value: str


class CustomerRef(BaseModel):
    """Who a signal is about, as the outside world names them; at least one field."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    company: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=255)
    slack: str | None = Field(default=None, max_length=64)
    telegram: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _at_least_one(self, info: ValidationInfo) -> CustomerRef:
        if not is_trusted(info) and not any(getattr(self, name) for name in type(self).model_fields):
            raise ValueError("customer needs at least one of name, email, company, phone, external_id")
        return self


def to_cents(value: Any) -> int:
    """Money given in major units (`"49.90"`, 49.9) as integer cents; refuses NaN and fractions of a cent."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not an amount") from exc
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{value!r} has fractions of a cent")
    return int(cents)


class _Money(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    amount: Decimal | None = None
    amount_cents: int | None = None
    currency: str = Field(default="usd", min_length=3, max_length=3)

    @field_validator("currency")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    def cents(self) -> int:
        if self.amount_cents is not None:
            return self.amount_cents
        return to_cents(self.amount) if self.amount is not None else 0


class InvoiceData(_Money):
    invoice_id: str = Field(min_length=1, max_length=128)
    due_date: date | None = None


# Billing periods in a year, per recurring interval (Stripe's names): what turns a period's amount into MRR.
PERIODS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}


class SubscriptionData(_Money):
    subscription_id: str | None = Field(default=None, max_length=128)
    plan: str | None = Field(default=None, max_length=128)
    renews_on: date | None = None
    # The amount is billed every `interval_count` `interval`s (day, week, month, year); missing: monthly.
    # Lenient on purpose: events already in the log are replayed with this model.
    interval: str | None = None
    interval_count: int | None = None

    def monthly_cents(self) -> int:
        """What the subscription bills per month (its MRR): the period's amount spread over a year's
        months. An interval this does not know counts as monthly, as it did before intervals were read."""
        periods = PERIODS_PER_YEAR.get((self.interval or "month").strip().lower(), 12)
        per_year = Decimal(self.cents()) * periods / max(self.interval_count or 1, 1)
        return int((per_year / 12).to_integral_value(rounding=ROUND_HALF_UP))


class MessageData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    channel: str = "email"
    subject: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    thread_id: str | None = None


class Signal(Payload):
    """A customer signal from outside (DESIGN.md "Signal body"), as recorded in the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    customer: CustomerRef
    text: str | None = Field(default=None, max_length=200_000)
    data: dict[str, Any] = Field(default_factory=dict)

    # The model that validates `data` for this signal type, if any.
    DATA_MODEL: ClassVar[type[BaseModel] | None] = None

    @model_validator(mode="after")
    def _data_is_valid(self, info: ValidationInfo) -> Signal:
        if self.DATA_MODEL is not None and not is_trusted(info):
            self.DATA_MODEL.model_validate(self.data)
        return self

    def typed_data(self) -> Any:
        return self.DATA_MODEL.model_validate(self.data) if self.DATA_MODEL else self.data


class LeadCreated(Signal):
    pass


class MessageReceived(Signal):
    DATA_MODEL = MessageData


class MessageSent(Signal):
    """A message the operator sent themselves (their own mail client): an outbound touch."""

    DATA_MODEL = MessageData


class InvoiceSignal(Signal):
    DATA_MODEL = InvoiceData


class SubscriptionSignal(Signal):
    DATA_MODEL = SubscriptionData


class CustomerCreated(Payload):
    name: str | None = None
    company: str | None = None
    domain: str | None = None
    stage: str = "lead"
    mrr_cents: int = 0
    renewal_date: date | None = None
    notes: str | None = None
    timezone: str | None = None
    contacts: tuple[ContactPoint, ...] = ()


class CustomerUpdated(Payload):
    """Fields that changed; a field left out (None) is unchanged."""

    name: str | None = None
    company: str | None = None
    domain: str | None = None
    stage: str | None = None
    mrr_cents: int | None = None
    renewal_date: date | None = None
    notes: str | None = None
    timezone: str | None = None


class ContactAdded(Payload):
    contact: ContactPoint


class CustomerMerged(Payload):
    """`merged` becomes part of `into` (the event's stream); reversible by CustomerUnmerged."""

    merged: str
    reason: str


class CustomerUnmerged(Payload):
    merged: str
    reason: str


class PossibleDuplicate(Payload):
    other_id: str
    reason: str


class DuplicateDismissed(Payload):
    other_id: str


class NoteAdded(Payload):
    VERSION: ClassVar[int] = 2
    text: str = Field(min_length=1, max_length=20_000)
    author: str


class TaskCreated(Payload):
    task_id: str
    title: str = Field(min_length=1)
    due_date: date | None = None


class TaskCompleted(Payload):
    task_id: str


class StageChanged(Payload):
    stage: Literal["lead", "qualified", "trial", "customer", "at_risk", "churned"]
    reason: str | None = None


class DealUpdated(Payload):
    deal_id: str
    title: str
    amount_cents: int = 0
    stage: str = "open"


class MessageClassified(Payload):
    """How the triage read one inbound message: what "Why?" shows, and what corrections are checked
    against. `method` is classifier, rules (exact headers) or model; `escalation_rules` the names of
    the escalation rules that fired."""

    message_event_id: str
    intent: str
    confidence: float = Field(ge=0.0, le=1.0)
    language: str | None = None
    injection: bool = False
    escalation_rules: list[str] = Field(default_factory=list)
    method: Literal["classifier", "rules", "model"] = "classifier"
    model_version: str | None = None


# The longest message text a correction keeps as its labelled example.
MAX_CORRECTED_TEXT = 20_000


class IntentCorrected(Payload):
    """The operator's correction of a message's intent ("Wrong intent → …", "Spam", "Not spam"). The
    message text is kept with it: corrections are this deployment's labelled examples, replayable
    from the log on their own."""

    message_event_id: str
    intent: str
    previous_intent: str | None = None
    text: str = Field(default="", max_length=MAX_CORRECTED_TEXT)
    by: str | None = None


# Signal types accepted from outside, by their public name (POST /signals, `crm signal`).
SIGNAL_TYPES: dict[str, type[Signal]] = {
    "lead.created": LeadCreated,
    "lead.quiet": LeadCreated,  # emitted by the scheduler's quiet-lead scan
    "message.received": MessageReceived,
    "message.sent": MessageSent,
    "invoice.created": InvoiceSignal,
    "invoice.overdue": InvoiceSignal,
    "invoice.paid": InvoiceSignal,
    "subscription.created": SubscriptionSignal,
    "subscription.updated": SubscriptionSignal,
    "subscription.renewal_due": SubscriptionSignal,
    "subscription.cancelled": SubscriptionSignal,
}


class DigestSent(Payload):
    """The digest for a slot was claimed (written before posting, so a slot is never posted twice)."""

    slot: datetime
    pending: int
    overdue: int
    surface: str | None = None  # the surface it reached; None: every surface (before per-surface records)


# The log's own event types. The proposal lifecycle (store.proposals) and the memory layer
# (store.memory.events) declare theirs beside their models; `event_types()` joins the three lists, so
# every process reads every type whatever it imported (a replay never meets a type it does not know).
CORE_EVENT_TYPES: dict[str, type[Payload]] = {
    **SIGNAL_TYPES,
    "customer.created": CustomerCreated,
    "customer.updated": CustomerUpdated,
    "customer.contact_added": ContactAdded,
    "customer.merged": CustomerMerged,
    "customer.unmerged": CustomerUnmerged,
    "customer.possible_duplicate": PossibleDuplicate,
    "customer.duplicate_dismissed": DuplicateDismissed,
    "note.added": NoteAdded,
    "task.created": TaskCreated,
    "task.completed": TaskCompleted,
    "stage.changed": StageChanged,
    "deal.updated": DealUpdated,
    "digest.sent": DigestSent,
    "message.classified": MessageClassified,
    "intent.corrected": IntentCorrected,
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type, stored version) -> function returning the payload at version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    # note.added v1 carried the note as `body` and no author.
    ("note.added", 1): lambda p: {"text": p["body"], "author": p.get("author", "unknown")},
}


class UnknownEventType(KeyError):
    """An event type this version of the project does not know."""

    def __init__(self, event_type: str) -> None:
        super().__init__(event_type)
        self.event_type = event_type

    def __str__(self) -> str:
        return (
            f"the log holds an event of type {self.event_type!r}, which this version of chatops-crm does "
            "not know; upgrade chatops-crm to the version that wrote it"
        )


_ALL_TYPES: dict[str, type[Payload]] | None = None


def event_types() -> dict[str, type[Payload]]:
    """Every event type the project can append, by name: the one registry."""
    global _ALL_TYPES
    if _ALL_TYPES is None:
        # Imported here, not at the top: both modules build on this one.
        from store import proposals
        from store.memory import events as memory_events

        _ALL_TYPES = {
            **CORE_EVENT_TYPES,
            **proposals.EVENT_MODELS,
            **memory_events.MEMORY_EVENT_TYPES,
        }
    return _ALL_TYPES


def payload_model(event_type: str) -> type[Payload]:
    try:
        return event_types()[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def upcast(event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current version of its model."""
    target = payload_model(event_type).VERSION
    while version < target:
        payload = UPCASTERS[(event_type, version)](payload)
        version += 1
    return payload


def parse_payload(event_type: str, version: int, payload: dict[str, Any]) -> Payload:
    return payload_model(event_type).model_validate(upcast(event_type, version, payload))


# Validation context for payloads read back from the log: every row was validated in full when it was
# appended (store.log.insert_event), so checks that only guard writes — a signal's `data` against its
# data model — are skipped on the way back. Types, defaults and upcasters still apply.
TRUSTED: dict[str, Any] = {"trusted": True}


def is_trusted(info: ValidationInfo) -> bool:
    """Whether a validator runs on a payload read back from the log (see TRUSTED)."""
    return bool(info.context and info.context.get("trusted"))


def parse_stored(event_type: str, version: int, raw: str | bytes) -> Payload:
    """A payload from the log's JSON text: parsed and validated in one pass when it is current.

    Equals parse_payload(event_type, version, json.loads(raw)) for every row the log accepted
    (tests/unit/test_trusted_decoding.py); old versions are decoded to a dict and upcast first.
    """
    model = payload_model(event_type)
    if version == model.VERSION:
        return model.model_validate_json(raw, context=TRUSTED)
    return model.model_validate(upcast(event_type, version, orjson.loads(raw)), context=TRUSTED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended. The idempotency key is source + external id (invariant 2)."""

    type: str
    payload: Payload
    stream: str
    idempotency_key: str
    actor: str = "system"
    source: str = "internal"
    confidence: float | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: datetime | None = None
    id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class Event:
    """An event as recorded, with its global position."""

    position: int
    id: str
    stream: str
    type: str
    version: int
    payload: Payload
    actor: str
    source: str
    confidence: float | None
    correlation_id: str | None
    causation_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    idempotency_key: str

    @classmethod
    def of_fields(cls, fields: dict[str, Any]) -> Event:
        """The event with these fields, every one of them given with its type: built without the frozen
        dataclass's setattr per field (1.7 -> 0.2 µs; replay builds a million, docs/benchmarks.md)."""
        event = object.__new__(cls)
        event.__dict__.update(fields)
        return event
