"""Reminders before a pending proposal expires, on the surfaces it was posted to.

At EXPIRY_REMINDER_AT of its time to live (0.75 by default) a pending proposal is recorded as reminded
(`proposal.reminded`, once per expiry time: a proposal back from snooze can be reminded again) and
each surface that shows it gets a line saying when it expires and a fresh copy of its card with its
buttons, kept current like the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jobs.notify import post_copy
from jobs.render_proposal import age, stamp
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.uow import EventStore

log = logging.getLogger(__name__)


def reminder_lead(ttl_hours: float, share: float) -> timedelta | None:
    """How long before its expiry a proposal is reminded of (None: reminders are off)."""
    if share <= 0:
        return None
    return timedelta(hours=ttl_hours * (1 - share))


def remind_due(
    store: EventStore, notifier: Any, *, ttl_hours: float, share: float, now: datetime | None = None
) -> list[str]:
    """Remind the operator of every pending proposal that expires within the lead; returns their ids."""
    now = now or ev.utcnow()
    lead = reminder_lead(ttl_hours, share)
    if lead is None or notifier is None:
        return []
    with store.engine.connect() as connection:
        due = lc.due_for_reminder(connection, now, lead)
    reminded = []
    for pid in due:
        posted = {m["surface"] for m in lc.messages_of(store.engine, pid)}
        # Shown nowhere yet (no surface was up when it was proposed): remind everywhere instead.
        surfaces = [s for s in notifier.surfaces if s.name in posted] or list(notifier.surfaces)

        plan = _plan(pid, [s.name for s in surfaces], now, lead)
        result = lc.transition(store, pid, {"pending"}, plan)
        if not result.won or result.row is None:
            continue
        reminded.append(pid)
        _tell(store, notifier, surfaces, pid, result.row["expires_at"], now)
    return reminded


def _plan(pid: str, names: list[str], now: datetime, lead: timedelta) -> Callable[[dict[str, Any]], Any]:
    """The reminder's compare-and-set: still pending, not reminded, and due (it may have woken since)."""

    def plan(row: dict[str, Any]) -> list[lc.Planned] | None:
        expires = row["expires_at"]
        if row["reminded_at"] is not None or expires is None or expires > now + lead:
            return None
        payload = sp.ProposalReminded(expires_at=expires, surfaces=names)
        key = f"{pid}:remind:{expires.isoformat()}"
        return [(lc.on_proposal(pid, "proposal.reminded", payload, key, occurred_at=now), False)]

    return plan


def _tell(
    store: EventStore, notifier: Any, surfaces: list[Any], pid: str, expires: datetime, now: datetime
) -> None:
    view = notifier.view(pid)
    if view is None:
        return
    line = (
        f"⏰ #{view.handle} expires in {age(now, expires)} (at {stamp(expires)}) unless you decide; "
        f"nothing is sent if it expires. approve {view.handle} · reject {view.handle} · show {view.handle}"
    )
    for surface in surfaces:
        try:
            surface.post_notice([line])
            post_copy(store, surface, view)
        except Exception:  # one surface down must not keep the reminder from the others
            log.exception("reminding of %s on %s failed", pid, surface.name)
