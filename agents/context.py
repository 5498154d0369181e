"""What an agent sees: one customer's slice, the triggering event, recent history, memories, corrections.

Plain pydantic data, built by the job that hands an event to the agents (`build_context`) or by tests
directly. Agents never open a connection themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, select

from agents.proposal import OUTBOUND_KINDS, ActionKind, Draft
from store import events as ev
from store import log
from store import tables as t
from store.slice import ContextSlice, build_slice, group_of, summarise

# How many of the customer's events (of every type) an agent sees; enough to find the earlier nudges
# and dunning steps of one renewal or invoice without reading a long history.
RECENT_HISTORY = 50
INBOUND_TYPES = frozenset({"message.received"})
# The operator's own replies (their mail client's Sent folder): outbound touches the frequency cap counts.
OUTBOUND_TYPES = frozenset({"message.sent"})


class Trigger(BaseModel):
    """The event that woke the agents, flattened: signal text and data are what rules read."""

    model_config = ConfigDict(frozen=True)
    id: str
    type: str
    occurred_at: datetime
    stream: str | None = None
    text: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)  # the whole payload as JSON
    customer_ref: dict[str, Any] = Field(default_factory=dict)  # name/email/... as the signal named them

    @classmethod
    def from_event(cls, event: ev.Event) -> Trigger:
        """Flatten a stored event."""
        payload = event.payload.model_dump(mode="json")
        return cls(
            id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            stream=event.stream,
            text=payload.get("text"),
            data=payload.get("data") or {},
            payload=payload,
            customer_ref=payload.get("customer") or {},
        )


class RecentEvent(BaseModel):
    """One earlier event of the customer, any type (including proposals and actions of later issues)."""

    model_config = ConfigDict(frozen=True)
    id: str
    type: str
    occurred_at: datetime
    summary: str = ""
    data: dict[str, Any] = Field(default_factory=dict)  # the payload as JSON

    @classmethod
    def from_event(cls, event: ev.Event) -> RecentEvent:
        """Wrap a stored event."""
        return cls(
            id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            summary=summarise(event),
            data=event.payload.model_dump(mode="json"),
        )

    def mentions(self, value: str) -> bool:
        """Whether `value` appears anywhere in the payload (e.g. a proposal's `window_key` param)."""
        return _contains(self.data, value)


class RecalledMemory(BaseModel):
    """A memory recalled for this customer (the memory engine builds these)."""

    model_config = ConfigDict(frozen=True)
    id: str
    kind: str  # e.g. "message", "note", "summary"
    text: str
    occurred_at: datetime | None = None
    score: float = 0.0  # similarity, higher is closer


class Correction(BaseModel):
    """What the operator did to an earlier draft: edited it, or rejected it with a reason."""

    model_config = ConfigDict(frozen=True)
    kind: ActionKind
    original: Draft | None = None
    edited: Draft | None = None  # None when rejected
    rejection_reason: str | None = None
    at: datetime
    agent: str | None = None
    customer_id: str | None = None
    proposal_id: str | None = None


class AgentContext(BaseModel):
    """Everything one agent run may read. `now` and the time zones drive quiet hours and windows."""

    model_config = ConfigDict(frozen=True)
    customer: ContextSlice
    trigger: Trigger
    recent_events: list[RecentEvent] = Field(default_factory=list)  # newest first
    memories: list[RecalledMemory] = Field(default_factory=list)
    corrections: list[Correction] = Field(default_factory=list)  # newest first
    operator_timezone: str = "UTC"
    now: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # When the last outbound message to / inbound message from this customer happened, for the
    # frequency cap; None means "derive from recent_events" (inbound) or "never" (outbound).
    last_outbound_at: datetime | None = None
    last_inbound_at: datetime | None = None
    # The operator's own automation hook (CRM_WEBHOOK_URL) qualified leads may be posted to.
    webhook_url: str | None = None

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return value

    @field_validator("operator_timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        ZoneInfo(value)
        return value

    def corrections_for(self, kind: str) -> list[Correction]:
        """The operator's corrections for one action kind, newest first."""
        return [c for c in self.corrections if c.kind == kind]

    def customer_zone(self) -> ZoneInfo:
        """The customer's time zone when known and valid, else the operator's."""
        if self.customer.timezone:
            try:
                return ZoneInfo(self.customer.timezone)
            except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
                pass
        return ZoneInfo(self.operator_timezone)

    def inbound_at(self) -> datetime | None:
        """When the customer last wrote to us (the trigger counts when it is a message)."""
        times = [e.occurred_at for e in self.recent_events if e.type in INBOUND_TYPES]
        if self.trigger.type in INBOUND_TYPES:
            times.append(self.trigger.occurred_at)
        if self.last_inbound_at:
            times.append(self.last_inbound_at)
        return max(times, default=None)

    def history_mentions(self, value: str) -> list[RecentEvent]:
        """Earlier events whose payload carries `value` (the trigger itself excluded)."""
        return [e for e in self.recent_events if e.id != self.trigger.id and e.mentions(value)]


def build_context(
    connection: Connection,
    event: ev.Event,
    customer_id: str,
    *,
    memories: list[RecalledMemory] | None = None,
    corrections: list[Correction] | None = None,
    operator_timezone: str = "UTC",
    now: datetime | None = None,
    last_outbound_at: datetime | None = None,
    webhook_url: str | None = None,
) -> AgentContext | None:
    """The context for one event and one canonical customer (None if the customer is unknown)."""
    customer = build_slice(connection, customer_id)
    if customer is None:
        return None
    group = group_of(connection, customer_id)
    history = log.read_streams(connection, group)[-RECENT_HISTORY:]
    recent = [RecentEvent.from_event(e) for e in history]
    proposal_rows = _proposal_rows(connection, group)
    recent.extend(_proposal_event(row) for row in proposal_rows if row["state"] != "refused")
    recent.sort(key=lambda e: e.occurred_at, reverse=True)
    sent = [
        row["executed_at"] for row in proposal_rows if row["kind"] in OUTBOUND_KINDS and row["executed_at"]
    ]
    sent += [e.occurred_at for e in history if e.type in OUTBOUND_TYPES]
    if last_outbound_at:
        sent.append(last_outbound_at)
    found = [c for c in (_correction(e) for e in recent) if c is not None]
    return AgentContext(
        customer=customer,
        trigger=Trigger.from_event(event),
        recent_events=recent,
        memories=memories or [],
        corrections=[*(corrections or []), *found],
        operator_timezone=operator_timezone,
        now=now or datetime.now(UTC),
        last_outbound_at=max(sent, default=None),
        webhook_url=webhook_url,
    )


def paused_agents(connection: Connection) -> set[str]:
    """The agents paused in the store ("*" for all), to pass to AgentRuntime(paused=...)."""
    rows = connection.execute(select(t.agent_pauses.c.agent).where(t.agent_pauses.c.paused.is_(True)))
    return set(rows.scalars())


def _proposal_rows(connection: Connection, group: list[str]) -> list[dict[str, Any]]:
    """The customer's latest proposals (the lifecycle's projection), newest first."""
    p = t.proposals.c
    query = (
        select(p.id, p.kind, p.agent, p.state, p.proposed, p.created_at, p.executed_at)
        .where(p.customer_id.in_(group))
        .order_by(p.created_at.desc())
        .limit(RECENT_HISTORY)
    )
    return [dict(row._mapping) for row in connection.execute(query)]


def _proposal_event(row: dict[str, Any]) -> RecentEvent:
    """A proposal as a history entry, so "already nudged / dunned" checks see it."""
    return RecentEvent(
        id=row["id"],
        type=f"proposal.{row['state']}",
        occurred_at=row["created_at"],
        summary=f"{row['agent']} proposed {row['kind']} ({row['state']})",
        data={"proposal": row["proposed"] or {}, "state": row["state"], "kind": row["kind"]},
    )


def _correction(event: RecentEvent) -> Correction | None:
    """A `correction.recorded` event (the lifecycle issue writes them) as a Correction."""
    if event.type != "correction.recorded":
        return None
    d = event.data
    try:
        return Correction(
            kind=d["kind"],
            original=Draft.model_validate(d["original"]) if d.get("original") else None,
            edited=Draft.model_validate(d["edited"]) if d.get("edited") else None,
            rejection_reason=d.get("rejection_reason"),
            at=event.occurred_at,
            agent=d.get("agent"),
            proposal_id=d.get("proposal_id"),
        )
    except (KeyError, ValidationError):
        return None


def _contains(data: Any, value: str) -> bool:
    if isinstance(data, dict):
        return any(_contains(v, value) for v in data.values())
    if isinstance(data, list | tuple):
        return any(_contains(v, value) for v in data)
    return data == value
