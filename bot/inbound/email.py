"""The email connector: a raw RFC 822 message → a `message.received` signal keyed by its Message-ID.

The one parser for every way mail arrives (`POST /webhooks/email`, the IMAP watcher's inbox); the
operator's own mail from the Sent folder is read by it too, as a `message.sent` about its recipient.

Replies and forwards keep In-Reply-To/References, and every message of a thread carries the thread's
root Message-ID as `thread_id`, so a conversation stays one conversation.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import Any

import html2text
from pydantic import ValidationError

from bot.inbound.errors import InvalidSignal, MalformedBody
from bot.inbound.intake import InboundSignal
from bot.inbound.signals import EARLIEST_YEAR, LATEST_YEAR, invalid
from store.events import CustomerRef, MessageReceived, MessageSent
from store.storable import storable_text

SOURCE = "email"
# Idempotency-key prefix of the operator's own sent mail (its Message-ID is not a customer's).
SENT_SOURCE = "email-sent"

# Signal.text holds at most this many characters; longer bodies are cut with a marker saying so.
MAX_TEXT = 200_000
TRUNCATED = "\n[… message truncated]"

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")

# Parsed headers remembered (by name and value): the stdlib parses a header afresh on every read, and
# reads Content-Type about ten times per message (parsing, get_body, get_content, walking parts), which
# was two thirds of the parse. Many values recur across messages too (Content-Type, MIME-Version, the
# operator's own To). Values longer than HEADER_MEMO_MAX_CHARS are parsed each time, so the memo stays
# small whatever the mail: at most HEADER_MEMO_SIZE entries of that size.
HEADER_MEMO_SIZE = 1024
HEADER_MEMO_MAX_CHARS = 1000


class _MemoisedHeaders(HeaderRegistry):
    """`policy.default`'s header registry, parsing each (name, value) once.

    Header objects are immutable once built (str subclasses with read-only views of what they parsed),
    so one object can serve every read, in any thread; the result is the same as parsing anew.
    """

    def __init__(self) -> None:
        super().__init__()
        self._memo = functools.lru_cache(maxsize=HEADER_MEMO_SIZE)(super().__call__)
        # The registry builds a new class per read (`type(...)` in __getitem__): once per name here.
        self._classes = functools.lru_cache(maxsize=HEADER_MEMO_SIZE)(super().__getitem__)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        return self._classes(name)

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > HEADER_MEMO_MAX_CHARS:
            return super().__call__(name, value)
        return self._memo(name, value)


# The stdlib's modern policy (headers as objects, decoded words, get_body), with the memo above.
PARSING_POLICY: EmailPolicy[EmailMessage] = policy.default.clone(header_factory=_MemoisedHeaders())


def parse_email(raw: bytes, *, sent: bool = False) -> InboundSignal:
    """Parse a raw message (any charset); raises MalformedBody or InvalidSignal naming the field.

    With `sent`, the message is the operator's own (from their Sent folder): a `message.sent` about
    its first recipient.
    """
    return parse_with(raw, PARSING_POLICY, sent=sent)


def parse_with(raw: bytes, parsing: EmailPolicy[EmailMessage], *, sent: bool = False) -> InboundSignal:
    """`parse_email` under a given email policy (the tests compare PARSING_POLICY with the stdlib's)."""
    if not raw.strip():
        raise MalformedBody("the body is empty; expected a raw RFC 822 message")
    message = message_from_bytes(raw, policy=parsing)
    if not isinstance(message, EmailMessage) or not message.keys():
        raise MalformedBody("the body has no mail headers; expected a raw RFC 822 message")
    sender_name, sender = _sender(message)
    to = _addresses(message, "To")
    message_id = _ids(_header(message, "Message-ID"))
    in_reply_to = _ids(_header(message, "In-Reply-To"))
    references = _ids(_header(message, "References"))
    own_id = message_id[0] if message_id else None
    thread_id = next(iter(references or in_reply_to or message_id), None)
    text, body_format = _body(message)
    data: dict[str, Any] = {
        "channel": "email",
        "subject": storable_text(_header(message, "Subject") or "") or None,
        "message_id": own_id,
        "in_reply_to": in_reply_to[0] if in_reply_to else None,
        "references": references,
        "thread_id": thread_id,
        "from": sender,
        "to": to,
        "cc": _addresses(message, "Cc"),
        "attachments": _attachments(message),
        "body_format": body_format,
    }
    if sent and not to:
        raise InvalidSignal(
            "the sent message has no recipient address",
            errors=[{"field": "to", "message": "missing or not an address"}],
        )
    prefix = SENT_SOURCE if sent else SOURCE
    key = f"{prefix}:{own_id}" if own_id else f"{prefix}:sha256:{hashlib.sha256(raw).hexdigest()}"
    try:
        if sent:
            about = CustomerRef(email=to[0])
            return InboundSignal(
                "message.sent",
                MessageSent(customer=about, text=text or None, data=data),
                key[:255],
                SOURCE,
                _date(message),
            )
        customer = CustomerRef(email=sender, name=sender_name or None)
        signal = MessageReceived(customer=customer, text=text or None, data=data)
    except ValidationError as exc:
        raise invalid(exc) from None
    return InboundSignal("message.received", signal, key[:255], SOURCE, _date(message))


def _header(message: Message, name: str) -> str | None:
    # The stdlib's header parser raises assorted errors (IndexError, ValueError, …) on malformed
    # headers; a header we cannot read is treated as absent rather than failing the whole message.
    try:
        value = message.get(name)
    except Exception:
        return None
    return None if value is None else str(value)


def _sender(message: Message) -> tuple[str, str]:
    try:
        header: Any = message.get("From")
        addresses = header.addresses if header is not None else ()
    except Exception:  # malformed From header: see _header
        addresses = ()
    for address in addresses:
        if address.addr_spec and "@" in address.addr_spec:
            return storable_text(address.display_name), storable_text(address.addr_spec)
    raise InvalidSignal(
        "the message has no sender address",
        errors=[{"field": "from", "message": "missing or not an address"}],
    )


def _addresses(message: Message, name: str) -> list[str]:
    try:
        header: Any = message.get(name)
        return (
            [storable_text(a.addr_spec) for a in header.addresses if a.addr_spec]
            if header is not None
            else []
        )
    except Exception:  # malformed address list: see _header
        return []


def _ids(value: str | None) -> list[str]:
    return [storable_text(found)[:250] for found in _MESSAGE_ID.findall(value or "")]


def _date(message: Message) -> datetime | None:
    try:
        header: Any = message.get("Date")
        when = header.datetime if header is not None else None
    except Exception:  # unparseable Date: see _header
        return None
    if not isinstance(when, datetime) or not EARLIEST_YEAR <= when.year <= LATEST_YEAR:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _body(message: EmailMessage) -> tuple[str, str]:
    """The readable text and where it came from: "plain", "html" (converted) or "none"."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", "none"
    content = _decoded(part)
    if part.get_content_type() == "text/html":
        converter = html2text.HTML2Text()
        converter.body_width = 0  # keep paragraphs as lines; chat surfaces wrap for themselves
        converter.ignore_images = True
        content, kind = converter.handle(content).strip(), "html"
    else:
        content, kind = content.strip(), "plain"
    content = _TRAILING_SPACE.sub("\n", storable_text(content).replace("\r\n", "\n"))
    if len(content) > MAX_TEXT:
        content = content[: MAX_TEXT - len(TRUNCATED)] + TRUNCATED
    return content, kind


def _decoded(part: Message) -> str:
    """A text part as str in whatever charset it declares; an unknown charset is read as UTF-8."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError):
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachments(message: EmailMessage) -> list[dict[str, Any]]:
    """Name, type and size of each attachment (they are listed, not stored)."""
    found = []
    for part in message.walk():
        filename = part.get_filename()
        if part.get_content_disposition() != "attachment" and not filename:
            continue
        if part.get_content_type() == "message/rfc822":  # a forwarded mail: its size as bytes
            inner = part.get_payload()  # the forwarded message(s)
            forwarded = inner if isinstance(inner, list) else [inner]
            size = sum(len(message.as_bytes()) for message in forwarded if isinstance(message, Message))
        elif part.is_multipart():
            continue
        else:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
        found.append(
            {"filename": storable_text(filename or ""), "content_type": part.get_content_type(), "size": size}
        )
    return found
