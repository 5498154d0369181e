"""The generic signal connector: Standard Webhooks verification and the signal body schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.inbound.errors import BadSignature, InvalidSignal, MalformedBody, NotConfigured, UnknownSignalType
from bot.inbound.signals import content_key, parse_signal, webhook_key
from bot.inbound.verify import verify_standard_webhook
from store.events import SIGNAL_TYPES
from tests.inbound_support import SIGNALS_SECRET, signal_body, signed_headers

OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def verify(body: bytes, headers: dict[str, str], secret: str | None = SIGNALS_SECRET) -> str:
    return verify_standard_webhook(secret, "SIGNALS_SECRET", body, headers)


def test_a_correctly_signed_body_verifies_and_yields_its_webhook_id() -> None:
    body = signal_body()
    assert verify(body, signed_headers(body, "msg_2Lq0b3")) == "msg_2Lq0b3"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers: (body + b" ", headers),
        lambda body, headers: (body, {**headers, "webhook-id": "msg_other"}),
        lambda body, headers: (
            body,
            {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)},
        ),
        lambda body, headers: (body, signed_headers(body, secret=OTHER_SECRET)),
        lambda body, headers: (body, {**headers, "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}),
        lambda body, headers: (body, {**headers, "webhook-signature": "garbage without a comma"}),
        lambda body, headers: (body, {**headers, "webhook-signature": "v1,%%%not-base64%%%"}),
        lambda body, headers: (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        lambda body, headers: (body, {k: v for k, v in headers.items() if k != "webhook-timestamp"}),
        lambda body, headers: (body, {k: v for k, v in headers.items() if k != "webhook-id"}),
        lambda body, headers: (body, {**headers, "webhook-timestamp": "yesterday"}),
        lambda body, headers: (body, {**headers, "webhook-timestamp": "1e400"}),
    ],
    ids=[
        "body changed",
        "id changed",
        "timestamp changed",
        "other secret",
        "wrong signature",
        "signature not v1,b64",
        "signature not base64",
        "no signature",
        "no timestamp",
        "no id",
        "timestamp not a number",
        "timestamp overflows",
    ],
)
def test_forged_or_incomplete_signatures_are_refused(tamper: Callable[..., Any]) -> None:
    body = signal_body()
    forged_body, forged_headers = tamper(body, signed_headers(body))
    with pytest.raises(BadSignature):
        verify(forged_body, forged_headers)


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["too old", "too new"])
def test_a_timestamp_outside_five_minutes_is_refused(skew: timedelta) -> None:
    body = signal_body()
    with pytest.raises(BadSignature, match="timestamp"):
        verify(body, signed_headers(body, at=datetime.now(UTC) + skew))


def test_a_timestamp_within_five_minutes_is_accepted() -> None:
    body = signal_body()
    verify(body, signed_headers(body, at=datetime.now(UTC) - timedelta(minutes=4)))


def test_without_a_secret_nothing_is_accepted_and_the_setting_is_named() -> None:
    body = signal_body()
    with pytest.raises(NotConfigured, match="SIGNALS_SECRET"):
        verify(body, signed_headers(body), secret=None)


def test_a_non_utf8_body_is_verified_byte_for_byte() -> None:
    body = "Subject: Año\r\n\r\nSeñor".encode("iso-8859-1")
    headers = signed_headers(body)
    assert verify(body, headers) == headers["webhook-id"]
    with pytest.raises(BadSignature):
        verify(body.replace(b"Se", b"Sa"), headers)
    with pytest.raises(BadSignature, match="timestamp"):
        verify(body, signed_headers(body, at=datetime.now(UTC) - timedelta(minutes=10)))


def test_an_overlong_webhook_id_is_refused() -> None:
    body = signal_body()
    with pytest.raises(BadSignature, match="webhook-id"):
        verify(body, signed_headers(body, "m" * 500))


def test_a_valid_body_becomes_a_signal_keyed_by_the_webhook_id() -> None:
    body = signal_body(
        "invoice.overdue",
        occurred_at="2025-03-04T10:00:00",
        customer={"name": "  Zoë 👩‍💻 Ünïcode  ", "email": "zoe@example.com", "company": "שלום Ltd"},
        text="Paiement échoué — 请付款",
        data={"invoice_id": "INV-7", "amount": "49.90", "currency": "EUR"},
    )
    inbound = parse_signal(body, webhook_key("msg_1"))
    assert inbound.type == "invoice.overdue"
    assert inbound.key == "signals:msg_1"
    assert inbound.source == "signals"
    assert inbound.occurred_at == datetime(2025, 3, 4, 10, tzinfo=UTC)  # naive times are UTC
    assert inbound.signal.customer.name == "Zoë 👩‍💻 Ünïcode"
    assert inbound.signal.customer.company == "שלום Ltd"
    assert inbound.signal.text == "Paiement échoué — 请付款"
    assert inbound.signal.typed_data().cents() == 4990


def test_an_offset_occurred_at_is_converted_to_utc() -> None:
    inbound = parse_signal(signal_body(occurred_at="2025-03-04T10:00:00+02:00"), "k")
    assert inbound.occurred_at == datetime(2025, 3, 4, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"type": NaN}', b"[" * 100_000, b"1" * 5000],
    ids=["broken", "empty", "not utf-8", "NaN", "nested too deep", "huge integer"],
)
def test_malformed_json_is_refused_as_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody, match="malformed JSON"):
        parse_signal(body, "k")


def test_malformed_json_names_the_line_and_column() -> None:
    with pytest.raises(MalformedBody, match="line 2 column 1"):
        parse_signal(b'{"type": "lead.created",\n}', "k")


def fields_of(excinfo: pytest.ExceptionInfo[InvalidSignal]) -> set[str]:
    return {error["field"] for error in excinfo.value.errors}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([1, 2], ""),
        ({"customer": {"email": "a@b.co"}}, "type"),
        ({"type": "lead.created"}, "customer"),
        ({"type": "lead.created", "customer": {}}, "customer"),
        ({"type": "lead.created", "customer": {"name": "   "}}, "customer"),
        ({"type": "lead.created", "customer": {"email": 42}}, "customer.email"),
        ({"type": "lead.created", "customer": {"name": "x" * 300}}, "customer.name"),
        ({"type": "lead.created", "customer": {"name": "A", "shoe_size": 44}}, "customer.shoe_size"),
        ({"type": "lead.created", "customer": {"name": "A"}, "colour": "red"}, "colour"),
        ({"type": "lead.created", "customer": {"name": "A"}, "data": []}, "data"),
        ({"type": "lead.created", "customer": {"name": "A"}, "occurred_at": "soon"}, "occurred_at"),
        (
            {"type": "lead.created", "customer": {"name": "A"}, "occurred_at": "0001-01-01T00:00:00+05:00"},
            "occurred_at",
        ),
        ({"type": "invoice.overdue", "customer": {"name": "A"}, "data": {}}, "data.invoice_id"),
        (
            {"type": "invoice.paid", "customer": {"name": "A"}, "data": {"invoice_id": "1", "amount": "x"}},
            "data.amount",
        ),
        ({"type": "lead.created", "customer": {"name": "nul\u0000byte"}}, "customer.name"),
        ({"type": "lead.created", "customer": {"name": "A"}, "text": "lone \ud800 surrogate"}, "text"),
        ({"type": "lead.created", "customer": {"name": "A"}, "data": {"k\u0000": 1}}, "data.k\u0000"),
    ],
    ids=lambda value: None if isinstance(value, dict | list) else repr(value),
)
def test_a_body_failing_the_schema_names_the_field(document: object, field: str) -> None:
    with pytest.raises(InvalidSignal) as excinfo:
        parse_signal(json.dumps(document).encode(), "k")
    assert field in fields_of(excinfo)
    assert excinfo.value.status == 422


def test_absurd_nesting_in_data_is_refused_naming_the_field() -> None:
    data: dict[str, object] = {}
    inner = data
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    with pytest.raises(InvalidSignal, match="nested"):
        parse_signal(signal_body(data=data), "k")


@pytest.mark.parametrize("signal_type", ["lead.exploded", "", 42, None.__class__.__name__])
def test_an_unknown_type_is_refused_listing_the_known_ones(signal_type: object) -> None:
    with pytest.raises(UnknownSignalType) as excinfo:
        parse_signal(json.dumps({"type": signal_type, "customer": {"name": "A"}}).encode(), "k")
    assert excinfo.value.detail["known_types"] == sorted(SIGNAL_TYPES)
    assert "lead.created" in excinfo.value.message


def test_every_type_of_the_public_interface_is_accepted_with_its_data() -> None:
    data = {
        "lead.created": {},
        "message.received": {"subject": "hi"},
        "invoice.created": {"invoice_id": "1"},
        "invoice.overdue": {"invoice_id": "1"},
        "invoice.paid": {"invoice_id": "1"},
        "subscription.created": {"plan": "Pro"},
        "subscription.updated": {"plan": "Pro"},
        "subscription.renewal_due": {"renews_on": "2025-05-01"},
        "subscription.cancelled": {},
    }
    for signal_type, payload in data.items():
        assert parse_signal(signal_body(signal_type, data=payload), "k").type == signal_type


def test_the_content_key_is_the_same_for_the_same_bytes_only() -> None:
    assert content_key(b"{}") == content_key(b"{}")
    assert content_key(b"{}") != content_key(b"{ }")
    assert content_key(b"{}").startswith("signals:sha256:")
