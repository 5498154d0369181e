"""Event payloads: validation on write, the type registry, money, and upcasting of old versions on read."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from store import events as ev


def test_note_added_v1_is_upcast_to_v2_on_read() -> None:
    payload = ev.parse_payload("note.added", 1, {"body": "called, wants a quote"})
    assert isinstance(payload, ev.NoteAdded)
    assert payload.text == "called, wants a quote"
    assert payload.author == "unknown"


def test_a_v1_note_keeps_its_author_when_it_had_one() -> None:
    payload = ev.parse_payload("note.added", 1, {"body": "hi", "author": "ops"})
    assert isinstance(payload, ev.NoteAdded)
    assert payload.author == "ops"


def test_a_current_version_payload_is_read_as_is() -> None:
    payload = ev.parse_payload("note.added", 2, {"text": "hi", "author": "ops"})
    assert payload == ev.NoteAdded(text="hi", author="ops")


def test_every_old_version_of_every_type_has_an_upcaster() -> None:
    for event_type, model in ev.event_types().items():
        for version in range(1, model.VERSION):
            assert (event_type, version) in ev.UPCASTERS, f"{event_type} v{version} cannot be read"


def test_an_unknown_event_type_is_named() -> None:
    with pytest.raises(ev.UnknownEventType, match=r"nonsense\.happened"):
        ev.payload_model("nonsense.happened")


def test_the_registry_knows_every_layer_s_types_without_importing_them() -> None:
    known = ev.event_types()
    assert {"proposal.decided", "memory.summarised", "digest.sent", "customer.created"} <= set(known)


@pytest.mark.parametrize(
    ("value", "cents"),
    [("49.90", 4990), (49.9, 4990), ("0", 0), (12, 1200), ("1000000.01", 100000001), ("-5.5", -550)],
)
def test_money_in_major_units_becomes_integer_cents(value: Any, cents: int) -> None:
    assert ev.to_cents(value) == cents


@pytest.mark.parametrize("value", ["0.001", "abc", "NaN", "Infinity", "", "1,5"])
def test_money_that_is_not_an_amount_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        ev.to_cents(value)


def test_a_customer_reference_needs_at_least_one_field_and_strips_whitespace() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        ev.CustomerRef()
    with pytest.raises(ValidationError, match="at least one"):
        ev.CustomerRef(name="")
    assert ev.CustomerRef(email="  ann@example.com ").email == "ann@example.com"


def test_a_customer_reference_refuses_unknown_fields_and_oversized_values() -> None:
    with pytest.raises(ValidationError):
        ev.CustomerRef(name="Ann", nickname="A")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ev.CustomerRef(name="x" * 256)


@pytest.mark.parametrize(
    ("signal_type", "data", "ok"),
    [
        ("invoice.paid", {"invoice_id": "in_1", "amount": "10.00"}, True),
        ("invoice.paid", {"amount": "10.00"}, False),
        ("invoice.overdue", {"invoice_id": "", "amount": 1}, False),
        ("invoice.created", {"invoice_id": "in_1", "currency": "euro"}, False),
        ("subscription.created", {"plan": "pro", "renews_on": "2025-02-30"}, False),
        ("subscription.created", {"plan": "pro", "renews_on": "2025-02-28"}, True),
        ("message.received", {"channel": "email", "subject": "hi"}, True),
        ("message.received", {"references": "not-a-list"}, False),
        ("lead.created", {"anything": ["goes"]}, True),
    ],
)
def test_signal_data_is_validated_by_the_model_of_its_type(
    signal_type: str, data: dict[str, Any], ok: bool
) -> None:
    model = ev.SIGNAL_TYPES[signal_type]
    ref = ev.CustomerRef(email="ann@example.com")
    if ok:
        assert model(customer=ref, data=data).data == data
    else:
        with pytest.raises(ValidationError):
            model(customer=ref, data=data)


def test_typed_data_gives_the_parsed_model() -> None:
    signal = ev.InvoiceSignal(
        customer=ev.CustomerRef(email="a@b.co"),
        data={"invoice_id": "in_9", "amount": "49.90", "currency": "EUR", "due_date": "2025-01-31"},
    )
    data = signal.typed_data()
    assert isinstance(data, ev.InvoiceData)
    assert (data.cents(), data.currency, data.due_date) == (4990, "eur", date(2025, 1, 31))


def test_payloads_refuse_unknown_fields_and_are_frozen() -> None:
    with pytest.raises(ValidationError):
        ev.NoteAdded(text="hi", author="me", colour="red")  # type: ignore[call-arg]
    note = ev.NoteAdded(text="hi", author="me")
    with pytest.raises(ValidationError):
        note.text = "changed"  # type: ignore[misc]


def test_a_payload_survives_its_json_round_trip() -> None:
    created = ev.CustomerCreated(
        name="José Müller",
        stage="customer",
        mrr_cents=4900,
        renewal_date=date(2025, 6, 1),
        contacts=(ev.ContactPoint(kind="email", value="jose@example.com"),),
    )
    stored = created.model_dump(mode="json")
    assert ev.parse_payload("customer.created", ev.CustomerCreated.VERSION, stored) == created


@pytest.mark.parametrize(
    ("data", "monthly"),
    [
        ({"amount_cents": 5700}, 5700),  # no interval: monthly, as before intervals were read
        ({"amount_cents": 5700, "interval": "month"}, 5700),
        ({"amount_cents": 120_000, "interval": "year"}, 10_000),
        ({"amount": "999.99", "interval": "Year"}, 8_333),  # 99,999 / 12 = 8,333.25
        ({"amount_cents": 30_000, "interval": "month", "interval_count": 3}, 10_000),  # quarterly
        ({"amount_cents": 1_000, "interval": "week"}, 4_333),  # 52,000 / 12
        ({"amount_cents": 100, "interval": "day"}, 3_042),  # 36,500 / 12 = 3,041.67
        ({"amount_cents": 100, "interval": "year", "interval_count": 2}, 4),  # 4.17
        ({"amount_cents": 5_000, "interval": "fortnight"}, 5_000),  # unknown: counted as monthly
        ({"amount_cents": 5_000, "interval": "year", "interval_count": 0}, 417),  # nonsense count: 1
    ],
)
def test_a_subscription_counts_its_amount_per_month_towards_mrr(data: dict[str, Any], monthly: int) -> None:
    assert ev.SubscriptionData.model_validate(data).monthly_cents() == monthly
