"""The proposal service: every step of a proposal's life, one function each, over the unit of work.

A person's decision (approve, edit, reject), snooze, undo, retry and resend come from every surface
through the command layer; auto-approval from the agents' routing; expiry, wake-ups and recovery from
the scheduler and the queue. Each is a compare-and-set on the proposal's state (store.lifecycle
.transition), so two taps, two schedulers or a tap racing the scheduler change nothing twice.

The send-time rules live here once: an outbound kind waits out the undo window after its approval, and
a proposal the policy holds (quiet hours, caps) is sent no earlier than the hold (`send_after`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agents.proposal import OUTBOUND_KINDS
from jobs.connectors.internal import compensate
from jobs.context import JobContext, current
from jobs.execute import schedule_execution
from jobs.queue import DECISIONS, JobQueue
from jobs.reminders import remind_due
from jobs.render_proposal import named, payload_of, stamp
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


@dataclass(frozen=True)
class Decider:
    """Who changes a proposal: an operator (`slack:U123`), or "policy"/"scheduler"."""

    key: str
    name: str | None
    surface: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"by": self.key, "by_name": self.name, "surface": self.surface}


def send_after(row: dict[str, Any], now: datetime, undo_window_seconds: float) -> datetime | None:
    """When an approval of this proposal may be carried out: the end of the undo window for outbound
    kinds, or the end of the policy's hold if that is later; None for at once."""
    not_before = None
    if row["kind"] in UNDO_WINDOW_KINDS and undo_window_seconds > 0:
        not_before = now + timedelta(seconds=undo_window_seconds)
    held = row["not_before"] if row["state"] == "pending" else None  # a policy hold (quiet hours)
    if held is not None and (not_before is None or held > not_before):
        not_before = held
    return not_before


def decide(
    store: EventStore,
    proposal_id: str,
    decision: str,
    decider: Decider,
    *,
    undo_window_seconds: float,
    now: datetime,
    approved: dict[str, Any] | None = None,
    reason: str | None = None,
    correction: dict[str, Any] | None = None,
) -> lc.Transition:
    """Approve, edit-and-approve or reject a pending proposal (exactly one decision wins).

    `approved` is the edited {"params", "draft"} (the proposal as it stands by default);
    `correction` (edited / params_after / rejection_reason) is recorded for the agents to learn from.
    The customer's name and company are read with the proposal, as the transition's `beside`
    (lc.CUSTOMER_OF_PROPOSAL), for the reply.
    """

    def plan(current: dict[str, Any]) -> list[lc.Planned]:
        params, draft = payload_of(current)
        payload = sp.ProposalDecided(
            decision=decision,
            reason=reason,
            approved=None if decision == "rejected" else (approved or {"params": params, "draft": draft}),
            not_before=None if decision == "rejected" else send_after(current, now, undo_window_seconds),
            **decider.fields(),
        )
        key = lc.decision_key(proposal_id)
        # An approval goes through the outbox like a signal: should its execution job be lost (Redis
        # down at the tap, the process killed), the relay hands the decision to the executor handler.
        planned: list[lc.Planned] = [
            (
                lc.on_proposal(
                    proposal_id, "proposal.decided", payload, key, actor=decider.key, occurred_at=now
                ),
                decision != "rejected",
            )
        ]
        if correction is not None:
            planned.append((correction_event(current, decider, **correction), True))
        if decision == "rejected" and current["kind"] == "merge_customers":
            planned.append((dismissal_event(current, decider), False))
        return planned

    customer = (lc.CUSTOMER_OF_PROPOSAL, {"proposal_id": proposal_id})
    return lc.transition(store, proposal_id, sp.DECIDABLE, plan, read_beside=customer)


def correction_event(
    row: dict[str, Any],
    decider: Decider,
    *,
    edited: dict[str, Any] | None = None,
    params_after: dict[str, Any] | None = None,
    rejection_reason: str | None = None,
) -> ev.NewEvent:
    """What an edit or a rejection teaches the agents, as an event on the customer's stream."""
    params, draft = payload_of(row)
    if edited is not None:
        text = f"The operator edited a {row['kind']} draft before approving it."
    else:
        text = f"The operator rejected a {row['kind']} proposal" + (
            f": {rejection_reason}" if rejection_reason else "."
        )
    payload = sp.CorrectionRecorded(
        proposal_id=row["id"],
        agent=row["agent"],
        kind=row["kind"],
        original=draft,
        edited=edited,
        params_before=params,
        params_after=params_after,
        rejection_reason=rejection_reason,
        by=decider.key,
        text=text,
    )
    return ev.NewEvent(
        type="correction.recorded",
        payload=payload,
        stream=row["customer_id"],
        idempotency_key=f"{row['id']}:correction",
        actor=decider.key,
        source="lifecycle",
        causation_id=row["id"],
    )


def dismissal_event(row: dict[str, Any], decider: Decider) -> ev.NewEvent:
    """A rejected merge ("Not the same"): the possible duplicate it came from is closed, not asked again."""
    params, _ = payload_of(row)
    pair = [str(params.get("into") or ""), str(params.get("merged") or "")]
    other = next((cid for cid in pair if cid and cid != row["customer_id"]), pair[1])
    return ev.NewEvent(
        type="customer.duplicate_dismissed",
        payload=ev.DuplicateDismissed(other_id=other),
        stream=row["customer_id"],
        idempotency_key=f"{row['id']}:dismissed",
        actor=decider.key,
        source="lifecycle",
        causation_id=row["id"],
    )


def snooze(
    store: EventStore,
    queue: JobQueue | None,
    proposal_id: str,
    decider: Decider,
    until: datetime,
    now: datetime,
) -> lc.Transition:
    """Put a pending proposal away until `until`; a wake-up job is queued for then."""

    def plan(current: dict[str, Any]) -> list[lc.Planned]:
        payload = sp.ProposalSnoozed(until=until, **decider.fields())
        key = f"{proposal_id}:snooze:{current['position']}"
        return [
            (
                lc.on_proposal(
                    proposal_id, "proposal.snoozed", payload, key, actor=decider.key, occurred_at=now
                ),
                False,
            )
        ]

    result = lc.transition(store, proposal_id, sp.DECIDABLE, plan)
    if result.won and queue is not None:
        schedule_wake(queue, proposal_id, until)
    return result


def undo(store: EventStore, proposal_id: str, decider: Decider) -> lc.Transition:
    """Cancel an approval still waiting out its undo window, or compensate an executed internal action."""

    def plan(current: dict[str, Any]) -> list[lc.Planned] | None:
        if current["state"] == "approved":
            undone = sp.ProposalUndone(how="cancelled", **decider.fields())
            return [
                (
                    lc.on_proposal(
                        proposal_id, "proposal.undone", undone, f"{proposal_id}:undo", actor=decider.key
                    ),
                    False,
                )
            ]
        if not current["compensation"]:
            return None
        effects = compensate(
            current["kind"], current["customer_id"], current["compensation"], proposal_id, decider.key
        )
        undone = sp.ProposalUndone(how="compensated", **decider.fields())
        main = lc.on_proposal(
            proposal_id, "proposal.undone", undone, f"{proposal_id}:undo", actor=decider.key
        )
        return [(main, False), *((effect, True) for effect in effects)]

    return lc.transition(store, proposal_id, {"approved", "executed"}, plan)


def resolve(
    store: EventStore, proposal_id: str, decider: Decider, choice: str, allowed: str
) -> lc.Transition:
    """After a failure (`retry`) or an unknown outcome (`resend` / `keep`): the operator's choice."""

    def plan(current: dict[str, Any]) -> list[lc.Planned] | None:
        if allowed == "failed" and not current["retryable"]:
            return None
        payload = sp.ActionResolved(choice=choice, **decider.fields())
        key = f"{proposal_id}:resolve:{current['attempts']}"
        dispatch = choice != "keep"  # a retry or resend is queued through the outbox, as an approval is
        return [(lc.on_proposal(proposal_id, "action.resolved", payload, key, actor=decider.key), dispatch)]

    return lc.transition(store, proposal_id, {allowed}, plan)


def supersede(
    store: EventStore, proposal_id: str, decider: Decider, copy: dict[str, Any], key: str
) -> tuple[lc.Transition, str]:
    """A failed message's edited copy, recorded as a new proposal (under `key`) in the same transaction
    that closes the failed one: a Retry of the failed one and the copy cannot both win. Returns the
    transition of the failed one and the copy's id."""
    copy_id = sp.new_proposal_id()

    def plan(current: dict[str, Any]) -> list[lc.Planned]:
        closed = sp.ActionResolved(choice="superseded", **decider.fields())
        # The key a Retry of this attempt would take: whichever comes first wins, the other is lost.
        resolved = f"{proposal_id}:resolve:{current['attempts']}"
        recorded = sp.ProposalRecorded(proposal=copy, verdict="approval", rules=list(current["rules"] or []))
        return [
            (lc.on_proposal(proposal_id, "action.resolved", closed, resolved, actor=decider.key), False),
            (lc.on_proposal(copy_id, "proposal.recorded", recorded, key, actor=decider.key), False),
        ]

    return lc.transition(store, proposal_id, {"failed"}, plan), copy_id


def auto_approve(store: EventStore, proposal_id: str, undo_window_seconds: float, now: datetime) -> bool:
    """The policy's decision: approve without a tap (outbound kinds still wait out the undo window)."""

    def plan(row: dict[str, Any]) -> list[lc.Planned]:
        proposed = row["proposed"]
        payload = sp.ProposalDecided(
            decision="auto",
            by="policy",
            by_name="policy",
            approved={"params": proposed.get("params") or {}, "draft": proposed.get("draft")},
            not_before=send_after({**row, "not_before": None}, now, undo_window_seconds),
        )
        key = lc.decision_key(proposal_id)
        return [
            (
                lc.on_proposal(
                    proposal_id, "proposal.decided", payload, key, actor="policy", occurred_at=now
                ),
                True,
            )
        ]

    return lc.transition(store, proposal_id, {"pending"}, plan).won


def expire_due(store: EventStore, notifier: Any = None, now: datetime | None = None) -> list[str]:
    """Expire pending proposals whose time is up (nothing is sent) and tell the operator."""
    now = now or ev.utcnow()
    with store.engine.connect() as connection:
        due = lc.due_to_expire(connection, now)
    expired: list[str] = []
    rows: list[dict[str, Any]] = []
    for pid in due:

        def plan(row: dict[str, Any], pid: str = pid) -> list[lc.Planned] | None:
            if row["expires_at"] is None or row["expires_at"] > now:
                return None  # woken or re-timed since we looked
            key = lc.decision_key(pid)
            return [
                (lc.on_proposal(pid, "proposal.expired", sp.ProposalExpired(), key, occurred_at=now), False)
            ]

        result = lc.transition(store, pid, {"pending"}, plan)
        if result.won:
            expired.append(pid)
            if result.row is not None:
                rows.append(result.row)
            if notifier is not None:
                notifier.refresh(pid)
    if expired and notifier is not None:
        notifier.notice(
            [
                f"{len(expired)} proposal(s) expired without a decision; nothing was sent.",
                *_named(store, rows),
            ]
        )
    return expired


def _named(store: EventStore, rows: list[dict[str, Any]]) -> list[str]:
    """Each proposal as a notice names it (`#7 Send email for Ada Lovelace`)."""
    with store.engine.connect() as connection:
        return [named(row, lc.customer_name(connection, row["customer_id"])) for row in rows]


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
            notifier.notice([f"Back from snooze ({stamp(now)}): {_named(store, [result.row])[0]}"])
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

    def schedule_again(pid: str) -> None:
        schedule_execution(ctx, pid, again=True)

    return {
        "reminded": remind_due(
            store,
            notifier,
            ttl_hours=settings.proposal_ttl_hours,
            share=settings.expiry_reminder_at,
            now=now,
        ),
        "expired": expire_due(store, notifier, now),
        "woken": wake_due(
            store,
            ttl_hours=settings.proposal_ttl_hours,
            undo_window_seconds=settings.undo_window_seconds,
            schedule_execution=schedule,
            notifier=notifier,
            now=now,
        ),
        "recovered": recover_stalled(store, schedule_again, now),
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
