"""GET /healthz, GET /metrics and the OpenAPI document of the real app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.bootstrap import App
from store.events import SIGNAL_TYPES
from tests.inbound_support import signal_body, signed_headers
from tests.integration.web_harness import DEAD_PORT, settling_client, web_container


def test_healthz_reports_every_dependency_reachable(container: App) -> None:
    with settling_client(container) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ok" and answer["failing"] == []
    assert answer["checks"]["database"] == {"ok": True, "detail": container.engine.dialect.name}
    assert answer["checks"]["queue"] == {"ok": True, "detail": "redis"}
    assert answer["checks"]["memory"]["ok"] is True


def test_healthz_names_an_unreachable_queue(pg_url: str, make_settings: Any) -> None:
    container = web_container(make_settings, pg_url, f"redis://127.0.0.1:{DEAD_PORT}/0")
    try:
        with settling_client(container) as client:
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["failing"] == ["queue"]
        assert response.json()["status"] == "unavailable: queue"
    finally:
        container.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_healthz_names_an_unreachable_database(
    backend: str, tmp_path: Path, redis_url: str, make_settings: Any
) -> None:
    url = (
        f"sqlite:///{tmp_path}" if backend == "sqlite" else f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/crm"
    )
    container = web_container(make_settings, url, redis_url)
    try:
        with settling_client(container) as client:
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["failing"] == ["database"]
        assert "unreachable" in response.json()["checks"]["database"]["detail"]
    finally:
        container.close()


def test_healthz_names_an_unreachable_chroma_server(
    sqlite_url: str, redis_url: str, make_settings: Any
) -> None:
    container = web_container(
        make_settings, sqlite_url, redis_url, CHROMA_URL=f"http://127.0.0.1:{DEAD_PORT}"
    )
    try:
        with settling_client(container) as client:
            response = client.get("/healthz")
        assert response.status_code == 503
        assert "memory" in response.json()["failing"]
    finally:
        container.close()


def test_metrics_are_prometheus_text(container: App) -> None:
    with settling_client(container) as client:
        body = signal_body()
        client.post("/signals", content=body, headers=signed_headers(body))
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert {
        "crm_signals",
        "crm_signal_duplicates",
        "crm_refusals",
        "crm_queue_depth",
        "crm_jobs_failed",
    } <= set(families)
    (sample,) = [s for s in families["crm_signals"].samples if s.name == "crm_signals_total"]
    assert sample.labels == {"type": "lead.created", "source": "signals"} and sample.value == 1


def test_metrics_are_per_app(sqlite_url: str, redis_url: str, make_settings: Any) -> None:
    first = web_container(make_settings, sqlite_url, redis_url)
    second = web_container(make_settings, sqlite_url, redis_url)
    try:
        with settling_client(first) as one, settling_client(second) as two:
            body = signal_body()
            one.post("/signals", content=body, headers=signed_headers(body))
            assert "crm_signals_total{" in one.get("/metrics").text
            assert "crm_signals_total{" not in two.get("/metrics").text
    finally:
        first.close()
        second.close()


def test_the_openapi_document_describes_every_endpoint_and_the_signal_body(container: App) -> None:
    with settling_client(container) as client:
        document = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths = document["paths"]
    assert {"/signals", "/webhooks/stripe", "/webhooks/email", "/healthz", "/metrics"} <= set(paths)
    signals = paths["/signals"]["post"]
    assert {"202", "400", "401", "413", "422", "503"} <= set(signals["responses"])
    assert {p["name"] for p in signals["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    schema = document["components"]["schemas"]["SignalBody"]
    assert schema["properties"]["type"]["enum"] == sorted(SIGNAL_TYPES)
    assert schema["properties"]["customer"] == {"$ref": "#/components/schemas/CustomerRef"}
    assert "CustomerRef" in document["components"]["schemas"]
    assert "message/rfc822" in paths["/webhooks/email"]["post"]["requestBody"]["content"]


def test_metrics_still_answer_with_the_database_and_redis_down(make_settings: Any) -> None:
    url = f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/crm"
    container = web_container(make_settings, url, f"redis://127.0.0.1:{DEAD_PORT}/0")
    try:
        with settling_client(container, raise_server_exceptions=False) as client:
            response = client.get("/metrics")
        assert response.status_code == 200
        assert "crm_refusals" in response.text  # the counters are there; the queue gauges are left out
        assert "crm_queue_depth{" not in response.text
    finally:
        container.close()


OPS_PAGES = ["/metrics", "/openapi.json", "/docs", "/redoc"]
REMOTE = ("203.0.113.7", 40000)


@pytest.mark.parametrize("path", OPS_PAGES)
def test_without_a_metrics_token_ops_pages_answer_loopback_clients_only(container: App, path: str) -> None:
    with settling_client(container) as local, settling_client(container, client=REMOTE) as remote:
        assert local.get(path).status_code == 200
        refused = remote.get(path)
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden" and "METRICS_TOKEN" in refused.json()["message"]
        assert remote.get("/healthz").status_code == 200  # health stays open to load balancers


@pytest.mark.parametrize("path", OPS_PAGES)
def test_with_a_metrics_token_ops_pages_need_it_from_everyone(
    sqlite_url: str, redis_url: str, make_settings: Any, path: str
) -> None:
    container = web_container(make_settings, sqlite_url, redis_url, METRICS_TOKEN="s3cret-metrics")
    try:
        with settling_client(container) as local, settling_client(container, client=REMOTE) as remote:
            for client in (local, remote):
                missing = client.get(path)
                assert missing.status_code == 401 and missing.json()["error"] == "unauthorised"
                assert missing.headers["www-authenticate"].startswith("Bearer")
                assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
                assert client.get(path, headers={"Authorization": "s3cret-metrics"}).status_code == 401
                granted = client.get(path, headers={"Authorization": "Bearer s3cret-metrics"})
                assert granted.status_code == 200
    finally:
        container.close()


def test_an_empty_metrics_token_is_unset_loopback_only(
    sqlite_url: str, redis_url: str, make_settings: Any
) -> None:
    container = web_container(make_settings, sqlite_url, redis_url, METRICS_TOKEN="")
    try:
        with settling_client(container) as local, settling_client(container, client=REMOTE) as remote:
            assert local.get("/metrics").status_code == 200
            assert remote.get("/metrics").status_code == 403
            assert remote.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    finally:
        container.close()
