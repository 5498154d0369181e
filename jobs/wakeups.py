"""Time-driven lifecycle steps the scheduler calls every minute or so: expire, wake, recover, auto-approve.

Each is a compare-and-set per proposal, so two schedulers running at once (or a run overlapping a
human decision) change nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from agents.proposal import OUTBOUND_KINDS
from jobs.context import JobContext, current
from jobs.execute import schedule_execution
from jobs.queue import DECISIONS, JobQueue
from jobs.render_proposal import stamp
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.uow import EventStore

log = logging.getLogger(__name__)

# Kinds that leave the building, so they wait out the undo window before they are handed over (also
# when the policy approves them).
UNDO_WINDOW_KINDS = OUTBOUND_KINDS
# An approved proposal untouched this long has probably lost its job (a worker restart); queue it again.
STALE_AFTER = timedelta(minutes=2)


def auto_approve(store: EventStore, proposal_id: str, undo_window_seconds: float, now: datetime) -> bool:
    """The policy's decision: approve without a tap (outbound kinds still wait out the undo window)."""

    def plan(row: dict[str, Any]) -> list[lc.Planned]:
        window = undo_window_seconds if row["kind"] in UNDO_WINDOW_KINDS else 0
        proposed = row["proposed"]
        payload = sp.ProposalDecided(
            decision="auto",
            by="policy",
            by_name="policy",
            approved={"params": proposed.get("params") or {}, "draft": proposed.get("draft")},
            not_before=now + timedelta(seconds=window) if window else None,
        )
        key = lc.decision_key(proposal_id)
        return [
            (
                lc.on_proposal(
                    proposal_id, "proposal.decided", payload, key, actor="policy", occurred_at=now
                ),
                False,
            )
        ]

    return lc.transition(store, proposal_id, {"pending"}, plan).won


def expire_due(store: EventStore, notifier: Any = None, now: datetime | None = None) -> list[str]:
    """Expire pending proposals whose time is up (nothing is sent) and tell the operator."""
    now = now or ev.utcnow()
    with store.engine.connect() as connection:
        due = lc.due_to_expire(connection, now)
    expired = []
    for pid in due:

        def plan(row: dict[str, Any], pid: str = pid) -> list[lc.Planned] | None:
            if row["expires_at"] is None or row["expires_at"] > now:
                return None  # woken or re-timed since we looked
            key = lc.decision_key(pid)
            return [
                (lc.on_proposal(pid, "proposal.expired", sp.ProposalExpired(), key, occurred_at=now), False)
            ]

        if lc.transition(store, pid, {"pending"}, plan).won:
            expired.append(pid)
            if notifier is not None:
                notifier.refresh(pid)
    if expired and notifier is not None:
        notifier.notice(
            [f"{len(expired)} proposal(s) expired without a decision; nothing was sent.", *expired]
        )
    return expired


def wake_due(
    store: EventStore,
    *,
    ttl_hours: float,
    undo_window_seconds: float,
    schedule_execution: Callable[[str], object] | None = None,
    notifier: Any = None,
    now: datetime | None = None,
) -> list[str]:
    """Bring snoozed and policy-deferred proposals back when their time comes."""
    now = now or ev.utcnow()
    with store.engine.connect() as connection:
        due = lc.due_to_wake(connection, now)
    woken = []
    for pid in due:

        def plan(row: dict[str, Any], pid: str = pid) -> list[lc.Planned] | None:
            if row["snoozed_until"] is None or row["snoozed_until"] > now:
                return None
            payload = sp.ProposalWoke(expires_at=now + timedelta(hours=ttl_hours))
            key = f"{pid}:wake:{row['position']}"
            return [(lc.on_proposal(pid, "proposal.woke", payload, key, occurred_at=now), False)]

        result = lc.transition(store, pid, {"snoozed"}, plan)
        if not result.won or result.row is None:
            continue
        woken.append(pid)
        deferred_auto = result.row["verdict"] == "deferred" and result.row["verdict_then"] == "auto"
        if deferred_auto and auto_approve(store, pid, undo_window_seconds, now) and schedule_execution:
            schedule_execution(pid)
        if notifier is not None:
            notifier.post(pid)  # policy-deferred proposals were never posted
            notifier.refresh(pid)
            notifier.notice([f"Back from snooze ({stamp(now)}): {pid}"])
    return woken


def recover_stalled(
    store: EventStore,
    schedule_execution: Callable[[str], object],
    now: datetime | None = None,
    stale_after: timedelta = STALE_AFTER,
) -> list[str]:
    """Queue execute() again for approved proposals whose job was lost and attempts whose worker died."""
    now = now or ev.utcnow()
    with store.engine.connect() as connection:
        due = lc.due_to_run(connection, now, now - stale_after)
    for pid in due:
        log.info("re-queueing execution of %s", pid)
        schedule_execution(pid)
    return due


def run_periodic(ctx: JobContext, now: datetime | None = None) -> dict[str, list[str]]:
    """Everything above, with the App's settings, queue and notifier (the scheduler's one call)."""
    settings, store, notifier = ctx.settings, ctx.store, ctx.notifier

    def schedule(pid: str) -> None:
        schedule_execution(ctx, pid)

    return {
        "expired": expire_due(store, notifier, now),
        "woken": wake_due(
            store,
            ttl_hours=settings.proposal_ttl_hours,
            undo_window_seconds=settings.undo_window_seconds,
            schedule_execution=schedule,
            notifier=notifier,
            now=now,
        ),
        "recovered": recover_stalled(store, schedule, now),
    }


def schedule_wake(queue: JobQueue, proposal_id: str, at: datetime) -> str | None:
    """Queue the wake-up of a snoozed or policy-held proposal for `at` (the minute sweep is the backstop)."""
    job_id = f"wake-{proposal_id}-{int(at.timestamp())}"
    return queue.enqueue(wake, proposal_id, priority=DECISIONS, job_id=job_id, not_before=at)


def wake(proposal_id: str) -> list[str]:
    """Job function: bring back whatever is due now (the proposal it was queued for among them)."""
    ctx = current()
    return wake_due(
        ctx.store,
        ttl_hours=ctx.settings.proposal_ttl_hours,
        undo_window_seconds=ctx.settings.undo_window_seconds,
        schedule_execution=lambda pid: schedule_execution(ctx, pid),
        notifier=ctx.notifier,
    )
