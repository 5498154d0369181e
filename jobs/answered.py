"""The operator answered a thread from their own mail client: its pending reply proposals are withdrawn.

A `message.sent` (read from the Sent folder) that replies into a thread — its In-Reply-To or
References name a message a pending or snoozed email proposal replies to — makes that proposal moot:
it is withdrawn ("answered outside"), every chat copy is updated, and nothing is sent. A reply the
operator starts fresh (no thread headers) withdraws nothing: the thread it would answer is unknown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store import tables as t
from store.projector import canonical_id
from store.slice import group_of
from store.state import SqlState

if TYPE_CHECKING:
    from jobs.context import JobContext

log = logging.getLogger(__name__)

ANSWERED_OUTSIDE = "answered outside: you replied from your mail client"
# States in which a reply proposal has not been decided yet.
UNDECIDED = frozenset({"pending", "snoozed"})
REPLY_KINDS = frozenset({"send_email"})
# How many of the customer's open proposals are looked at (a customer has a handful at most).
OPEN_LIMIT = 50


def thread_ids(data: dict[str, Any]) -> set[str]:
    """The Message-IDs a message or a reply proposal's params place it in the thread of."""
    found = {data.get("in_reply_to"), data.get("thread_id"), *(data.get("references") or [])}
    return {item for item in found if isinstance(item, str) and item}


def answered_proposals(connection: Any, event: ev.Event) -> list[str]:
    """The undecided email proposals of the event's customer whose thread the sent message answers."""
    payload = event.payload
    if not isinstance(payload, ev.Signal):
        return []
    sent_ids = thread_ids(payload.data)
    sent_ids.discard(payload.data.get("message_id") or "")
    if not sent_ids:
        return []
    group = group_of(connection, canonical_id(SqlState(connection), event.stream))
    p = t.proposals.c
    rows = connection.execute(
        select(p.id, p.proposed)
        .where(p.customer_id.in_(group), p.state.in_(UNDECIDED), p.kind.in_(REPLY_KINDS))
        .order_by(p.created_at)
        .limit(OPEN_LIMIT)
    ).all()
    return [row.id for row in rows if thread_ids((row.proposed or {}).get("params") or {}) & sent_ids]


def withdraw(store: Any, proposal_id: str, event: ev.Event) -> bool:
    """Withdraw one undecided proposal because of `event` (a compare-and-set: a tap may win first)."""

    def plan(row: dict[str, Any]) -> list[lc.Planned]:
        payload = sp.ProposalWithdrawn(reason=ANSWERED_OUTSIDE, message_event_id=event.id)
        key = lc.decision_key(proposal_id)
        return [(lc.on_proposal(proposal_id, "proposal.withdrawn", payload, key, actor="operator"), False)]

    return lc.transition(store, proposal_id, UNDECIDED, plan).won


def withdraw_answered(event: ev.Event, ctx: JobContext) -> list[str]:
    """Handler body: withdraw what the operator's sent message answered; refresh its chat copies."""
    with ctx.store.engine.connect() as connection:
        candidates = answered_proposals(connection, event)
    withdrawn = [pid for pid in candidates if withdraw(ctx.store, pid, event)]
    for pid in withdrawn:
        log.info("%s withdrawn: the operator answered the thread (%s)", pid, event.id)
        ctx.notifier.refresh(pid)
    return withdrawn
