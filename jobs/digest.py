"""The daily digest: what needs the operator today, read from projections (never a scan of the log).

`build_digest` gathers plain data; `Digest.lines()` is the text every surface shows; `render_chart`
draws the one PNG (proposals and decisions over 14 days, and the pipeline by stage).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, func, select

from jobs.context import JobContext, current
from jobs.notify import post_copy
from jobs.queue import HOUSEKEEPING
from jobs.render_proposal import compact_line, stamp, view_of
from jobs.views import ProposalView
from store import events as ev
from store import lifecycle as lc
from store import tables as t
from store.proposal_metrics import RATE_WINDOW, LifecycleMetrics, recent_metrics
from store.uow import EventStore

CHART_DAYS = 14
RENEWAL_HORIZON_DAYS = 7
LIST_LIMIT = 5  # items per section: a phone screen, not a report
# A new customer at one of these stages is a new lead, unless the only mail from them was screened out.
NEW_LEAD_STAGES = ("lead", "qualified")
SCREENED_INTENTS = ("spam", "auto_reply")

log = logging.getLogger(__name__)


@dataclass
class Digest:
    """One day's digest as plain data."""

    day: date
    failed: dict[str, str] = field(default_factory=dict)  # surfaces it could not reach, with the error
    pending: list[dict[str, Any]] = field(default_factory=list)
    pending_total: int = 0
    renewals: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    new_leads: list[dict[str, Any]] = field(default_factory=list)
    screened_senders: int = 0  # new customers whose only mail was spam or an auto-reply: not leads
    decisions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    spend_usd: dict[str, float] = field(default_factory=dict)
    metrics: LifecycleMetrics | None = None  # rates, time to decision, cost per action (RATE_WINDOW)
    expired: list[str] = field(default_factory=list)  # expired unseen since the day before, one line each
    pending_views: list[ProposalView] = field(default_factory=list)  # the pending ones, with buttons
    chart: Path | None = None

    EMPTY: ClassVar[str] = "nothing"

    def lines(self) -> list[str]:
        """The digest as short lines for a phone."""
        out = [f"Daily digest — {self.day:%A %d %B %Y}"]
        out.append(f"Waiting for you: {self.pending_total} proposal(s)")
        out += [f"  • {p['summary']}" for p in self.pending]
        if self.pending_total > len(self.pending):
            out.append(f"  … and {self.pending_total - len(self.pending)} more: /pending")
        out.append(f"Renewals in the next {RENEWAL_HORIZON_DAYS} days: {len(self.renewals) or self.EMPTY}")
        out += [
            f"  • {r['customer']} — {r['plan'] or 'plan'} {_money(r['amount_cents'])} on {r['renews_on']}"
            for r in self.renewals[:LIST_LIMIT]
        ]
        out.append(f"Overdue invoices: {len(self.overdue) or self.EMPTY}")
        out += [
            f"  • {i['customer']} — {i['id']} {_money(i['amount_cents'])} due {i['due_date']}"
            for i in self.overdue[:LIST_LIMIT]
        ]
        screened = (
            f" ({self.screened_senders} spam or auto-reply sender(s) left out)"
            if self.screened_senders
            else ""
        )
        out.append(f"New leads since yesterday: {len(self.new_leads) or self.EMPTY}{screened}")
        out += [
            f"  • {lead['name']}" + (f" ({lead['company']})" if lead.get("company") else "")
            for lead in self.new_leads[:LIST_LIMIT]
        ]
        if self.decisions:
            decided = ", ".join(f"{n} {k}" for k, n in sorted(self.decisions.items()))
            result = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
            out.append(f"Yesterday: {decided}" + (f" → {result}" if result else ""))
        else:
            out.append("Yesterday: no decisions")
        if self.spend_usd:
            total = sum(self.spend_usd.values())
            per = ", ".join(f"{agent} ${usd:.2f}" for agent, usd in sorted(self.spend_usd.items()))
            out.append(f"Agent spend yesterday: ${total:.2f} ({per})")
        if self.expired:
            out.append(f"Expired without a decision since yesterday: {len(self.expired)} (nothing was sent)")
            out += [f"  • {line}" for line in self.expired[:LIST_LIMIT]]
        if self.metrics is not None and self.metrics.decided:
            out.append(f"Last {RATE_WINDOW.days} days: " + metrics_line(self.metrics))
        return out


def metrics_line(m: LifecycleMetrics) -> str:
    """Decision rates, time to decision and cost per action in one line (what /metrics reports too)."""
    rates = [("approved", m.approval_rate), ("edited", m.edit_rate), ("rejected", m.rejection_rate)]
    parts = [", ".join(f"{name} {value or 0:.0%}" for name, value in rates)]
    parts[0] += f", undone {m.undo_rate or 0:.0%}"
    if m.decision_seconds_p50 is not None:
        parts.append(f"median time to decision {duration(m.decision_seconds_p50)}")
    if m.cost_per_executed_action is not None:
        parts.append(f"cost per action ${m.cost_per_executed_action:.4f} ({m.executed} done)")
    else:
        parts.append(f"model spend ${m.cost_usd:.4f}, no action done yet")
    return " · ".join(parts)


def duration(seconds: float) -> str:
    """A wait as a person says it: 40s, 12m, 2h 05m, 3d 4h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def _money(cents: int | None) -> str:
    return f"${(cents or 0) / 100:,.2f}"


def local_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day, in UTC (23 or 25 hours long across DST changes)."""
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _only_screened_mail(connection: Connection, leads: Select[Any]) -> set[str]:
    """Those of the new customers (`leads`, a query of their ids) whose every signal was a message read
    as spam or an auto-reply, the operator's corrections counted: a sender the mail made a customer
    of, not a lead. A web form's lead, or a message not classified yet, keeps them a lead. Read by each
    stream's index (the new customers' streams), never by a scan of the log."""
    e = t.events.c
    mine = e.stream.in_(leads.scalar_subquery())
    classified: dict[str, dict[str, str]] = {}  # stream -> message event id -> intent, corrected last
    readings = connection.execute(
        select(e.stream, e.payload)
        .where(mine, e.type.in_(("message.classified", "intent.corrected")))
        .order_by(e.position)
    )
    for stream, payload in readings:
        classified.setdefault(stream, {})[str(payload.get("message_event_id"))] = str(payload.get("intent"))
    if not classified:
        return set()
    signals: dict[str, int] = dict(
        connection.execute(
            select(e.stream, func.count()).where(mine, e.type.in_(tuple(ev.SIGNAL_TYPES))).group_by(e.stream)
        ).all()
    )
    return {
        stream
        for stream, intents in classified.items()
        if signals.get(stream) == sum(intent in SCREENED_INTENTS for intent in intents.values())
    }


def build_digest(connection: Connection, now: datetime, tz: ZoneInfo) -> Digest:
    """Gather today's digest for the operator in time zone tz."""
    today = now.astimezone(tz).date()
    digest = Digest(day=today)
    p, c = t.proposals.c, t.customers.c
    digest.pending_total = connection.execute(
        select(func.count()).select_from(t.proposals).where(p.state == "pending")
    ).scalar_one()
    for row in lc.in_state(connection, "pending", limit=LIST_LIMIT):
        name = lc.customer_name(connection, row["customer_id"])
        digest.pending.append({"id": row["id"], "summary": compact_line(row, name, now)})
        digest.pending_views.append(view_of(row, name))
    digest.expired = [
        compact_line(row, lc.customer_name(connection, row["customer_id"]), now)
        + f" · expired {stamp(row['decided_at'])}"
        for row in lc.expired_since(connection, now - timedelta(days=1))
    ]

    s = t.subscriptions.c
    renewals = connection.execute(
        select(s.plan, s.amount_cents, s.renews_on, c.name)
        .join(t.customers, c.id == s.customer_id)
        .where(
            s.status == "active",
            s.renews_on >= today,
            s.renews_on <= today + timedelta(days=RENEWAL_HORIZON_DAYS),
        )
        .order_by(s.renews_on)
    )
    digest.renewals = [
        {"plan": plan, "amount_cents": cents, "renews_on": renews_on, "customer": name}
        for plan, cents, renews_on, name in renewals
    ]
    i = t.invoices.c
    overdue = connection.execute(
        select(i.id, i.amount_cents, i.due_date, c.name)
        .join(t.customers, c.id == i.customer_id)
        .where(i.status != "paid", i.due_date < today)
        .order_by(i.due_date)
    )
    digest.overdue = [
        {"id": iid, "amount_cents": cents, "due_date": due, "customer": name}
        for iid, cents, due, name in overdue
    ]
    since = now - timedelta(days=1)
    new_customers = (c.stage.in_(NEW_LEAD_STAGES), c.created_at >= since, c.merged_into.is_(None))
    leads = connection.execute(
        select(c.id, c.name, c.company).where(*new_customers).order_by(c.created_at)
    ).all()
    screened = _only_screened_mail(connection, select(c.id).where(*new_customers))
    digest.new_leads = [
        {"name": lead.name, "company": lead.company} for lead in leads if lead.id not in screened
    ]
    digest.screened_senders = len(screened)

    start, end = local_day_bounds(today - timedelta(days=1), tz)
    decided = connection.execute(
        select(p.decision, p.state, p.agent, p.cost_usd).where(p.decided_at >= start, p.decided_at < end)
    ).all()
    digest.decisions = Counter(row.decision or "decided" for row in decided)
    digest.outcomes = Counter(
        row.state for row in decided if row.state in {"executed", "failed", "undone", "uncertain"}
    )
    spend = connection.execute(
        select(p.agent, func.sum(p.cost_usd))
        .where(p.created_at >= start, p.created_at < end)
        .group_by(p.agent)
    ).all()
    digest.spend_usd = {agent: float(total or 0) for agent, total in spend if total}
    digest.metrics = recent_metrics(connection, now)
    return digest


def chart_series(connection: Connection, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """Proposals and decisions per local day for CHART_DAYS days, and customers by stage."""
    today = now.astimezone(tz).date()
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    start, _ = local_day_bounds(days[0], tz)
    p, c = t.proposals.c, t.customers.c
    created = Counter(
        row.created_at.astimezone(tz).date()
        for row in connection.execute(select(p.created_at).where(p.created_at >= start))
    )
    decided = Counter(
        row.decided_at.astimezone(tz).date()
        for row in connection.execute(select(p.decided_at).where(p.decided_at >= start))
    )
    stages: dict[str, int] = dict(
        connection.execute(
            select(c.stage, func.count()).where(c.merged_into.is_(None)).group_by(c.stage)
        ).all()
    )
    return {
        "days": days,
        "proposals": [created[d] for d in days],
        "decisions": [decided[d] for d in days],
        "stages": {stage: stages.get(stage, 0) for stage in ev.STAGES},
    }


def render_chart(series: dict[str, Any], path: Path) -> Path:
    """Draw the digest chart as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    labels = [d.strftime("%d") for d in series["days"]]
    x = range(len(labels))
    left.bar([i - 0.2 for i in x], series["proposals"], width=0.4, label="proposals", color="#4a7bd0")
    left.bar([i + 0.2 for i in x], series["decisions"], width=0.4, label="decisions", color="#3aa675")
    left.set_xticks(list(x), labels, fontsize=7)
    left.set_title(f"last {CHART_DAYS} days", fontsize=9)
    left.legend(fontsize=7, frameon=False)
    stages = series["stages"]
    right.barh(list(stages), list(stages.values()), color="#d08a4a")
    right.invert_yaxis()
    right.set_title("pipeline by stage", fontsize=9)
    right.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def claim_slot(store: EventStore, slot: datetime, digest: Digest, surface: str | None = None) -> bool:
    """Record that the digest for slot was sent (to one surface, or all); False if it already was."""
    appended = store.append(
        ev.NewEvent(
            type="digest.sent",
            payload=ev.DigestSent(
                slot=slot, pending=digest.pending_total, overdue=len(digest.overdue), surface=surface
            ),
            stream="digest",
            idempotency_key=_slot_key(slot, surface),
            actor="scheduler",
            source="scheduler",
        ),
        dispatch=False,
    )
    return not appended.duplicate


def _slot_key(slot: datetime, surface: str | None) -> str:
    key = f"digest:{slot.astimezone(UTC).isoformat()}"
    return f"{key}:{surface}" if surface else key


def sent_to(store: EventStore, slot: datetime, surfaces: list[str]) -> set[str]:
    """The surfaces the digest for slot has reached (all of them for a slot claimed before per-surface
    records)."""
    e = t.events.c
    keys = [_slot_key(slot, None), *(_slot_key(slot, name) for name in surfaces)]
    with store.engine.connect() as connection:
        found = set(
            connection.execute(select(e.idempotency_key).where(e.idempotency_key.in_(keys))).scalars()
        )
    if _slot_key(slot, None) in found:
        return set(surfaces)
    return {name for name in surfaces if _slot_key(slot, name) in found}


def prepare(store: EventStore, now: datetime, tz: ZoneInfo, chart_dir: Path) -> Digest:
    """Build the digest and its chart."""
    with store.engine.connect() as connection:
        digest = build_digest(connection, now, tz)
        series = chart_series(connection, now, tz)
    digest.chart = render_chart(series, chart_dir / f"digest-{digest.day.isoformat()}.png")
    return digest


def post_to(store: EventStore, surface: Any, digest: Digest) -> None:
    """Send the digest to one surface: the text, the chart where the surface can show images, then
    the first pending proposals with their buttons (copies kept current like the first ones)."""
    surface.post_notice(digest.lines())
    if digest.chart is not None and hasattr(surface, "post_image"):
        surface.post_image(digest.chart, f"Digest {digest.day.isoformat()}")
    for view in digest.pending_views:
        post_copy(store, surface, view)


def post_each(
    store: EventStore, digest: Digest, surfaces: list[Any], slot: datetime | None = None
) -> dict[str, str]:
    """Send the digest to each surface on its own; returns the ones that failed, with the error.

    One surface failing never keeps the digest from the others. For a scheduled slot, each surface
    that got it is recorded (`digest.sent` per surface), and one that already has it is skipped.
    """
    done = sent_to(store, slot, [s.name for s in surfaces]) if slot is not None else set()
    failed: dict[str, str] = {}
    for surface in surfaces:
        if surface.name in done:
            continue
        try:
            post_to(store, surface, digest)
        except Exception as exc:  # a surface's outage is reported and retried, never fatal to the rest
            log.warning("the digest could not be posted to %s: %s", surface.name, exc)
            failed[surface.name] = str(exc) or type(exc).__name__
            continue
        if slot is not None:
            claim_slot(store, slot, digest, surface.name)
    return failed


# Waits before the retries of a surface the scheduled digest could not reach.
DIGEST_RETRY_DELAYS_S = (60, 300, 900, 3600)


def deliver(ctx: JobContext, slot: datetime | None = None, attempt: int = 0) -> Digest:
    """Build the digest and post it to every surface on its own (the scheduler's and `--post`'s call).

    For a scheduled slot, a surface that failed is told about on the others and retried by a queued
    job (DIGEST_RETRY_DELAYS_S); surfaces that got it are not posted to again.
    """
    settings = ctx.settings
    digest = prepare(ctx.store, slot or ev.utcnow(), settings.timezone, settings.crm_data_dir / "charts")
    digest.failed = post_each(ctx.store, digest, ctx.notifier.surfaces, slot)
    if digest.failed:
        _report_failures(ctx, digest, slot, attempt)
    return digest


def _report_failures(ctx: JobContext, digest: Digest, slot: datetime | None, attempt: int) -> None:
    names = ", ".join(f"{name} ({error})" for name, error in digest.failed.items())
    if slot is not None and attempt < len(DIGEST_RETRY_DELAYS_S):
        delay = DIGEST_RETRY_DELAYS_S[attempt]
        ctx.queue.enqueue(
            retry_digest,
            slot.isoformat(),
            attempt + 1,
            priority=HOUSEKEEPING,
            job_id=f"digest-retry-{slot.astimezone(UTC).isoformat()}-{attempt + 1}",
            not_before=ev.utcnow() + timedelta(seconds=delay),
        )
        line = f"⚠ The digest could not be posted to {names}; trying again in {max(delay // 60, 1)} min."
    else:
        tries = f" after {attempt + 1} tries" if slot is not None else ""
        line = f"⚠ The digest could not be posted to {names}{tries}."
    log.warning(line)
    for surface in ctx.notifier.surfaces:
        if surface.name in digest.failed:
            continue
        try:
            surface.post_notice([line])
        except Exception:
            log.exception("telling %s about the digest failure failed", surface.name)


def retry_digest(slot_iso: str, attempt: int) -> list[str]:
    """Job function: post a scheduled digest to the surfaces it has not reached yet."""
    digest = deliver(current(), datetime.fromisoformat(slot_iso), attempt)
    return sorted(digest.failed)
