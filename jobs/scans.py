"""Time-based scans: turn "a renewal is coming", "an invoice is overdue", "a lead went quiet" into signals.

Each emitted signal's idempotency key names its window, so a scan can run as often as it likes — and
two schedulers can race — and every window still produces exactly one signal.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, timedelta

from sqlalchemy import select

from store import events as ev
from store import tables as t
from store.uow import EventStore

# Renewal nudges go out this many days before a renewal (agents issue: 30, 14 and 7 days).
RENEWAL_WINDOWS = (30, 14, 7)
# Dunning ladder steps, in days past due: friendly, firm, final, then a task for the operator.
OVERDUE_STEPS = (1, 7, 14, 21)
# A lead with no touch for this many days is "quiet".
QUIET_LEAD_DAYS = 14


def renewal_window(days_left: int) -> int | None:
    """The smallest nudge window that still covers days_left (20 → 30, 10 → 14, 3 → 7), or None."""
    if days_left < 0:
        return None
    fitting = [window for window in RENEWAL_WINDOWS if days_left <= window]
    return min(fitting) if fitting else None


def overdue_step(days_overdue: int) -> int | None:
    """The dunning step reached after days_overdue days (index into OVERDUE_STEPS), or None."""
    reached = [i for i, threshold in enumerate(OVERDUE_STEPS) if days_overdue >= threshold]
    return max(reached) if reached else None


def _emit(
    store: EventStore, customer_id: str, name: str | None, event_type: str, key: str, data: dict, at: datetime
) -> bool:
    payload = ev.SIGNAL_TYPES[event_type](customer=ev.CustomerRef(name=name or customer_id), data=data)
    appended = store.append(
        ev.NewEvent(
            type=event_type,
            payload=payload,
            stream=customer_id,
            idempotency_key=key,
            actor="scheduler",
            source="scan",
            occurred_at=at,
        )
    )
    return not appended.duplicate


def scan_renewals(store: EventStore, today: date, now: datetime, only: Collection[str] | None = None) -> int:
    """Emit subscription.renewal_due once per subscription, renewal date and window (`only`: these
    subscriptions)."""
    s, c = t.subscriptions.c, t.customers.c
    horizon = today + timedelta(days=max(RENEWAL_WINDOWS))
    query = (
        select(s.id, s.customer_id, s.renews_on, s.plan, s.amount_cents, s.currency, c.name)
        .join(t.customers, c.id == s.customer_id)
        .where(s.status == "active", s.renews_on.is_not(None), s.renews_on >= today, s.renews_on <= horizon)
    )
    if only is not None:
        query = query.where(s.id.in_(list(only)))
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    emitted = 0
    for sub_id, customer_id, renews_on, plan, amount_cents, currency, name in rows:
        window = renewal_window((renews_on - today).days)
        if window is None:
            continue
        data = {
            "subscription_id": sub_id,
            "renews_on": renews_on.isoformat(),
            "plan": plan,
            "amount_cents": amount_cents,
            "currency": currency,
            "days_before": window,
        }
        key = f"scan:renewal_due:{sub_id}:{renews_on.isoformat()}:{window}"
        emitted += _emit(store, customer_id, name, "subscription.renewal_due", key, data, now)
    return emitted


def scan_overdue(store: EventStore, today: date, now: datetime, only: Collection[str] | None = None) -> int:
    """Emit invoice.overdue once per invoice and dunning step while it stays unpaid (`only`: these
    invoices)."""
    i, c = t.invoices.c, t.customers.c
    query = (
        select(i.id, i.customer_id, i.due_date, i.amount_cents, i.currency, c.name)
        .join(t.customers, c.id == i.customer_id)
        .where(i.status != "paid", i.due_date.is_not(None), i.due_date < today)
    )
    if only is not None:
        query = query.where(i.id.in_(list(only)))
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    emitted = 0
    for invoice_id, customer_id, due_date, amount_cents, currency, name in rows:
        step = overdue_step((today - due_date).days)
        if step is None:
            continue
        data = {
            "invoice_id": invoice_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "due_date": due_date.isoformat(),
            "days_overdue": (today - due_date).days,
            "dunning_step": step,
        }
        key = f"scan:invoice_overdue:{invoice_id}:{step}"
        emitted += _emit(store, customer_id, name, "invoice.overdue", key, data, now)
    return emitted


def scan_quiet_leads(store: EventStore, now: datetime, quiet_days: int = QUIET_LEAD_DAYS) -> int:
    """Emit lead.quiet once per lead and quiet spell (keyed by the last touch it went quiet after)."""
    c = t.customers.c
    cutoff = now - timedelta(days=quiet_days)
    query = select(c.id, c.name, c.last_touch_at, c.created_at).where(
        c.stage == "lead", c.merged_into.is_(None)
    )
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    emitted = 0
    for customer_id, name, last_touch_at, created_at in rows:
        last = last_touch_at or created_at
        if last > cutoff:
            continue
        data = {"last_touch_at": last.isoformat(), "quiet_days": (now - last).days}
        key = f"scan:lead_quiet:{customer_id}:{last.isoformat()}"
        emitted += _emit(store, customer_id, name, "lead.quiet", key, data, now)
    return emitted
