"""The Stripe connector: a signed Stripe event → the signal it means, keyed by Stripe's event id.

Stripe resends an event until it gets a 2xx, so types we do not use are answered "ignored" (not an
error) and a redelivery of one we do use is a no-op (DESIGN.md invariant 2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bot.inbound.errors import BadSignature, InvalidSignal, MalformedBody, NotConfigured
from bot.inbound.intake import InboundSignal
from bot.inbound.signals import invalid, load_json
from bot.inbound.verify import verify_stripe_signature
from store.events import SIGNAL_TYPES, CustomerRef

SOURCE = "stripe"

# Stripe event type → our signal type. checkout.session.completed is only a subscription when its
# mode is "subscription"; one-off payments reach us as invoice events if invoicing is on.
SIGNAL_FOR = {
    "invoice.payment_failed": "invoice.overdue",
    "invoice.paid": "invoice.paid",
    "customer.subscription.updated": "subscription.updated",
    "customer.subscription.deleted": "subscription.cancelled",
    "checkout.session.completed": "subscription.created",
}


def verify_event(secret: str | None, body: bytes, signature: str | None) -> dict[str, Any]:
    """Check the Stripe-Signature header on the raw body, then parse it; return the event as a dict."""
    if not secret:
        raise NotConfigured("STRIPE_WEBHOOK_SECRET is not set, so this endpoint cannot authenticate anything")
    if not signature:
        raise BadSignature("missing Stripe-Signature header")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSignature("signature refused: the body is not the UTF-8 Stripe signs") from None
    verify_stripe_signature(secret, body, signature)
    event = load_json(body)
    if not isinstance(event, dict):
        raise MalformedBody("malformed Stripe event: the body is not a JSON object")
    return event


def map_event(event: dict[str, Any]) -> InboundSignal | None:
    """The signal a Stripe event means, or None for the types we do not use."""
    event_id = _text(event, "id", "id")
    if event_id is None or len(event_id) > 128:
        raise InvalidSignal(
            "id is missing", errors=[{"field": "id", "message": "required, at most 128 characters"}]
        )
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise InvalidSignal(
            "type must be a string", errors=[{"field": "type", "message": "must be a string"}]
        )
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if event_type not in SIGNAL_FOR:
        return None
    if not isinstance(obj, dict):
        raise InvalidSignal(
            "data.object is missing", errors=[{"field": "data.object", "message": "must be an object"}]
        )
    if event_type == "checkout.session.completed" and obj.get("mode") != "subscription":
        return None
    signal_type = SIGNAL_FOR[event_type]
    builder = _checkout if event_type == "checkout.session.completed" else _BUILDERS[signal_type]
    customer, text, payload = builder(obj)
    try:
        who = CustomerRef(**customer)
    except ValidationError as exc:
        raise invalid(exc, prefix="data.object.customer") from None
    try:
        signal = SIGNAL_TYPES[signal_type](customer=who, text=text, data=payload)
    except ValidationError as exc:
        raise invalid(exc, prefix="data.object") from None
    created = event.get("created")
    occurred = _datetime(created) if isinstance(created, int) else None
    return InboundSignal(signal_type, signal, f"{SOURCE}:{event_id}", SOURCE, occurred)


Built = tuple[dict[str, Any], str, dict[str, Any]]


def _invoice(obj: dict[str, Any], amount_field: str, verb: str) -> Built:
    invoice_id = _text(obj, "id", "data.object.id") or ""
    amount = _int(obj, amount_field) or 0
    currency = (_text(obj, "currency", "data.object.currency") or "usd").lower()
    due = _int(obj, "due_date")
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "amount_cents": amount,
        "currency": currency,
        "due_date": _datetime(due).date().isoformat() if due is not None else None,
        "stripe_customer": _customer_id(obj),
        "attempt_count": _int(obj, "attempt_count"),
        "hosted_invoice_url": _text(obj, "hosted_invoice_url", "data.object.hosted_invoice_url"),
        "subscription_id": _invoice_subscription(obj),
    }
    text = f"Invoice {invoice_id} {verb}: {amount / 100:.2f} {currency.upper()}"
    return _customer(obj), text, {key: value for key, value in data.items() if value is not None}


def _overdue(obj: dict[str, Any]) -> Built:
    return _invoice(
        obj, "amount_remaining" if obj.get("amount_remaining") else "amount_due", "payment failed"
    )


def _paid(obj: dict[str, Any]) -> Built:
    return _invoice(obj, "amount_paid", "paid")


def _subscription(obj: dict[str, Any], verb: str) -> Built:
    subscription_id = _text(obj, "id", "data.object.id")
    items = obj.get("items", {})
    lines = items.get("data", []) if isinstance(items, dict) else []
    lines = [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []
    first = lines[0] if lines else {}
    price = first.get("price") or first.get("plan") or obj.get("plan") or {}
    price = price if isinstance(price, dict) else {}
    recurring = price.get("recurring")
    recurring = recurring if isinstance(recurring, dict) else {}
    amount = sum(_line_amount(line) for line in lines)
    # API versions from 2025-03-31 moved current_period_end from the subscription to its items.
    period_end = _int(obj, "current_period_end") or _int(first, "current_period_end")
    currency = _text(price, "currency", "data.object.items.data.0.price.currency") or _text(
        obj, "currency", "data.object.currency"
    )
    data: dict[str, Any] = {
        "subscription_id": subscription_id,
        "plan": _plan_name(price),
        "amount_cents": amount,
        "currency": (currency or "usd").lower(),
        "renews_on": _datetime(period_end).date().isoformat() if period_end and verb == "updated" else None,
        "status": _text(obj, "status", "data.object.status"),
        "interval": _text(recurring, "interval", "interval") or _text(price, "interval", "interval"),
        "interval_count": _int(recurring, "interval_count") or _int(price, "interval_count"),
        "cancel_at_period_end": obj.get("cancel_at_period_end") is True or None,
        "stripe_customer": _customer_id(obj),
    }
    text = f"Subscription {subscription_id} {verb}"
    if data["plan"]:
        text += f": {data['plan']}, {amount / 100:.2f} {data['currency'].upper()}"
    return _customer(obj), text, {key: value for key, value in data.items() if value is not None}


def _checkout(obj: dict[str, Any]) -> Built:
    details = obj.get("customer_details")
    details = details if isinstance(details, dict) else {}
    customer = _customer(obj)
    customer.setdefault(
        "email",
        _text(details, "email", "data.object.customer_details.email")
        or _text(obj, "customer_email", "data.object.customer_email"),
    )
    customer.setdefault("name", _text(details, "name", "data.object.customer_details.name"))
    customer.setdefault("phone", _text(details, "phone", "data.object.customer_details.phone"))
    amount = _int(obj, "amount_total") or 0
    currency = (_text(obj, "currency", "data.object.currency") or "usd").lower()
    data: dict[str, Any] = {
        "subscription_id": _text(obj, "subscription", "data.object.subscription")
        or _nested_id(obj.get("subscription")),
        "amount_cents": amount,
        "currency": currency,
        "checkout_session": _text(obj, "id", "data.object.id"),
        "stripe_customer": _customer_id(obj),
    }
    text = f"New subscription through checkout: {amount / 100:.2f} {currency.upper()}"
    customer = {key: value for key, value in customer.items() if value}
    return customer, text, {key: value for key, value in data.items() if value is not None}


_BUILDERS = {
    "invoice.overdue": _overdue,
    "invoice.paid": _paid,
    "subscription.updated": lambda obj: _subscription(obj, "updated"),
    "subscription.cancelled": lambda obj: _subscription(obj, "cancelled"),
}


def _line_amount(line: dict[str, Any]) -> int:
    """Cents a subscription item bills per period: price times quantity (`plan.amount` on old APIs)."""
    price, plan = line.get("price"), line.get("plan")
    price = price if isinstance(price, dict) else {}
    plan = plan if isinstance(plan, dict) else {}
    unit = _int(price, "unit_amount") or _int(plan, "amount") or 0
    return unit * (_int(line, "quantity") or 1)


def _plan_name(price: dict[str, Any]) -> str | None:
    for field in ("nickname", "lookup_key", "product", "id"):
        value = price.get(field)
        if isinstance(value, str) and value:
            return value[:128]
    return None


def _customer(obj: dict[str, Any]) -> dict[str, Any]:
    """Who the object is about: the Stripe customer id, and email and name when Stripe includes them."""
    found: dict[str, Any] = {"external_id": _customer_id(obj)}
    expanded = obj.get("customer")
    source = expanded if isinstance(expanded, dict) else obj
    prefix = "customer_" if source is obj else ""
    found["email"] = _text(source, f"{prefix}email", f"data.object.{prefix}email")
    found["name"] = _text(source, f"{prefix}name", f"data.object.{prefix}name")
    return {key: value for key, value in found.items() if value}


def _customer_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("customer")
    return value if isinstance(value, str) and value else _nested_id(value)


def _invoice_subscription(obj: dict[str, Any]) -> str | None:
    if isinstance(obj.get("subscription"), str):
        return str(obj["subscription"])
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    if isinstance(details, dict) and isinstance(details.get("subscription"), str):
        return str(details["subscription"])
    return None


def _nested_id(value: Any) -> str | None:
    return value["id"] if isinstance(value, dict) and isinstance(value.get("id"), str) else None


def _text(obj: dict[str, Any], field: str, where: str) -> str | None:
    value = obj.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidSignal(
            f"{where} must be a string", errors=[{"field": where, "message": "must be a string"}]
        )
    return value


def _int(obj: dict[str, Any], field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        where = f"data.object.{field}"
        raise InvalidSignal(
            f"{where} must be an integer", errors=[{"field": where, "message": "must be an integer"}]
        )
    return value


def _datetime(timestamp: int) -> datetime:
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidSignal(
            "a timestamp is out of range", errors=[{"field": "created", "message": "out of range"}]
        ) from None
