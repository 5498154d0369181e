"""The `data` fields each signal type is read for, and warnings for the ones nobody reads.

A field the project does not read comes back in the 202 answer's `warnings`, with the nearest known
name when there is one ("did you mean renews_on?"), so a typo does not silently cost a reminder.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from typing import Any

_MESSAGE = frozenset(
    {
        "channel",
        "subject",
        "message_id",
        "in_reply_to",
        "references",
        "thread_id",
        "headers",
        "chat_id",
        "from",
        "auto_submitted",
    }
)
_INVOICE = frozenset(
    {
        "invoice_id",
        "amount",
        "amount_cents",
        "currency",
        "due_date",
        "days_overdue",
        "disputed",
        "status",
        "customer_status",
        "payment_status",
        "payment_plan",
        "away_until",
        "paid_at",
    }
)
_SUBSCRIPTION = frozenset(
    {
        "subscription_id",
        "plan",
        "renews_on",
        "renewal_date",
        "days_until",
        "amount",
        "amount_cents",
        "currency",
        "interval",
        "interval_count",
        "seats",
        "quantity",
        "status",
        "cancel_at_period_end",
        "plan_price",
        "health",
        "at_risk",
        "auto_renew",
    }
)
_LEAD = frozenset(
    {"source", "company_size", "employees", "title", "role", "budget", "budget_cents", "subject"}
)
READ_FIELDS: dict[str, frozenset[str]] = {
    "message.received": _MESSAGE,
    "message.sent": _MESSAGE,
    "lead.created": _LEAD,
    "lead.quiet": _LEAD,
    "invoice.created": _INVOICE,
    "invoice.overdue": _INVOICE,
    "invoice.paid": _INVOICE,
    "subscription.created": _SUBSCRIPTION,
    "subscription.updated": _SUBSCRIPTION,
    "subscription.renewal_due": _SUBSCRIPTION,
    "subscription.cancelled": _SUBSCRIPTION,
}
# How alike a field name must be to a known one to be suggested (difflib ratio).
SUGGEST_FROM = 0.6
# Warnings remembered, by type and field name: a sender repeats the same unread fields in every
# signal, and finding the nearest known name took ~20 us of each request's ~700 us under load.
WARNINGS_CACHED = 4096


def unread_field_warnings(signal_type: str, data: Mapping[str, Any]) -> list[str]:
    """One warning per `data` field that the project does not read for this signal type."""
    known = READ_FIELDS.get(signal_type)
    if known is None:
        return []
    return [_unread_field_warning(signal_type, name) for name in sorted(set(data) - known)]


@functools.lru_cache(maxsize=WARNINGS_CACHED)
def _unread_field_warning(signal_type: str, name: str) -> str:
    near = difflib.get_close_matches(name, sorted(READ_FIELDS[signal_type]), n=1, cutoff=SUGGEST_FROM)
    hint = f"; did you mean {near[0]}?" if near else ""
    return f"data.{name} is not read for {signal_type}{hint}"
