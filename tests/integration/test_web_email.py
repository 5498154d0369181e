"""POST /webhooks/email on the real app: raw messages, signed like /signals, one event per Message-ID."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.bootstrap import App
from bot.web.body import MAX_BODY_BYTES
from tests.inbound_support import email, signed_headers
from tests.integration.web_harness import NOTHING, counts, signal_events

RFC822 = "message/rfc822"


def deliver(client: TestClient, raw: bytes, webhook_id: str | None = None, **kw: Any) -> Any:
    headers = signed_headers(raw, webhook_id, content_type=RFC822, **kw)
    return client.post("/webhooks/email", content=raw, headers=headers)


@pytest.mark.parametrize(
    ("fixture", "sender", "phrase"),
    [
        ("multipart_alternative.eml", "renee@acme-gmbh.de", "Team-Plan (49 €/Monat)"),
        ("html_only.eml", "ola@nordfjord.no", "charged twice for invoice **INV-2025-0042**"),
        ("iso_8859_1_8bit.eml", "jose@munoz.es", "¿Podemos hablar de la renovación?"),
        ("windows_1252.eml", "chloe@obrien.ie", "The €99 plan is fine."),
        ("shift_jis.eml", "hanako.sato@example.co.jp", "請求書の件でご連絡しました。"),
        ("attachments.eml", "aethelstan@fjord.dk", "the export button does nothing"),
    ],
)
def test_a_real_mail_becomes_a_message_received_signal(
    client: TestClient, container: App, fixture: str, sender: str, phrase: str
) -> None:
    response = deliver(client, email(fixture))
    assert response.status_code == 202, response.text
    (event,) = signal_events(container)
    assert (event["type"], event["source"], event["id"]) == (
        "message.received",
        "email",
        response.json()["event_id"],
    )
    assert event["idempotency_key"].startswith("email:<")
    assert event["payload"]["customer"]["email"] == sender
    assert phrase in event["payload"]["text"]
    assert counts(container)["queued"] == 1


def test_the_same_message_id_is_one_event_whatever_the_webhook_id(client: TestClient, container: App) -> None:
    raw = email("multipart_alternative.eml")
    first = deliver(client, raw, "delivery-1").json()
    second = deliver(client, raw, "delivery-2")
    assert second.json() == {"event_id": first["event_id"], "duplicate": True}
    assert len(signal_events(container)) == 1


def test_a_thread_stays_one_conversation_of_one_customer(client: TestClient, container: App) -> None:
    for name in ("thread_1_original.eml", "thread_2_reply.eml", "thread_3_forward.eml"):
        assert deliver(client, email(name)).status_code == 202
    events = signal_events(container)
    assert len(events) == 3
    assert {e["payload"]["data"]["thread_id"] for e in events} == {"<thread-root-001@brightpath.io>"}
    assert len({e["stream"] for e in events}) == 1
    assert events[2]["payload"]["data"]["references"] == [
        "<thread-root-001@brightpath.io>",
        "<thread-reply-002@brightpath.io>",
    ]
    attachments = events[2]["payload"]["data"]["attachments"]
    assert [a["filename"] for a in attachments] == ["Re_ Pilot for 10 seats.eml", "PO-7781.pdf"]


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"", 400, "malformed"),
        (b"Subject: who sent this?\r\n\r\nnobody", 422, "invalid"),
        (b"From: a@b.co\r\n\r\n" + b"x" * MAX_BODY_BYTES, 413, "too_large"),
    ],
    ids=["empty", "no sender", "over 1 MiB"],
)
def test_bad_mail_is_refused_and_writes_nothing(
    client: TestClient, container: App, raw: bytes, status: int, reason: str
) -> None:
    response = deliver(client, raw)
    assert response.status_code == status
    assert response.json()["error"] == reason
    assert counts(container) == NOTHING


def test_unsigned_tampered_or_stale_mail_is_401(client: TestClient, container: App) -> None:
    raw = email("iso_8859_1_8bit.eml")  # not UTF-8: verified byte for byte
    headers = signed_headers(raw, content_type=RFC822)
    assert (
        client.post("/webhooks/email", content=raw.replace(b"Hola", b"Hole"), headers=headers).status_code
        == 401
    )
    assert client.post("/webhooks/email", content=raw, headers={"content-type": RFC822}).status_code == 401
    stale = deliver(client, raw, at=datetime.now(UTC) - timedelta(minutes=10))
    assert stale.status_code == 401
    assert counts(container) == NOTHING
