"""One message fetched from the mailbox, recorded through the same path as `POST /webhooks/email`.

Inbox mail becomes a `message.received` (bot.inbound.email.parse_email, the one email parser); mail
in the Sent folder becomes a `message.sent` about its recipient when the recipient is a customer
(the operator's mail to anyone else is none of the CRM's business) and it is not a reply the bot sent
itself (already recorded as that proposal's execution). A message the parser refuses is never
dropped silently: the operator is told which folder and UID, and why.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.inbound.email import parse_email
from bot.inbound.errors import InboundRefused
from bot.inbound.intake import InboundSignal, record
from jobs.connectors.email import message_id_for
from jobs.execute import action_key
from store import tables as t
from store.identity import IdentityError, normalise_email

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# Proposals whose email may be in Sent before (or after) the executor records it as sent.
SENDING_STATES = ("executing", "executed", "uncertain", "closed")


class Taken(StrEnum):
    """What became of one fetched message."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # already in the log (a re-scan, a restart, the webhook got it first)
    OURS = "ours"  # the bot's own reply, or the operator's own address writing to the inbox
    NOT_A_CUSTOMER = "not_a_customer"  # sent mail to someone who is not a customer
    UNREADABLE = "unreadable"  # the parser refused it; the operator was told


def take_received(container: App, raw: bytes, where: str, own_address: str) -> Taken:
    """Record an inbox message as `message.received`."""
    try:
        inbound = parse_email(raw)
    except InboundRefused as exc:
        return _unreadable(container, where, exc.message)
    if _same_address(inbound.signal.customer.email, own_address):
        return Taken.OURS
    accepted = _record(container, inbound, where)
    if accepted is None:
        return Taken.UNREADABLE
    return Taken.DUPLICATE if accepted else Taken.RECORDED


def take_sent(container: App, raw: bytes, where: str) -> Taken:
    """Record a Sent-folder message as the operator's `message.sent`, if it is to a customer."""
    try:
        inbound = parse_email(raw, sent=True)
    except InboundRefused as exc:
        return _unreadable(container, where, exc.message)
    message_id = inbound.signal.data.get("message_id")
    if message_id and _sent_by_the_bot(container, str(message_id)):
        return Taken.OURS
    if not _is_customer(container, inbound.signal.customer.email):
        return Taken.NOT_A_CUSTOMER
    accepted = _record(container, inbound, where)
    if accepted is None:
        return Taken.UNREADABLE
    return Taken.DUPLICATE if accepted else Taken.RECORDED


def _record(container: App, inbound: InboundSignal, where: str) -> bool | None:
    """Record; True if it was a duplicate, None if refused (the operator is told)."""
    try:
        accepted = record(container, inbound)
    except InboundRefused as exc:
        _unreadable(container, where, exc.message)
        return None
    return accepted.duplicate


def _unreadable(container: App, where: str, reason: str) -> Taken:
    line = f"An email in {where} could not be read and was not recorded: {reason}"
    log.warning("%s", line)
    container.notifier.notice([line, "It stays in your mailbox untouched; read it in your mail client."])
    return Taken.UNREADABLE


def _same_address(one: str | None, other: str) -> bool:
    return bool(one) and str(one).strip().lower() == other.strip().lower()


def _is_customer(container: App, email: str | None) -> bool:
    if not email:
        return False
    try:
        value = normalise_email(email)
    except IdentityError:
        return False
    c = t.contact_points.c
    with container.engine.connect() as connection:
        found = connection.execute(
            select(c.customer_id).where(c.kind == "email", c.value == value).limit(1)
        ).first()
    return found is not None


def _sent_by_the_bot(container: App, message_id: str) -> bool:
    """Whether a proposal's email has this Message-ID (derived from its action key, as the SMTP
    connector does, so a copy appended before the executor recorded the send is recognised too)."""
    p = t.proposals.c
    with container.engine.connect() as connection:
        if connection.execute(select(p.id).where(p.result_ref == message_id).limit(1)).first():
            return True
        sending = connection.execute(
            select(p.id).where(p.kind == "send_email", p.state.in_(SENDING_STATES)).limit(500)
        ).scalars()
        mail_from = container.settings.mail_from
        return any(message_id_for(action_key(pid), mail_from) == message_id for pid in sending)
