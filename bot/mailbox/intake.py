"""Messages fetched from the mailbox, recorded through the same path as `POST /webhooks/email`.

Inbox mail becomes a `message.received` (bot.inbound.email.parse_email, the one email parser); mail
in the Sent folder becomes a `message.sent` about its recipient when the recipient is a customer
(the operator's mail to anyone else is none of the CRM's business) and it is not a reply the bot sent
itself (already recorded as that proposal's execution). A message the parser refuses is never
dropped silently: the operator is told which folder and UID, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.inbound.email import parse_email
from bot.inbound.errors import InboundRefused
from bot.inbound.intake import InboundSignal, record_all
from jobs.connectors.email import message_id_for
from jobs.execute import action_key
from store import tables as t
from store.identity import IdentityError, normalise_email

if TYPE_CHECKING:
    from sqlalchemy import Connection

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


@dataclass(frozen=True)
class Fetched:
    """One fetched message: where it is (folder, UID, UIDVALIDITY, for the operator) and its bytes."""

    where: str
    raw: bytes


def take_all(
    container: App,
    kind: str,
    fetched: Sequence[Fetched],
    own_address: str,
    *,
    along: Callable[[Connection], None],
) -> list[Taken]:
    """Record a fetched batch of "inbox" or "sent" mail; what became of each message, in order.

    What is recorded is staged in one transaction with `along` (the folder's new position), so the
    position never moves past a message that is not kept (bot.inbound.intake.record_all).
    """
    read = [_read(container, kind, one, own_address) for one in fetched]
    if kind == "sent":
        read = _to_customers_only(container, _without_the_bots_own(container, read))
    accepted = iter(record_all(container, [one for one in read if not isinstance(one, Taken)], along=along))
    taken = []
    for one, item in zip(fetched, read, strict=True):
        if isinstance(item, Taken):
            taken.append(item)
            continue
        outcome = next(accepted)
        if isinstance(outcome, InboundRefused):
            taken.append(_unreadable(container, one.where, outcome.message))
        else:
            taken.append(Taken.DUPLICATE if outcome.duplicate else Taken.RECORDED)
    return taken


def _read(container: App, kind: str, fetched: Fetched, own_address: str) -> InboundSignal | Taken:
    """The message parsed, or what becomes of it unrecorded (the operator's own, unreadable)."""
    try:
        inbound = parse_email(fetched.raw, sent=kind == "sent")
    except InboundRefused as exc:
        return _unreadable(container, fetched.where, exc.message)
    if kind != "sent" and _same_address(inbound.signal.customer.email, own_address):
        return Taken.OURS
    return inbound


def _without_the_bots_own(container: App, read: list[InboundSignal | Taken]) -> list[InboundSignal | Taken]:
    """Sent mail bearing the Message-ID of a reply the bot sent itself is OURS."""
    ids = {_message_id(one) for one in read if isinstance(one, InboundSignal)} - {None}
    ours = _sent_by_the_bot(container, {str(one) for one in ids}) if ids else set()
    return [
        Taken.OURS if isinstance(one, InboundSignal) and _message_id(one) in ours else one for one in read
    ]


def _to_customers_only(container: App, read: list[InboundSignal | Taken]) -> list[InboundSignal | Taken]:
    """Sent mail to someone who is not a customer is NOT_A_CUSTOMER (none of the CRM's business)."""
    return [
        Taken.NOT_A_CUSTOMER
        if isinstance(one, InboundSignal) and not _is_customer(container, one.signal.customer.email)
        else one
        for one in read
    ]


def _message_id(inbound: InboundSignal) -> str | None:
    found = inbound.signal.data.get("message_id")
    return str(found) if found else None


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


def _sent_by_the_bot(container: App, message_ids: set[str]) -> set[str]:
    """Those of the Message-IDs that are a proposal's email (derived from its action key, as the SMTP
    connector does, so a copy appended before the executor recorded the send is recognised too)."""
    p = t.proposals.c
    with container.engine.connect() as connection:
        found = set(connection.execute(select(p.result_ref).where(p.result_ref.in_(message_ids))).scalars())
        sending = connection.execute(
            select(p.id).where(p.kind == "send_email", p.state.in_(SENDING_STATES)).limit(500)
        ).scalars()
        mail_from = container.settings.mail_from
        found.update(message_id_for(action_key(pid), mail_from) for pid in sending)
    return found & message_ids
