"""Signing and Stripe-shaped bodies for the intake tests: what real senders put on the wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.inbound.verify import sign_standard_webhook

SIGNALS_SECRET = "whsec_" + base64.b64encode(b"chatops-crm test signing key 32b").decode()
STRIPE_SECRET = "whsec_stripe_test_0123456789abcdef"
EMAILS = Path(__file__).parent / "fixtures" / "email"


def signed_headers(
    body: bytes,
    webhook_id: str | None = None,
    *,
    at: datetime | None = None,
    secret: str = SIGNALS_SECRET,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Standard Webhooks headers for body, as a sender computes them."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign_standard_webhook(secret, webhook_id, at, body),
        "content-type": content_type,
    }


def stripe_signature(body: bytes, *, at: int | None = None, secret: str = STRIPE_SECRET) -> str:
    """The Stripe-Signature header: t=<unix>,v1=hex HMAC-SHA256 of "{t}.{body}"."""
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signal_body(signal_type: str = "lead.created", **fields: Any) -> bytes:
    document: dict[str, Any] = {
        "type": signal_type,
        "customer": {"name": "Ada Lovelace", "email": "ada@analytical.io"},
    }
    document.update(fields)
    return json.dumps(document, ensure_ascii=False).encode()


def email(name: str) -> bytes:
    return (EMAILS / name).read_bytes()


def stripe_event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """An event envelope as Stripe sends it (API version 2025-03-31.basil)."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": 1741600000,
        "data": {"object": obj, "previous_attributes": {}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": f"req_{uuid.uuid4().hex[:14]}", "idempotency_key": str(uuid.uuid4())},
        "type": event_type,
    }


def stripe_invoice(
    *, customer: str | None = "cus_RkT3mQz8Yx1aBc", amount: int = 4900, paid: bool = False, **extra: Any
) -> dict[str, Any]:
    invoice = {
        "id": "in_1R2xYzLkdIwHu7ix0aBcDeFg",
        "object": "invoice",
        "account_country": "US",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "attempt_count": 1 if paid else 2,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": 1741500000,
        "currency": "eur",
        "customer": customer,
        "customer_email": "billing@brightpath.io",
        "customer_name": "Brightpath Ltd",
        "due_date": None,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/test_YWNjdF8x",
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": "il_1R2xYzLkdIwHu7ix",
                    "object": "line_item",
                    "amount": amount,
                    "currency": "eur",
                    "period": {"end": 1744000000, "start": 1741500000},
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": "/v1/invoices/in_1R2xYzLkdIwHu7ix0aBcDeFg/lines",
        },
        "livemode": False,
        "metadata": {},
        "number": "BP-0042",
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": "sub_1R2xAbLkdIwHu7ixQ"},
            "type": "subscription_details",
        },
        "period_end": 1741500000,
        "period_start": 1738900000,
        "status": "paid" if paid else "open",
        "total": amount,
    }
    invoice.update(extra)
    return invoice


def stripe_subscription(
    *, customer: str = "cus_RkT3mQz8Yx1aBc", status: str = "active", quantity: int = 3, **extra: Any
) -> dict[str, Any]:
    subscription = {
        "id": "sub_1R2xAbLkdIwHu7ixQ",
        "object": "subscription",
        "billing_cycle_anchor": 1741500000,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": 1738900000,
        "currency": "eur",
        "customer": customer,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_RkT3pQ9w",
                    "object": "subscription_item",
                    "current_period_end": 1744178400,  # 2025-04-09
                    "current_period_start": 1741500000,
                    "price": {
                        "id": "price_1R2xAbLkdIwHu7ixTeam",
                        "object": "price",
                        "active": True,
                        "currency": "eur",
                        "lookup_key": "team_monthly",
                        "nickname": "Team",
                        "product": "prod_RkT3Team",
                        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
                        "type": "recurring",
                        "unit_amount": 1900,
                        "unit_amount_decimal": "1900",
                    },
                    "quantity": quantity,
                    "subscription": "sub_1R2xAbLkdIwHu7ixQ",
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": "/v1/subscription_items?subscription=sub_1R2xAbLkdIwHu7ixQ",
        },
        "latest_invoice": "in_1R2xYzLkdIwHu7ix0aBcDeFg",
        "livemode": False,
        "metadata": {},
        "status": status,
    }
    subscription.update(extra)
    return subscription


def stripe_checkout(
    *, customer: str | None = "cus_NewCheckout42", mode: str = "subscription"
) -> dict[str, Any]:
    return {
        "id": "cs_test_a1B2c3D4e5F6g7H8i9J0",
        "object": "checkout.session",
        "amount_subtotal": 5700,
        "amount_total": 5700,
        "currency": "eur",
        "customer": customer,
        "customer_creation": "always",
        "customer_details": {
            "address": {"city": "Kraków", "country": "PL", "line1": "ul. Długa 1", "postal_code": "31-147"},
            "email": "zofia@wisla.pl",
            "name": "Zofia Wiśniewska",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "created": 1741600000,
        "expires_at": 1741686400,
        "livemode": False,
        "mode": mode,
        "payment_status": "paid",
        "status": "complete",
        "subscription": "sub_NewCheckout42" if mode == "subscription" else None,
        "success_url": "https://example.com/thanks",
    }


def stripe_body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON
