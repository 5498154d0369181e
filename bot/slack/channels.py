"""Channels linked to customers, messages in them as signals, and Slack event retries recognised.

A channel is linked by giving the customer the contact point `slack:<channel id>` (an event in the log,
so `crm replay` rebuilds it); a message in that channel then resolves to the customer like any signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from bot.inbound.intake import InboundSignal
from store import events as ev
from store import tables as t

if TYPE_CHECKING:
    from bot.bootstrap import App

# Slack retries an event for about 5 minutes; a day is far past that and keeps the table small.
SEEN_EVENTS_KEPT = timedelta(days=1)
# Message subtypes that are not a person writing (edits, joins, bot posts such as our own replies).
IGNORED_SUBTYPES = frozenset(
    {"bot_message", "message_changed", "message_deleted", "channel_join", "channel_leave", "me_message"}
)


@dataclass(frozen=True)
class LinkResult:
    ok: bool
    line: str


def linked_customer(engine: Engine, channel_id: str) -> str | None:
    """The customer a channel is linked to, if any."""
    cp = t.contact_points.c
    with engine.connect() as connection:
        found = connection.execute(
            select(cp.customer_id).where(cp.kind == "slack", cp.value == channel_id)
        ).scalar_one_or_none()
    return found


def link_channel(container: App, customer_id: str, channel_id: str, actor: str) -> LinkResult:
    """Give the customer the contact point `slack:<channel_id>`, unless another customer holds it.

    Only operators may link: a link routes a channel's messages into a customer's inbox.
    """
    if actor not in container.settings.operator_ids:
        return LinkResult(False, "Not authorised: only operators can link a channel. Nothing changed.")
    owner = linked_customer(container.engine, channel_id)
    if owner == customer_id:
        return LinkResult(True, "This channel is already linked to that customer.")
    if owner is not None:
        return LinkResult(False, f"This channel is already linked to {owner}; nothing changed.")
    container.store.append(
        ev.NewEvent(
            type="customer.contact_added",
            payload=ev.ContactAdded(contact=ev.ContactPoint(kind="slack", value=channel_id)),
            stream=customer_id,
            idempotency_key=f"slack-link:{channel_id}",
            actor=actor,
            source="slack",
        ),
        dispatch=False,
    )
    return LinkResult(True, "Linked: messages in this channel now reach that customer's inbox.")


def inbound_message(container: App, event: dict[str, Any]) -> InboundSignal | None:
    """A Slack `message` event as a signal for the customer its channel is linked to, else None.

    None for bot posts (our own replies included), edits and joins, channels linked to nobody, and
    operators writing in a customer's channel (they are not the customer).
    """
    found = message_signal(event)
    if found is None:
        return None
    if f"slack:{event.get('user')}" in container.settings.operator_ids:
        return None
    if linked_customer(container.engine, str(event.get("channel"))) is None:
        return None
    signal, key, when = found
    return InboundSignal("message.received", signal, key, "slack", when)


def message_signal(event: dict[str, Any]) -> tuple[ev.MessageReceived, str, datetime] | None:
    """A Slack `message` event as (signal, idempotency key, when), or None when it is not a person writing."""
    if event.get("subtype") in IGNORED_SUBTYPES or event.get("bot_id"):
        return None
    channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
    text = (event.get("text") or "").strip()
    if not (channel and ts and user and text):
        return None
    try:
        when = datetime.fromtimestamp(float(ts), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    signal = ev.MessageReceived(
        customer=ev.CustomerRef(slack=channel),
        text=text,
        data={
            "channel": "slack",
            "chat_id": channel,  # where an approved send_chat_reply goes back to
            "slack_channel": channel,
            "slack_user": user,
            "message_id": f"slack:{channel}:{ts}",
            "thread_id": event.get("thread_ts") or ts,
        },
    )
    # channel + ts names the message itself, so even a redelivery under a new event id is one event.
    return signal, f"slack:{channel}:{ts}", when


def already_seen(engine: Engine, event_id: str) -> bool:
    """Whether this Slack event id was handled before (a retry)."""
    seen = t.slack_events_seen.c
    with engine.connect() as connection:
        row = connection.execute(select(seen.event_id).where(seen.event_id == event_id)).first()
    return row is not None


def mark_seen(engine: Engine, event_id: str, now: datetime | None = None) -> None:
    """Remember an event id once it has been handled; forget ids older than SEEN_EVENTS_KEPT."""
    now = now or datetime.now(UTC)
    table = t.slack_events_seen
    row = {"event_id": event_id[:64], "seen_at": now}
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            stmt: Any = postgresql.insert(table).values(row).on_conflict_do_nothing()
        else:
            stmt = sqlite.insert(table).values(row).on_conflict_do_nothing()
        connection.execute(stmt)
        connection.execute(delete(table).where(table.c.seen_at < now - SEEN_EVENTS_KEPT))
