"""Messages in Slack channels as signals: a Slack `message` event translated, nothing decided.

A channel is linked by giving the customer the contact point `slack:<channel id>` (`Commands.link_channel`
appends it as an event, so `crm replay` rebuilds it); a message in that channel then resolves to the
customer like any signal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.inbound.intake import InboundSignal
from store import events as ev

# Message subtypes that are not a person writing (edits, joins, bot posts such as our own replies).
IGNORED_SUBTYPES = frozenset(
    {"bot_message", "message_changed", "message_deleted", "channel_join", "channel_leave", "me_message"}
)


def inbound_message(event: dict[str, Any]) -> InboundSignal | None:
    """A Slack `message` event as a signal, or None for bot posts (our own replies included), edits and joins.

    Whether it is a customer writing (not an operator, in a channel linked to a customer) is decided by
    `bot.inbound.chat.record_chat_message`.
    """
    found = message_signal(event)
    if found is None:
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
