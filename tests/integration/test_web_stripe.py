"""POST /webhooks/stripe on the real app: Stripe-signed events become signals, once each."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.bootstrap import App
from store import tables as t
from tests.inbound_support import (
    stripe_body,
    stripe_checkout,
    stripe_event,
    stripe_invoice,
    stripe_signature,
    stripe_subscription,
)
from tests.integration.web_harness import NOTHING, counts, settling_client, signal_events, web_container


def deliver(client: TestClient, event: dict[str, Any], signature: str | None = None) -> Any:
    body = stripe_body(event)
    headers = {"content-type": "application/json; charset=utf-8"}
    headers["stripe-signature"] = signature if signature is not None else stripe_signature(body)
    return client.post("/webhooks/stripe", content=body, headers=headers)


def rows(container: App, table: Any) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table))]


def test_checkout_creates_the_customer_and_later_events_find_them_by_stripe_id(
    client: TestClient, container: App
) -> None:
    created = deliver(
        client, stripe_event("checkout.session.completed", stripe_checkout(), event_id="evt_co")
    )
    assert created.status_code == 202 and created.json()["duplicate"] is False
    (customer,) = rows(container, t.customers)
    assert (customer["name"], customer["stage"]) == ("Zofia Wiśniewska", "customer")
    keys = {(row["kind"], row["value"]) for row in rows(container, t.contact_points)}
    assert {("external", "cus_NewCheckout42"), ("email", "zofia@wisla.pl")} <= keys

    updated = stripe_subscription(customer="cus_NewCheckout42", id="sub_NewCheckout42")
    assert deliver(client, stripe_event("customer.subscription.updated", updated)).status_code == 202
    failed = stripe_invoice(customer="cus_NewCheckout42", customer_email=None, customer_name=None)
    assert deliver(client, stripe_event("invoice.payment_failed", failed)).status_code == 202

    assert len(rows(container, t.customers)) == 1  # all three found the same customer
    (subscription,) = rows(container, t.subscriptions)
    assert (subscription["plan"], subscription["amount_cents"], subscription["renews_on"]) == (
        "Team",
        5700,
        date(2025, 4, 9),
    )
    (invoice,) = rows(container, t.invoices)
    assert (invoice["status"], invoice["amount_cents"]) == ("overdue", 4900)
    assert [e["type"] for e in signal_events(container)] == [
        "subscription.created",
        "subscription.updated",
        "invoice.overdue",
    ]
    assert {e["idempotency_key"] for e in signal_events(container)} >= {"stripe:evt_co"}
    assert counts(container)["queued"] == 3


def test_paid_and_cancelled_update_the_projections(client: TestClient, container: App) -> None:
    deliver(client, stripe_event("invoice.payment_failed", stripe_invoice()))
    deliver(client, stripe_event("invoice.paid", stripe_invoice(paid=True)))
    deliver(client, stripe_event("customer.subscription.updated", stripe_subscription()))
    deliver(client, stripe_event("customer.subscription.deleted", stripe_subscription(status="canceled")))
    (invoice,) = rows(container, t.invoices)
    assert invoice["status"] == "paid"
    (subscription,) = rows(container, t.subscriptions)
    assert subscription["status"] == "cancelled"
    (customer,) = rows(container, t.customers)
    assert customer["stage"] == "churned" and customer["mrr_cents"] == 0


def test_mrr_counts_a_yearly_plan_by_the_month_next_to_a_monthly_one(
    client: TestClient, container: App
) -> None:
    deliver(client, stripe_event("customer.subscription.updated", stripe_subscription(quantity=3)))
    yearly = stripe_subscription(id="sub_Yearly")
    item = yearly["items"]["data"][0]
    item["price"] = {
        **item["price"],
        "unit_amount": 24_000,
        "recurring": {"interval": "year", "interval_count": 1},
    }
    deliver(client, stripe_event("customer.subscription.updated", yearly))
    by_id = {row["id"]: row for row in rows(container, t.subscriptions)}
    assert (by_id["sub_Yearly"]["amount_cents"], by_id["sub_Yearly"]["monthly_cents"]) == (72_000, 6_000)
    (customer,) = rows(container, t.customers)
    assert customer["mrr_cents"] == 5_700 + 6_000, (
        "the monthly plan's 57.00 and a twelfth of the yearly 720.00"
    )


def test_a_redelivered_stripe_event_is_recorded_once(client: TestClient, container: App) -> None:
    event = stripe_event("invoice.paid", stripe_invoice(paid=True), event_id="evt_again")
    first = deliver(client, event).json()
    again = deliver(client, event, stripe_signature(stripe_body(event), at=int(time.time()) + 60))
    assert again.status_code == 202
    assert again.json() == {"event_id": first["event_id"], "duplicate": True}
    assert len(signal_events(container)) == 1


@pytest.mark.parametrize("event_type", ["customer.created", "payment_intent.succeeded", "charge.refunded"])
def test_types_we_do_not_use_are_acknowledged_and_ignored(
    client: TestClient, container: App, event_type: str
) -> None:
    response = deliver(client, stripe_event(event_type, {"id": "x_1", "object": event_type.split(".")[0]}))
    assert response.status_code == 200
    assert response.json() == {"ignored": event_type}
    assert counts(container) == NOTHING


def test_a_one_off_checkout_is_ignored(client: TestClient, container: App) -> None:
    response = deliver(client, stripe_event("checkout.session.completed", stripe_checkout(mode="payment")))
    assert response.json() == {"ignored": "checkout.session.completed"}
    assert counts(container) == NOTHING


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        ("", 401),
        ("t=1,v1=00", 401),
        ("nonsense", 401),
        (stripe_signature(b"another body"), 401),
        (stripe_signature(stripe_body(stripe_event("invoice.paid", stripe_invoice())), at=1), 401),
    ],
    ids=["missing", "wrong", "unparseable", "another body", "ancient timestamp"],
)
def test_bad_signatures_are_refused_and_write_nothing(
    client: TestClient, container: App, signature: str, status: int
) -> None:
    response = deliver(client, stripe_event("invoice.paid", stripe_invoice()), signature)
    assert response.status_code == status
    assert response.json()["error"] == "bad_signature"
    assert counts(container) == NOTHING


def test_a_signed_event_with_a_malformed_object_is_422_naming_the_field(
    client: TestClient, container: App
) -> None:
    response = deliver(client, stripe_event("invoice.paid", stripe_invoice(amount_paid="lots")))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data.object.amount_paid"
    assert counts(container) == NOTHING


def test_signed_garbage_is_400(client: TestClient, container: App) -> None:
    body = b'{"id": "evt_1", "type": "invoice.paid",'
    headers = {"stripe-signature": stripe_signature(body)}
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert counts(container) == NOTHING


def test_without_the_secret_the_endpoint_refuses_and_names_the_setting(
    db_url: str, redis_url: str, make_settings: Any
) -> None:
    container = web_container(make_settings, db_url, redis_url, STRIPE_WEBHOOK_SECRET=None)
    try:
        with settling_client(container) as client:
            response = deliver(client, stripe_event("invoice.paid", stripe_invoice()))
        assert response.status_code == 503
        assert "STRIPE_WEBHOOK_SECRET" in response.json()["message"]
        assert counts(container) == NOTHING
    finally:
        container.close()
