"""Schemathesis against the app's own OpenAPI document: whatever arrives, never a 5xx.

Bodies are signed correctly before sending (a forged signature stops at 401, which the endpoint tests
cover), so the generated data reaches the parsers, the schema checks and the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.bootstrap import App
from bot.inbound.stripe import SIGNAL_FOR
from tests.inbound_support import signed_headers, stripe_signature
from tests.integration.web_harness import web_container

# Enough examples per operation to hit the odd corners (unicode, sizes, wrong types) while keeping
# the whole file to seconds on a small shared machine.
EXAMPLES = 60
METRICS_TOKEN = "fuzz-metrics-token"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}

_header = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40)
_text = st.text(max_size=300)


@st.composite
def rfc822(draw: st.DrawFn) -> bytes:
    """Mail-shaped bytes: real-looking headers with odd values, odd charsets, or plain noise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=500))
    subtype = draw(st.sampled_from(["plain", "html"]))
    charset = draw(st.sampled_from(["utf-8", "latin-1", "x-bogus", ""]))
    headers = {
        "From": draw(st.one_of(st.just("Zoë <zoe@example.com>"), _header)),
        "Message-ID": draw(st.one_of(st.just("<a@b>"), _header)),
        "In-Reply-To": draw(_header),
        "References": draw(_header),
        "Subject": draw(_header),
        "Date": draw(st.one_of(st.just("Tue, 04 Mar 2025 09:13:58 +0100"), _header)),
        "Content-Type": f"text/{subtype}; charset={charset}",
        "Content-Transfer-Encoding": draw(
            st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x"])
        ),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if value)
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    body = draw(_text).encode(encoding, "replace")
    return head.encode("ascii", "replace") + b"\r\n" + body


schemathesis.openapi.media_type("message/rfc822", rfc822())


@pytest.fixture
def container(pg_url: str, redis_url: str, make_settings: Any) -> Iterator[App]:
    # Postgres: its column types and text rules are the stricter of the two backends.
    built = web_container(make_settings, pg_url, redis_url, METRICS_TOKEN=METRICS_TOKEN)
    yield built
    built.close()


def raw_body(case: Any) -> bytes:
    if isinstance(case.body, NotSet) or case.body is None:
        return b""
    if isinstance(case.body, bytes):
        return case.body
    if isinstance(case.body, str):
        return case.body.encode("utf-8", "surrogatepass")
    return json.dumps(case.body).encode("utf-8", "surrogatepass")


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# (method, path, mode): negative data only where the schema leaves something to violate (the email
# body is any bytes already; the GETs take no input).
OPERATIONS = [
    ("POST", "/signals", POSITIVE),
    ("POST", "/signals", NEGATIVE),
    ("POST", "/webhooks/stripe", POSITIVE),
    ("POST", "/webhooks/stripe", NEGATIVE),
    ("POST", "/webhooks/email", POSITIVE),
    ("GET", "/healthz", POSITIVE),
    ("GET", "/metrics", POSITIVE),
]


# Schemathesis's own pytest integration (`from_fixture`) does not run under pytest 9, so each
# operation's strategy drives a plain Hypothesis test.
@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_no_input_makes_the_app_fail(
    client: TestClient, method: str, path: str, mode: GenerationMode
) -> None:
    operation = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers=BEARER)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    def check(case: Any, data: st.DataObject) -> None:
        if case.path == "/webhooks/stripe" and isinstance(case.body, dict) and data.draw(st.booleans()):
            # Random type names are all "ignored"; half the time use one the connector maps.
            case.body["type"] = data.draw(st.sampled_from(sorted(SIGNAL_FOR)))
        body = raw_body(case)
        # Generated signature headers are replaced (whatever their case) by real ones.
        headers = {
            key: value
            for key, value in (case.headers or {}).items()
            if isinstance(value, str) and not key.lower().startswith(("webhook-", "stripe-"))
        }
        if case.path in {"/signals", "/webhooks/email"}:
            headers.update(signed_headers(body, content_type=case.media_type or "application/json"))
        elif case.path == "/webhooks/stripe":
            headers["stripe-signature"] = stripe_signature(body)
        elif case.path == "/metrics" and data.draw(st.booleans()):
            headers.update(BEARER)  # and half the time without it: a documented 401
        response = client.request(case.method, case.formatted_path, content=body or None, headers=headers)
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text}"
        )
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    check()
