"""Customers on Telegram: a private message from someone who is not an operator becomes a signal.

The customer is the one with that Telegram user id (created if new, by identity resolution); the chat
id travels in the signal's data so an approved reply goes back to the same chat. Media and stickers
are recorded as a short description of what arrived (and the file id), never dropped or crashed on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telegram import Message, Update

from bot.inbound.intake import InboundSignal
from store.events import CustomerRef, MessageReceived

SOURCE = "telegram"
# What a message without text carries, in the order checked: the attribute and how to say it.
_MEDIA = (
    "sticker",
    "photo",
    "video",
    "video_note",
    "voice",
    "audio",
    "document",
    "animation",
    "location",
    "contact",
    "poll",
    "dice",
)


def idempotency_key(chat_id: int, message_id: int) -> str:
    """`telegram:<chat>:<message>`: the same message redelivered (webhook retry, restart) is one event."""
    return f"{SOURCE}:{chat_id}:{message_id}"


def media_of(message: Message) -> dict[str, Any] | None:
    """What kind of media a message carries, with enough to fetch it later (file id, emoji, name)."""
    for kind in _MEDIA:
        value = getattr(message, kind, None)
        if not value:
            continue
        item = value[-1] if isinstance(value, tuple) else value  # photos come in sizes; keep the largest
        media: dict[str, Any] = {"kind": kind}
        for name in ("file_id", "emoji", "file_name", "mime_type", "duration"):
            attr = getattr(item, name, None)
            if attr is not None:
                media[name] = attr if isinstance(attr, (str, int)) else str(attr)
        return media
    return None


def describe(message: Message, media: dict[str, Any] | None) -> str:
    """The text of the signal: the message's text or caption, or a bracketed note of the media."""
    text = message.text or message.caption
    if media is None:
        return text or "[empty message]"
    label = {
        "sticker": f"sticker {media.get('emoji', '')}".strip(),
        "document": f"document {media.get('file_name', '')}".strip(),
    }
    note = f"[{label.get(media['kind'], media['kind'].replace('_', ' '))}]"
    return f"{note} {text}" if text else note


def customer_ref(message: Message) -> CustomerRef:
    """The customer as Telegram names them: the user id (a strong key) and their name."""
    user = message.from_user
    assert user is not None
    return CustomerRef(telegram=str(user.id), name=user.full_name[:255] or None)


def customer_signal(update: Update) -> InboundSignal | None:
    """A private message as a `message.received` signal; None when there is nothing to record."""
    message = update.effective_message
    if message is None or message.from_user is None or message.chat is None:
        return None
    media = media_of(message)
    data: dict[str, Any] = {
        "channel": SOURCE,
        "chat_id": str(message.chat.id),
        "message_id": str(message.message_id),
        "thread_id": str(message.chat.id),
    }
    if message.from_user.username:
        data["username"] = message.from_user.username
    if media is not None:
        data["media"] = media
    if message.reply_to_message is not None:
        data["in_reply_to"] = str(message.reply_to_message.message_id)
    signal = MessageReceived(customer=customer_ref(message), text=describe(message, media), data=data)
    occurred_at = message.date if message.date.tzinfo else message.date.replace(tzinfo=UTC)
    return InboundSignal(
        type="message.received",
        signal=signal,
        key=idempotency_key(message.chat.id, message.message_id),
        source=SOURCE,
        occurred_at=min(occurred_at, datetime.now(UTC)),
    )
