"""The decision audit: who decided what, when, and what it cost, read from the projections and the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from store import events as ev
from store import log
from store import tables as t

# The most rows one audit answer lists; the totals still count every decision in the window.
AUDIT_LIMIT = 50


def decisions_since(
    connection: Connection, since: datetime, customer_ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Proposals decided (by a person, the policy or the clock) since `since`, newest first."""
    p = t.proposals.c
    query = select(t.proposals).where(p.decided_at.is_not(None), p.decided_at >= since)
    if customer_ids is not None:
        query = query.where(p.customer_id.in_(customer_ids))
    rows = connection.execute(query.order_by(p.decided_at.desc(), p.id)).all()
    return [dict(row._mapping) for row in rows]


def refusals_since(
    connection: Connection, since: datetime, customer_ids: list[str] | None = None
) -> list[ev.Event]:
    """Attempts to decide that were refused (not an operator, or no right to the kind), newest first.

    With `customer_ids`, only those on these customers' proposals.
    """
    e, p = t.events.c, t.proposals.c
    query = select(t.events).where(e.type == "decision.refused", e.recorded_at >= since)
    if customer_ids is not None:
        query = query.where(e.stream.in_(select(p.id).where(p.customer_id.in_(customer_ids))))
    rows = connection.execute(query.order_by(e.position.desc()).limit(AUDIT_LIMIT)).all()
    return [log.to_event(row._mapping) for row in rows]
