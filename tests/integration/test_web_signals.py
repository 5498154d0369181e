"""POST /signals on the real app, on SQLite and Postgres, with the RQ queue on a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.bootstrap import App
from bot.web.body import MAX_BODY_BYTES
from store import tables as t
from store.events import SIGNAL_TYPES
from tests.inbound_support import signal_body, signed_headers
from tests.integration.web_harness import (
    DEAD_PORT,
    NOTHING,
    counts,
    settling_client,
    signal_events,
    web_container,
)


def post(client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post("/signals", content=body, headers=signed_headers(body) if headers is None else headers)


def test_a_signed_signal_is_recorded_projected_and_queued(client: TestClient, container: App) -> None:
    body = signal_body(
        customer={"name": "Zoë 👩🏽‍💻 Ünïcode", "email": "zoe@example.com", "company": "مثال Ltd"},
        text="Interested in the team plan — ¿precio?",
    )
    response = post(client, body, signed_headers(body, "msg_happy"))
    assert response.status_code == 202
    answer = response.json()
    assert answer["duplicate"] is False
    (event,) = signal_events(container)
    assert (event["id"], event["type"], event["source"]) == (answer["event_id"], "lead.created", "signals")
    assert event["idempotency_key"] == "signals:msg_happy"
    assert event["payload"]["text"] == "Interested in the team plan — ¿precio?"
    with container.engine.connect() as connection:
        customer = connection.execute(select(t.customers)).one()._mapping
        outbox = connection.execute(select(t.outbox.c.event_id)).scalars().all()
    assert customer["name"] == "Zoë 👩🏽‍💻 Ünïcode" and customer["company"] == "مثال Ltd"
    assert outbox == [answer["event_id"]]
    assert container.queue.job(f"event-{answer['event_id']}") is not None  # enqueued after commit
    assert counts(container)["queued"] == 1


def test_a_redelivery_with_the_same_webhook_id_answers_the_original_event(
    client: TestClient, container: App
) -> None:
    body = signal_body()
    first = post(client, body, signed_headers(body, "msg_dup")).json()
    # A sender's retry is signed again, later, with the same id.
    later = datetime.now(UTC) + timedelta(seconds=30)
    again = post(client, body, signed_headers(body, "msg_dup", at=later))
    assert again.status_code == 202
    assert again.json() == {"event_id": first["event_id"], "duplicate": True}
    assert len(signal_events(container)) == 1
    assert counts(container)["queued"] == 1


def test_another_webhook_id_is_another_signal_even_with_the_same_body(
    client: TestClient, container: App
) -> None:
    body = signal_body()
    first = post(client, body).json()
    second = post(client, body).json()
    assert first["event_id"] != second["event_id"] and not second["duplicate"]
    assert len(signal_events(container)) == 2
    assert counts(container)["customers"] == 1  # same email: same customer


def stale(body: bytes) -> dict[str, str]:
    return signed_headers(body, at=datetime.now(UTC) - timedelta(minutes=6))


def future(body: bytes) -> dict[str, str]:
    return signed_headers(body, at=datetime.now(UTC) + timedelta(minutes=6))


def unsigned(body: bytes) -> dict[str, str]:
    return {"content-type": "application/json"}


def wrong_secret(body: bytes) -> dict[str, str]:
    return signed_headers(body, secret="whsec_" + "d3Jvbmcgc2VjcmV0IGZvciBhIGZvcmdlcnk=")


def tampered(body: bytes) -> dict[str, str]:
    return signed_headers(body.replace(b"Ada", b"Eve"))


@pytest.mark.parametrize(
    ("body", "sign", "status", "reason"),
    [
        (signal_body(), unsigned, 401, "bad_signature"),
        (signal_body(), wrong_secret, 401, "bad_signature"),
        (signal_body(), tampered, 401, "bad_signature"),
        (signal_body(), stale, 401, "bad_signature"),
        (signal_body(), future, 401, "bad_signature"),
        (b'{"type": "lead.created", "customer": ', signed_headers, 400, "malformed"),
        (b"\xff\xfe not utf-8", signed_headers, 400, "malformed"),
        (b'{"type": "lead.created", "customer": {"email": 7}}', signed_headers, 422, "invalid"),
        (b'{"type": "lead.created"}', signed_headers, 422, "invalid"),
        (b'{"type": "invoice.paid", "customer": {"name": "A"}}', signed_headers, 422, "invalid"),
        (b'{"type": "lead.teleported", "customer": {"name": "A"}}', signed_headers, 422, "unknown_type"),
        (b'{"type": "lead.created", "customer": {"name": "a\\u0000b"}}', signed_headers, 422, "invalid"),
        (b" " * (MAX_BODY_BYTES + 1), signed_headers, 413, "too_large"),
    ],
    ids=[
        "unsigned",
        "wrong secret",
        "tampered body",
        "timestamp 6 min old",
        "timestamp 6 min ahead",
        "malformed JSON",
        "not UTF-8",
        "wrong field type",
        "no customer",
        "invoice without invoice_id",
        "unknown type",
        "NUL in a name",
        "over 1 MiB",
    ],
)
def test_bad_input_is_refused_with_a_reason_and_writes_nothing(
    client: TestClient, container: App, body: bytes, sign: Any, status: int, reason: str
) -> None:
    response = post(client, body, sign(body))
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == reason and answer["message"]
    assert counts(container) == NOTHING


def test_schema_failures_name_the_field(client: TestClient) -> None:
    body = json.dumps({"type": "invoice.paid", "customer": {"name": "A"}, "data": {"amount": "x"}}).encode()
    fields = {error["field"] for error in post(client, body).json()["errors"]}
    assert {"data.invoice_id", "data.amount"} <= fields


def test_an_unknown_type_is_answered_with_the_known_ones(client: TestClient) -> None:
    answer = post(client, signal_body("lead.teleported")).json()
    assert answer["known_types"] == sorted(SIGNAL_TYPES)


def test_a_declared_length_over_1_mib_is_refused_before_the_body_is_read(
    client: TestClient, container: App
) -> None:
    body = signal_body()
    headers = {**signed_headers(body), "content-length": str(MAX_BODY_BYTES + 1)}
    response = client.post("/signals", content=body, headers=headers)
    assert response.status_code == 413
    assert counts(container) == NOTHING


def test_a_streamed_body_without_length_is_cut_off_at_1_mib(client: TestClient, container: App) -> None:
    chunk = b" " * 65536

    def stream() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    body = b"".join(stream())
    response = client.post("/signals", content=stream(), headers=signed_headers(body))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert counts(container) == NOTHING


def test_without_signals_secret_the_endpoint_refuses_everything(
    db_url: str, redis_url: str, make_settings: Any
) -> None:
    container = web_container(make_settings, db_url, redis_url, SIGNALS_SECRET=None)
    try:
        with settling_client(container) as client:
            response = post(client, signal_body())
        assert response.status_code == 503
        assert "SIGNALS_SECRET" in response.json()["message"]
        assert counts(container) == NOTHING
    finally:
        container.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_with_the_database_down_the_answer_is_503_with_retry_after(
    backend: str, tmp_path: Path, redis_url: str, make_settings: Any
) -> None:
    # SQLite "down": the database path is a directory; Postgres down: nothing listens on the port.
    url = (
        f"sqlite:///{tmp_path}" if backend == "sqlite" else f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/crm"
    )
    container = web_container(make_settings, url, redis_url)
    try:
        with settling_client(container, raise_server_exceptions=False) as client:
            response = post(client, signal_body())
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert response.json()["error"] == "database_down"
        assert "Traceback" not in response.text
        assert sum(container.queue.depth().values()) == 0
    finally:
        container.close()


def test_metrics_count_signals_duplicates_and_refusals(client: TestClient) -> None:
    body = signal_body()
    headers = signed_headers(body, "msg_m")
    post(client, body, headers)
    post(client, body, headers)
    post(client, body, unsigned(body))
    post(client, signal_body("lead.teleported"))
    text = client.get("/metrics").text
    assert 'crm_signals_total{source="signals",type="lead.created"} 1.0' in text
    assert 'crm_signal_duplicates_total{source="signals"} 1.0' in text
    assert 'crm_refusals_total{endpoint="/signals",reason="bad_signature"} 1.0' in text
    assert 'crm_refusals_total{endpoint="/signals",reason="unknown_type"} 1.0' in text
    assert 'crm_queue_depth{priority="signals"} 1.0' in text


def test_an_email_longer_than_an_address_can_be_is_refused(client: TestClient, container: App) -> None:
    email = "a" * 240 + "@" + "b" * 60 + ".com"
    response = post(client, signal_body(customer={"email": email}))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "customer.email"
    assert counts(container) == NOTHING


def test_a_maximal_external_id_on_a_known_customer_is_stored_and_deduplicated(
    pg_url: str, redis_url: str, make_settings: Any
) -> None:
    # A new 255-character external id on a known customer makes the store's derived idempotency key
    # longer than its column; the store keeps such keys as their hash, the same on every backend.
    container = web_container(make_settings, pg_url, redis_url)
    try:
        with settling_client(container, raise_server_exceptions=False) as client:
            assert post(client, signal_body(customer={"email": "z@z.io"})).status_code == 202
            body = signal_body(customer={"email": "z@z.io", "external_id": "x" * 255})
            headers = signed_headers(body)
            first = client.post("/signals", content=body, headers=headers)
            again = client.post("/signals", content=body, headers=headers)
        assert first.status_code == 202, first.text
        assert again.json() == {"event_id": first.json()["event_id"], "duplicate": True}
        with container.engine.connect() as connection:
            kinds = connection.execute(select(t.contact_points.c.kind)).scalars().all()
        assert sorted(kinds) == ["email", "external"]
    finally:
        container.close()


# -- values that grow when normalised (issue 16 item 3) ---------------------------------------------


@pytest.mark.parametrize("name", ["ß" * 255, "ﷺ" * 200], ids=["eszett", "ligature"])
def test_a_name_whose_key_outgrows_its_column_still_reaches_the_log(
    client: TestClient, container: App, name: str
) -> None:
    first = post(client, signal_body(customer={"name": name, "email": "eszett@grow.example"}, text="hi"))
    # The same name from another address: a possible duplicate, whose reason quotes the name.
    second = post(client, signal_body(customer={"name": name, "email": "other@grow.example"}, text="hi"))
    assert first.status_code == second.status_code == 202
    events = signal_events(container)
    assert [e["id"] for e in events] == [first.json()["event_id"], second.json()["event_id"]]
    with container.engine.connect() as connection:
        customers = connection.execute(select(t.customers.c.name, t.customers.c.name_key)).all()
        reasons = connection.execute(select(t.possible_duplicates.c.reason)).scalars().all()
        stuck = connection.execute(select(t.intake.c.id).where(t.intake.c.position.is_(None))).all()
    assert [row.name for row in customers] == [name, name]
    assert all(0 < len(row.name_key) <= 255 for row in customers)
    assert len(reasons) == 1 and len(reasons[0]) <= 255
    assert stuck == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"customer": {"email": "İ" * 200 + "@grow.example"}}, "customer.email"),
        ({"type": "invoice.created", "data": {"invoice_id": "in_1", "amount": "49.999"}}, "data.amount"),
        ({"type": "invoice.created", "data": {"invoice_id": "in_1", "amount": "1e30"}}, "data.amount"),
        ({"type": "subscription.created", "data": {"amount_cents": 10**17}}, "data.amount_cents"),
    ],
    ids=["email longer once lower-cased", "fraction of a cent", "amount too large", "cents too large"],
)
def test_values_the_log_could_not_hold_are_refused_before_the_202(
    client: TestClient, container: App, fields: dict[str, Any], field: str
) -> None:
    document = json.loads(signal_body())
    document.update(fields)
    if "customer" not in fields:
        document["customer"] = {"email": "ada@analytical.io"}
    response = post(client, json.dumps(document, ensure_ascii=False).encode())
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert counts(container) == NOTHING


def test_a_data_field_the_project_does_not_read_comes_back_as_a_warning(client: TestClient) -> None:
    body = signal_body("subscription.renewal_due", data={"renewal_on": "2026-12-24", "plan": "Team"})
    response = post(client, body)
    assert response.status_code == 202, response.text
    [warning] = response.json()["warnings"]
    assert "renewal_on" in warning and "renews_on" in warning, warning
    clean = post(client, signal_body("subscription.renewal_due", data={"renews_on": "2026-12-24"}))
    assert clean.status_code == 202 and "warnings" not in clean.json()
