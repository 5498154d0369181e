"""Slack's own operational rows: Events API deliveries already handled, and which channel is whose.

The seen event ids are not projections and no business decision (Slack redelivers an event when its 3 s
pass without a 200; invariant 2). The channel links are read from the `slack:<channel id>` contact
points, which the command layer writes as events (`Commands.link_channel`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from store import tables as t

# Slack retries an event for about 5 minutes; a day is far past that and keeps the table small.
SEEN_EVENTS_KEPT = timedelta(days=1)


def linked_customer(connection: Connection, channel_id: str) -> str | None:
    """The customer a channel is linked to, if any."""
    cp = t.contact_points.c
    found: str | None = connection.execute(
        select(cp.customer_id).where(cp.kind == "slack", cp.value == channel_id)
    ).scalar_one_or_none()
    return found


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
