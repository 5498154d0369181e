"""Messages customers write in a chat app (a Telegram private chat, a Slack channel linked to them).

The surfaces translate the chat app's payload into an `InboundSignal`; whether it is a customer
writing is decided here, once: an operator is never the customer, and a Slack channel linked to
nobody has no customer to write for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.inbound.intake import Accepted, InboundSignal, record

if TYPE_CHECKING:
    from bot.bootstrap import App
    from bot.commands import Actor


def record_chat_message(
    app: App, author: Actor, inbound: InboundSignal, *, channel: str | None = None
) -> Accepted | None:
    """Record the message as a signal now; None when an operator wrote it or `channel` is linked to nobody."""
    commands = app.commands
    if commands.is_operator(author):
        return None
    if channel is not None and commands.channel_customer(channel) is None:
        return None
    return record(app, inbound)
