"""Billing monitor: a dunning ladder for overdue invoices that stops the moment the invoice is paid.

It reads the situation first (agents/situations.py): a disputed invoice, an insolvent customer, a
payment confirmed in transit, an agreed payment plan or a customer away → an internal task and no
reminder; a large, long-overdue invoice → an escalation and a call task, no friendly reminder. The
escalation rules are the table in agents/escalation.py.

friendly → firm → final email, then a task for the operator; one step per overdue signal, each step
only once the invoice is at least that many days late, and never twice (a `dunning_key` param, found
in the history, marks a step done). It never offers a discount or refund: a model draft that does is
thrown away for the template, and money kinds only ever come from a person.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any, ClassVar

from agents.context import AgentContext
from agents.drafting import compose, email_of, first_name
from agents.escalation import Situation, escalation, fired
from agents.language import detect
from agents.model import AgentModel, Tier
from agents.proposal import ActionKind, Proposal, Source
from agents.roles.base import Role
from agents.situations import amount_cents, days_overdue, invoice_state

# (step, minimum days overdue). The gaps give the customer a week to react to each email.
LADDER: tuple[tuple[str, int], ...] = (("friendly", 1), ("firm", 8), ("final", 15), ("operator", 22))
_PROMISES_MONEY = re.compile(
    r"\b(discount|refund|credit note|waive|free month|% off|rabatt|erstattung|gutschrift|descuento|reembolso|"
    r"remise|réduction|remboursement)\b",
    re.I,
)

CORE = {
    "friendly": "A friendly reminder that invoice {invoice} for {amount} was due on {due}. If it's "
    "already on its way, thank you and please ignore this.",
    "firm": "Invoice {invoice} for {amount} is now {days} days overdue (due {due}). Could you let me "
    "know when I can expect payment?",
    "final": "This is a final reminder: invoice {invoice} for {amount} is {days} days overdue. Please "
    "arrange payment this week, or reply so we can sort it out together.",
}


CORE_NO_DATE = {
    "friendly": "A friendly reminder that invoice {invoice} for {amount} is still open. If it's already on "
    "its way, thank you and please ignore this.",
    "firm": "Invoice {invoice} for {amount} is still unpaid. Could you let me know when I can expect "
    "payment?",
    "final": "This is a final reminder: invoice {invoice} for {amount} is still unpaid. Please arrange "
    "payment this week, or reply so we can sort it out together.",
}


class BillingMonitor(Role):
    name: ClassVar[str] = "billing_monitor"
    consumes: ClassVar[frozenset[str]] = frozenset({"invoice.overdue", "invoice.paid"})
    # Money kinds are declared so a person's request can flow through here; policy always asks a person.
    kinds: ClassVar[frozenset[ActionKind]] = frozenset(
        {"send_email", "create_task", "escalate", "add_note", "offer_discount", "issue_refund"}
    )
    tier: ClassVar[Tier] = "draft"
    daily_budget_usd: ClassVar[float] = 0.50

    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        """The next dunning step, or the note that dunning stopped."""
        data = context.trigger.data
        invoice = str(data.get("invoice_id") or "")
        sources = (Source(kind="event", id=context.trigger.id),)
        common: dict[str, Any] = {
            "agent": self.name,
            "customer_id": context.customer.id,
            "sources": sources,
            "event_id": context.trigger.id,
        }
        if not invoice:
            text = f"{context.trigger.type} without an invoice_id: nothing to chase or stop"
            return [
                Proposal(kind="add_note", params={"text": text}, rationale=text, confidence=0.9, **common)
            ]
        done = [step for step, _ in LADDER if context.history_mentions(dunning_key(invoice, step))]
        if context.trigger.type == "invoice.paid" or self._paid(context, invoice):
            if not done or context.trigger.type != "invoice.paid":
                return []
            text = f"Invoice {invoice} paid; dunning stopped after the {done[-1]} step."
            return [
                Proposal(
                    kind="add_note",
                    params={"text": text, "stops": f"dunning:{invoice}"},
                    rationale=text,
                    confidence=0.95,
                    **common,
                )
            ]
        due = _date(data.get("due_date")) or _open_due(context, invoice)
        today = context.now.astimezone(context.customer_zone()).date()
        days = days_overdue(data, today, due)
        if due is None and days is not None:
            due = today - timedelta(days=days)
        name = first_name(context) or context.customer.company or "the customer"
        amount = _amount(data)
        text = context.trigger.text or ""
        state = invoice_state(data, text)
        situation = Situation(
            signal_type=context.trigger.type,
            text=text,
            overdue_cents=amount_cents(data),
            days_overdue=days,
            invoice_state=state,
            data=dict(data),
        )
        escalations = fired(situation)
        if state or escalations:
            late = f"{days} days overdue" if days is not None else "overdue"
            why = f"invoice {invoice} {amount} is {late}" + (f"; {state.replace('_', ' ')}" if state else "")
            title = f"Check overdue invoice {invoice} ({amount}) with {name}" + (
                f": {state.replace('_', ' ')}, no reminder sent" if state else ""
            )
            out = [
                Proposal(kind="create_task", params={"title": title}, rationale=why, confidence=0.9, **common)
            ]
            if escalations:
                out.append(escalation(escalations, why, **common))
            return out
        step = next((s for s, _ in LADDER if s not in done), None)
        if step is None:
            return []
        minimum = dict(LADDER)[step]
        if days is not None and days < minimum:
            return []
        late_days = str(days) if days is not None else "?"
        why = f"invoice {invoice} {amount} is {late_days} days overdue; next step: {step}"
        key = dunning_key(invoice, step)
        to = email_of(context)
        if step == "operator" or to is None:
            title = f"Call {name} about overdue invoice {invoice} ({amount})"
            return [
                Proposal(
                    kind="create_task",
                    params={"title": title, "dunning_key": key},
                    rationale=why,
                    confidence=0.9,
                    **common,
                )
            ]
        core = CORE[step].format(invoice=invoice, amount=amount, due=due, days=days)
        if due is None:  # nothing says when it was due: say only that it is open
            core = CORE_NO_DATE[step].format(invoice=invoice, amount=amount)
        drafted = compose(
            context,
            model,
            kind="send_email",
            purpose=f"{step} payment reminder for an overdue invoice; "
            "never offer a discount, refund or credit",
            template_subject=f"Invoice {invoice}" + (" — final reminder" if step == "final" else ""),
            template_core=core,
            facts={
                "invoice": invoice,
                "amount": amount,
                "due_date": str(due),
                "days_overdue": days,
                "tone": step,
            },
            reject_if=_PROMISES_MONEY,
            language=detect(text) if text else "en",
        )
        params = {"to": to, "subject": drafted.draft.subject, "body": drafted.draft.body, "dunning_key": key}
        return [
            Proposal(
                kind="send_email",
                params=params,
                confidence=0.85,
                **drafted.proposal_fields(why),
                **common,
            )
        ]

    def _paid(self, context: AgentContext, invoice: str) -> bool:
        return any(
            e.type == "invoice.paid" and (e.data.get("data") or {}).get("invoice_id") == invoice
            for e in context.recent_events
            if e.id != context.trigger.id
        )


def dunning_key(invoice: str, step: str) -> str:
    """The marker a dunning step's proposal carries, e.g. `dunning:INV-7:firm`."""
    return f"dunning:{invoice}:{step}"


def _open_due(context: AgentContext, invoice: str) -> date | None:
    for row in context.customer.open_invoices:
        if str(row.get("id")) == invoice:
            return _date(row.get("due_date"))
    return None


def _amount(data: dict[str, Any]) -> str:
    currency = str(data.get("currency") or "usd").upper()
    cents = data.get("amount_cents")
    if cents is None and data.get("amount") is not None:
        try:
            return f"{float(data['amount']):.2f} {currency}"
        except (TypeError, ValueError):
            return f"? {currency}"
    return f"{int(cents or 0) / 100:.2f} {currency}"


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
