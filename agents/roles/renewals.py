"""Renewal nudges: one email 30, 14 and 7 days before a renewal, never two for the same window.

The window a renewal is in is decided by days left in the customer's time zone; each nudge carries a
`window_key` param, and an earlier event that mentions the same key (the proposal event of an earlier
run) means this window is done.

It reads the situation first (agents/situations.py): the date from `renews_on`, `renewal_date` or
`days_until`, else the customer's subscription in the store. A confirmed cancellation, a free account
or a routine monthly auto-renew gets no customer message, only a note saying why; a valuable renewal
at risk is escalated with a call task (agents/escalation.py); a signal with no usable date gets a note
saying what was missing.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from agents.context import AgentContext
from agents.drafting import compose, email_of, first_name
from agents.escalation import Situation, escalation, fired
from agents.model import AgentModel, Tier
from agents.proposal import ActionKind, Proposal, Source
from agents.roles.base import Role
from agents.situations import renewal_date, renewal_state, yearly_cents

WINDOWS = (30, 14, 7)  # days before renewal; a nudge at each
# A customer paying at least this much a month also gets a call task in the last window.
CALL_ABOVE_MRR_CENTS = 50_000

CORE = {
    30: "A quick heads-up: your {plan} renews on {renews_on}. Nothing to do if you're happy; if you'd "
    "like to change anything before then, just reply.",
    14: "Your {plan} renews in two weeks, on {renews_on}. If there's anything you'd like to review "
    "first, I'm happy to help.",
    7: "Your {plan} renews next week, on {renews_on}. Let me know if you have any questions before then.",
}


def window_for(days_left: int) -> int | None:
    """The nudge window a renewal `days_left` away belongs to: the smallest window ≥ days_left."""
    if days_left < 0:
        return None
    fitting = [w for w in WINDOWS if days_left <= w]
    return min(fitting) if fitting else None


class RenewalNudges(Role):
    name: ClassVar[str] = "renewal_nudges"
    consumes: ClassVar[frozenset[str]] = frozenset({"subscription.renewal_due"})
    kinds: ClassVar[frozenset[ActionKind]] = frozenset({"send_email", "create_task", "escalate", "add_note"})
    tier: ClassVar[Tier] = "draft"
    daily_budget_usd: ClassVar[float] = 0.50

    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        """A nudge for the current window, if it is due and not yet sent."""
        data = context.trigger.data
        today = context.now.astimezone(context.customer_zone()).date()
        renews_on = renewal_date(data, today, context.customer.subscriptions)
        sub_id = str(data.get("subscription_id") or data.get("plan") or "subscription")
        plan = str(data.get("plan") or "subscription")
        note_fields: dict[str, Any] = {
            "agent": self.name,
            "customer_id": context.customer.id,
            "sources": (Source(kind="event", id=context.trigger.id),),
            "event_id": context.trigger.id,
        }

        def note(text: str) -> list[Proposal]:
            return [
                Proposal(
                    kind="add_note", params={"text": text}, rationale=text, confidence=0.9, **note_fields
                )
            ]

        if renews_on is None:
            return note(
                f"Renewal of {plan}: no date (renews_on, renewal_date or days_until), nothing proposed"
            )
        state = renewal_state(data, context.trigger.text or "")
        if state == "cancelled" or self._cancelled(context, sub_id):
            return note(f"{plan} renewal on {renews_on}: cancellation confirmed, no message to the customer")
        if self._renewed(context, sub_id, renews_on):
            return []
        if state == "free":
            return note(f"{plan} renewal on {renews_on}: free plan, no message to the customer")
        days_left = (renews_on - today).days
        if state == "at_risk":
            seats = str(data.get("seats") or "")
            situation = Situation(
                signal_type=context.trigger.type,
                text=context.trigger.text or "",
                mrr_cents=context.customer.mrr_cents,
                seats=int(seats) if seats.isdigit() else None,
                yearly_cents=yearly_cents(data),
                renewal_at_risk=True,
                data=dict(data),
            )
            escalations = fired(situation)
            name = first_name(context) or context.customer.company or "the customer"
            why = f"{plan} renews on {renews_on} ({days_left} days) and is at risk"
            out = [
                Proposal(
                    kind="create_task",
                    params={"title": f"Call {name} before the at-risk {plan} renewal on {renews_on}"},
                    rationale=why,
                    confidence=0.9,
                    **note_fields,
                )
            ]
            if escalations:
                out.append(escalation(escalations, why, **note_fields))
            return out
        if state == "monthly":
            return note(f"{plan} renews on {renews_on}: routine monthly auto-renewal, no message needed")
        window = window_for(days_left)
        if window is None:
            return []
        key = f"renewal:{sub_id}:{renews_on.isoformat()}:{window}"
        if context.history_mentions(key):
            return []
        why = f"{plan} renews on {renews_on} ({days_left} days): the {window}-day nudge is due"
        to = email_of(context)
        sources = (Source(kind="event", id=context.trigger.id),)
        common: dict[str, Any] = {
            "agent": self.name,
            "customer_id": context.customer.id,
            "sources": sources,
            "event_id": context.trigger.id,
        }
        proposals: list[Proposal] = []
        if to is not None:
            drafted = compose(
                context,
                model,
                kind="send_email",
                purpose=f"friendly renewal reminder, {days_left} days before the renewal; no discounts",
                template_subject=f"Your {plan} renews on {renews_on:%d %B}",
                template_core=CORE[window].format(plan=plan, renews_on=f"{renews_on:%d %B %Y}"),
                facts={"plan": plan, "renews_on": renews_on.isoformat(), "days_left": days_left},
            )
            params = {
                "to": to,
                "subject": drafted.draft.subject,
                "body": drafted.draft.body,
                "window_key": key,
            }
            proposals.append(
                Proposal(
                    kind="send_email",
                    params=params,
                    confidence=0.85,
                    **drafted.proposal_fields(why),
                    **common,
                )
            )
        if to is None or (window == min(WINDOWS) and context.customer.mrr_cents >= CALL_ABOVE_MRR_CENTS):
            name = first_name(context) or context.customer.company or "the customer"
            proposals.append(
                Proposal(
                    kind="create_task",
                    params={
                        "title": f"Call {name} before the {plan} renewal on {renews_on}",
                        "window_key": key,
                    },
                    rationale=why,
                    confidence=0.85,
                    **common,
                )
            )
        return proposals

    def _cancelled(self, context: AgentContext, sub_id: str) -> bool:
        if context.customer.stage == "churned":
            return True
        for sub in context.customer.subscriptions:
            if str(sub.get("id")) == sub_id and sub.get("status") == "cancelled":
                return True
        return any(
            e.type == "subscription.cancelled" and _sub_of(e.data) in (sub_id, None)
            for e in context.recent_events
        )

    def _renewed(self, context: AgentContext, sub_id: str, renews_on: date) -> bool:
        for sub in context.customer.subscriptions:
            current = _date(sub.get("renews_on"))
            if str(sub.get("id")) == sub_id and current is not None and current > renews_on:
                return True
        return any(
            e.type in ("subscription.renewed", "subscription.updated")
            and _sub_of(e.data) == sub_id
            and (_date(e.data.get("data", {}).get("renews_on")) or renews_on) > renews_on
            for e in context.recent_events
        )


def _sub_of(payload: dict[str, Any]) -> str | None:
    data = payload.get("data") or {}
    value = data.get("subscription_id") or data.get("plan")
    return str(value) if value else None


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
