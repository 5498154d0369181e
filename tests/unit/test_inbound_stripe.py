"""The Stripe connector: signatures checked the way Stripe signs, events mapped to our signals."""

from __future__ import annotations

import json
import time
from datetime import date

import pytest

from bot.inbound.errors import BadSignature, InvalidSignal, MalformedBody, NotConfigured
from bot.inbound.stripe import map_event, verify_event
from store.events import InvoiceData, SubscriptionData
from tests.inbound_support import (
    STRIPE_SECRET,
    stripe_body,
    stripe_checkout,
    stripe_event,
    stripe_invoice,
    stripe_signature,
    stripe_subscription,
)


def test_a_correctly_signed_event_verifies_and_parses() -> None:
    body = stripe_body(stripe_event("invoice.paid", stripe_invoice(paid=True), event_id="evt_1"))
    event = verify_event(STRIPE_SECRET, body, stripe_signature(body))
    assert event["id"] == "evt_1"
    assert event["data"]["object"]["lines"]["data"][0]["amount"] == 4900


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "t=notanumber,v1=abc",
        "v1=deadbeef",
        "t=1741600000",
        "garbage",
    ],
)
def test_missing_or_malformed_signature_headers_are_refused(header: str | None) -> None:
    body = stripe_body(stripe_event("invoice.paid", stripe_invoice()))
    with pytest.raises(BadSignature):
        verify_event(STRIPE_SECRET, body, header)


def test_a_signature_with_another_secret_or_over_another_body_is_refused() -> None:
    body = stripe_body(stripe_event("invoice.paid", stripe_invoice()))
    with pytest.raises(BadSignature):
        verify_event(STRIPE_SECRET, body, stripe_signature(body, secret="whsec_someone_else"))
    with pytest.raises(BadSignature):
        verify_event(STRIPE_SECRET, body.replace(b"4900", b"0001"), stripe_signature(body))


@pytest.mark.parametrize("skew", [-301, 301], ids=["too old", "too new"])
def test_a_timestamp_outside_five_minutes_is_refused(skew: int) -> None:
    body = stripe_body(stripe_event("invoice.paid", stripe_invoice()))
    with pytest.raises(BadSignature, match=r"(?i)timestamp"):
        verify_event(STRIPE_SECRET, body, stripe_signature(body, at=int(time.time()) + skew))


def test_without_the_secret_nothing_is_accepted_and_the_setting_is_named() -> None:
    body = stripe_body(stripe_event("invoice.paid", stripe_invoice()))
    with pytest.raises(NotConfigured, match="STRIPE_WEBHOOK_SECRET"):
        verify_event(None, body, stripe_signature(body))


def test_a_non_utf8_body_is_refused_as_unverifiable() -> None:
    body = b'{"id": "evt_\xff"}'
    with pytest.raises(BadSignature):
        verify_event(STRIPE_SECRET, body, stripe_signature(body))


@pytest.mark.parametrize("body", [b"{oops", b"[1, 2]", b'"text"'])
def test_a_signed_body_that_is_not_an_event_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        verify_event(STRIPE_SECRET, body, stripe_signature(body))


def test_payment_failed_becomes_invoice_overdue_with_the_stripe_customer() -> None:
    inbound = map_event(stripe_event("invoice.payment_failed", stripe_invoice(), event_id="evt_pf"))
    assert inbound is not None
    assert (inbound.type, inbound.key, inbound.source) == ("invoice.overdue", "stripe:evt_pf", "stripe")
    customer = inbound.signal.customer
    assert (customer.external_id, customer.email, customer.name) == (
        "cus_RkT3mQz8Yx1aBc",
        "billing@brightpath.io",
        "Brightpath Ltd",
    )
    data = inbound.signal.typed_data()
    assert isinstance(data, InvoiceData)
    assert (data.invoice_id, data.cents(), data.currency) == ("in_1R2xYzLkdIwHu7ix0aBcDeFg", 4900, "eur")
    assert inbound.signal.data["subscription_id"] == "sub_1R2xAbLkdIwHu7ixQ"
    assert inbound.signal.data["attempt_count"] == 2
    assert inbound.occurred_at is not None and inbound.occurred_at.timestamp() == 1741600000


def test_invoice_paid_records_the_amount_paid() -> None:
    inbound = map_event(stripe_event("invoice.paid", stripe_invoice(amount=12345, paid=True)))
    assert inbound is not None and inbound.type == "invoice.paid"
    assert inbound.signal.typed_data().cents() == 12345


def test_an_invoice_with_a_due_date_carries_it() -> None:
    inbound = map_event(stripe_event("invoice.payment_failed", stripe_invoice(due_date=1743465600)))
    assert inbound is not None
    assert inbound.signal.typed_data().due_date == date(2025, 4, 1)


def test_subscription_updated_carries_plan_amount_and_renewal_date() -> None:
    inbound = map_event(stripe_event("customer.subscription.updated", stripe_subscription(quantity=3)))
    assert inbound is not None and inbound.type == "subscription.updated"
    data = inbound.signal.typed_data()
    assert isinstance(data, SubscriptionData)
    assert (data.subscription_id, data.plan, data.cents(), data.currency) == (
        "sub_1R2xAbLkdIwHu7ixQ",
        "Team",
        5700,
        "eur",
    )
    assert data.renews_on == date(2025, 4, 9)
    assert (data.interval, data.interval_count, data.monthly_cents()) == ("month", 1, 5700)
    assert inbound.signal.customer.external_id == "cus_RkT3mQz8Yx1aBc"


def test_a_yearly_subscription_keeps_its_interval_so_mrr_is_a_twelfth() -> None:
    subscription = stripe_subscription(quantity=2)
    subscription["items"]["data"][0]["price"]["recurring"] = {"interval": "year", "interval_count": 1}
    subscription["items"]["data"][0]["price"]["unit_amount"] = 60_000
    inbound = map_event(stripe_event("customer.subscription.updated", subscription))
    assert inbound is not None
    data = inbound.signal.typed_data()
    assert isinstance(data, SubscriptionData)
    assert (data.cents(), data.interval, data.monthly_cents()) == (120_000, "year", 10_000)


def test_subscription_updated_from_an_older_api_version_reads_the_legacy_fields() -> None:
    legacy = stripe_subscription(current_period_end=1746057600)  # 2025-05-01, on the subscription
    item = legacy["items"]["data"][0]
    del item["current_period_end"], item["price"]
    item["plan"] = {"id": "plan_pro", "object": "plan", "amount": 9900, "currency": "usd", "nickname": None}
    legacy["currency"] = "usd"
    inbound = map_event(stripe_event("customer.subscription.updated", legacy))
    assert inbound is not None
    data = inbound.signal.typed_data()
    assert (data.plan, data.cents(), data.renews_on) == ("plan_pro", 3 * 9900, date(2025, 5, 1))


def test_subscription_deleted_becomes_subscription_cancelled() -> None:
    inbound = map_event(stripe_event("customer.subscription.deleted", stripe_subscription(status="canceled")))
    assert inbound is not None and inbound.type == "subscription.cancelled"
    assert inbound.signal.data["status"] == "canceled"
    assert inbound.signal.typed_data().renews_on is None


def test_checkout_completed_becomes_a_new_customer_with_a_subscription() -> None:
    inbound = map_event(stripe_event("checkout.session.completed", stripe_checkout()))
    assert inbound is not None and inbound.type == "subscription.created"
    customer = inbound.signal.customer
    assert (customer.external_id, customer.email, customer.name) == (
        "cus_NewCheckout42",
        "zofia@wisla.pl",
        "Zofia Wiśniewska",
    )
    data = inbound.signal.typed_data()
    assert (data.subscription_id, data.cents()) == ("sub_NewCheckout42", 5700)


def test_a_guest_checkout_without_a_stripe_customer_is_known_by_email() -> None:
    inbound = map_event(stripe_event("checkout.session.completed", stripe_checkout(customer=None)))
    assert inbound is not None
    assert inbound.signal.customer.external_id is None
    assert inbound.signal.customer.email == "zofia@wisla.pl"


@pytest.mark.parametrize(
    "event",
    [
        stripe_event("customer.created", {"id": "cus_1", "object": "customer"}),
        stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"}),
        stripe_event("checkout.session.completed", stripe_checkout(mode="payment")),
    ],
    ids=["customer.created", "charge.succeeded", "one-off checkout"],
)
def test_events_we_do_not_use_are_ignored(event: dict[str, object]) -> None:
    assert map_event(event) is None


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "invoice.paid", "data": {"object": stripe_invoice()}}, "id"),
        (stripe_event("invoice.paid", "not an object"), "data.object"),  # type: ignore[arg-type]
        (stripe_event("invoice.paid", stripe_invoice(amount_paid="49.00")), "data.object.amount_paid"),
        (stripe_event("invoice.paid", stripe_invoice(currency=7)), "data.object.currency"),
        (
            stripe_event(
                "invoice.paid", stripe_invoice(customer=None, customer_email=None, customer_name=None)
            ),
            "data.object.customer",
        ),
    ],
    ids=["no id", "object not an object", "amount a string", "currency a number", "nobody"],
)
def test_a_malformed_event_of_a_used_type_is_refused_naming_the_field(
    event: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSignal) as excinfo:
        map_event(json.loads(json.dumps(event)))
    assert any(error["field"].startswith(field) for error in excinfo.value.errors), excinfo.value.errors


@pytest.mark.parametrize("event_type", [None, 7, {"nested": "dict"}, ["invoice.paid"]])
def test_an_event_whose_type_is_not_a_string_is_refused_naming_type(event_type: object) -> None:
    event = stripe_event("invoice.paid", stripe_invoice())
    event["type"] = event_type
    with pytest.raises(InvalidSignal) as excinfo:
        map_event(event)
    assert excinfo.value.errors == [{"field": "type", "message": "must be a string"}]
