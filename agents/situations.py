"""What the billing and renewal roles read before they write: the state of an invoice or a renewal.

Structured fields first (`disputed`, `status`, `payment_status`, `payment_plan`, `away_until`,
`customer_status`, `cancel_at_period_end`, `health`, …); the signal's text (an internal note from the
billing system or the operator) second, by phrases in the languages we support.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

InvoiceState = str  # disputed | insolvent | in_transit | payment_plan | away

_DISPUTED = re.compile(
    r"\b(disput\w*|contest\w*|widerspr\w*|widersprochen|reklamiert|betwist\w*|kwestionuj\w*|impugn\w*)\b",
    re.I,
)
_INSOLVENT = re.compile(
    r"\b(insolven\w*|bankrupt\w*|administration|liquidat\w*|receivership|faillite|redressement judiciaire|"
    r"quiebra|concurso de acreedores|fallimento|falência|faillissement|upadłoś\w*)\b",
    re.I,
)
_IN_TRANSIT = re.compile(
    r"(transfer (went out|was sent|sent|is on its way)|payment (confirmed )?sent|paid yesterday|wire sent|"
    r"in transit|überwiesen|virement (effectué|envoyé|parti)|transferencia (enviada|realizada)|"
    r"bonifico|transferência (feita|enviada)|overgemaakt|przelew (wysłany|zlecony)|confirmed sent)",
    re.I,
)
_PLAN = re.compile(
    r"(payment plan|instal(l)?ments|ratenzahlung|raten|échéancier|plan de pagos?|plano de pagamento|"
    r"prestações|piano di rientro|rateizza\w*|betalingsregeling|rozłożenie na raty|raty)",
    re.I,
)
_AWAY = re.compile(
    r"(away until|out of office until|back on|closed until|abwesend bis|absent jusqu|ausente hasta|"
    r"assente fino|ausente até|afwezig tot|nieobecn\w* do)",
    re.I,
)
_CANCEL_CONFIRMED = re.compile(
    r"(confirmed (the )?cancell?ation|cancell?ation confirmed|confirmed .{0,20}cancel|will not renew|"
    r"kündigung (bestätigt|eingegangen)|a confirmé la résiliation|résiliation confirmée|"
    r"confirmó la cancelación|cancelación confirmada|disdetta confermata|cancelamento confirmado|"
    r"opzegging bevestigd|potwierdził\w* rezygnację)",
    re.I,
)
_AT_RISK = re.compile(
    r"(at risk|churn|reviewing (all )?vendors|looking at alternatives|compar\w* (vendors|providers)|"
    r"usage (down|dropped)|logins dropped|champion left|asked about (notice|cancell?ation)|"
    r"kündigungsfrist|vergleicht anbieter|concurrent|competencia|concorrent\w*|concurrentie|konkurencj\w*)",
    re.I,
)
_FREE = re.compile(r"\b(free|gratis|gratuit\w*|kostenlos|darmowy)\b", re.I)
PERIODS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}


def invoice_state(data: dict[str, Any], text: str) -> InvoiceState | None:
    """Why an overdue invoice should not get a reminder, if it should not."""
    status = str(data.get("status") or "").lower()
    if data.get("disputed") or status == "disputed" or _DISPUTED.search(text):
        return "disputed"
    customer_status = str(data.get("customer_status") or "").lower()
    if customer_status in {"insolvent", "bankrupt", "administration"} or _INSOLVENT.search(text):
        return "insolvent"
    if str(data.get("payment_status") or "").lower() in {
        "in_transit",
        "sent",
        "pending",
    } or _IN_TRANSIT.search(text):
        return "in_transit"
    if data.get("payment_plan") or _PLAN.search(text):
        return "payment_plan"
    if data.get("away_until") or _AWAY.search(text):
        return "away"
    return None


def days_overdue(data: dict[str, Any], today: date, due: date | None) -> int | None:
    """Days late from `days_overdue`, else from the due date."""
    value = data.get("days_overdue")
    try:
        if value is not None:
            return int(value)
    except (TypeError, ValueError):
        pass
    return (today - due).days if due else None


def amount_cents(data: dict[str, Any]) -> int:
    """The amount in cents from `amount_cents` or `amount` (major units), 0 when missing."""
    try:
        if data.get("amount_cents") is not None:
            return int(data["amount_cents"])
        if data.get("amount") is not None:
            return round(float(data["amount"]) * 100)
    except (TypeError, ValueError):
        return 0
    return 0


def renewal_date(data: dict[str, Any], today: date, subscriptions: list[dict[str, Any]]) -> date | None:
    """When the renewal is: `renews_on`, `renewal_date`, `days_until`, else the subscription on file."""
    for key in ("renews_on", "renewal_date"):
        found = parse_date(data.get(key))
        if found:
            return found
    try:
        if data.get("days_until") is not None:
            return today + timedelta(days=int(data["days_until"]))
    except (TypeError, ValueError):
        pass
    wanted = str(data.get("subscription_id") or "")
    for sub in subscriptions:
        if not wanted or str(sub.get("id")) == wanted:
            found = parse_date(sub.get("renews_on"))
            if found:
                return found
    return None


def yearly_cents(data: dict[str, Any]) -> int:
    """What the subscription bills in a year."""
    periods = PERIODS_PER_YEAR.get(str(data.get("interval") or "month").lower(), 12)
    return amount_cents(data) * periods // max(int(data.get("interval_count") or 1), 1)


def renewal_state(data: dict[str, Any], text: str) -> str | None:
    """Why a renewal needs no customer message (cancelled, free, monthly), or `at_risk`, or None."""
    status = str(data.get("status") or "").lower()
    if (
        data.get("cancel_at_period_end")
        or status in {"cancelled", "canceled"}
        or _CANCEL_CONFIRMED.search(text)
    ):
        return "cancelled"
    price = data.get("plan_price", data.get("amount", data.get("amount_cents")))
    if (price is not None and amount_cents({"amount": price}) == 0) or _FREE.search(
        str(data.get("plan") or "")
    ):
        return "free"
    at_risk = str(data.get("health") or "").lower() in {"at_risk", "red", "poor"} or data.get("at_risk")
    if at_risk or _AT_RISK.search(text):
        return "at_risk"
    if str(data.get("interval") or "").lower() == "month" and int(data.get("interval_count") or 1) == 1:
        return "monthly"
    return None


def parse_date(value: Any) -> date | None:
    """An ISO date, or None."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None
