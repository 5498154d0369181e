"""Malformed, forged and fuzzed requests to every endpoint of the real app: always a 4xx with a reason.

DESIGN.md invariants 5 and 9: signatures are checked over the raw bytes first and never crash on what
the headers hold; a signed body Bolt, PTB or our parsers cannot read is refused, never a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.bootstrap import App, bootstrap
from bot.slack.payload import OBJECT_LISTS, OBJECTS, TEXT_OR_OBJECT, TEXTS
from bot.telegram import SECRET_HEADER, WEBHOOK_PATH
from bot.web import create_app
from tests.inbound_support import signal_body, signed_headers, stripe_signature
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as th
from tests.integration.web_harness import LOOPBACK_CLIENT, settling_client, web_container
from tests.standins.slack_api import SlackStandIn
from tests.standins.telegram_api import TelegramStandIn

FORM, JSON = "application/x-www-form-urlencoded", "application/json"
# JSON nested far past the recursion limit of any parser that recurses.
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def slack_signed(body: bytes, *, secret: str = sh.SECRET, content_type: str = "") -> dict[str, str]:
    """Slack's headers for body, signed over its raw bytes (the body need not be UTF-8)."""
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={mac}"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def interactive(payload: Any) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)}).encode()


@pytest.fixture
def slack_client(sqlite_url: str, make_settings: Any) -> Iterator[TestClient]:
    with SlackStandIn(bot_token=sh.BOT_TOKEN, app_token=sh.APP_TOKEN) as slack:
        container = bootstrap(make_settings(**sh.slack_settings(slack.api_url, sqlite_url)), handlers={})
        client = TestClient(create_app(container), raise_server_exceptions=False, client=LOOPBACK_CLIENT)
        client.response_url = slack.response_url()  # type: ignore[attr-defined]
        yield client
        container.close()


@pytest.fixture
def telegram_client(sqlite_url: str, make_settings: Any) -> Iterator[TestClient]:
    api = TelegramStandIn(th.TOKEN).start()
    env = th.telegram_env(
        api,
        sqlite_url,
        25,
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:9{WEBHOOK_PATH}",
        TELEGRAM_WEBHOOK_SECRET=th.WEBHOOK_SECRET,
    )
    container: App = bootstrap(make_settings(**env), handlers={})
    try:
        with TestClient(create_app(container), raise_server_exceptions=False) as client:
            yield client
    finally:
        surface = container.notifier.surface("telegram")
        if surface is not None:
            surface.close()
        container.close()
        api.stop()


@pytest.fixture
def web(sqlite_url: str, redis_url: str, make_settings: Any) -> Iterator[TestClient]:
    container = web_container(make_settings, sqlite_url, redis_url)
    with settling_client(container, raise_server_exceptions=False) as client:
        yield client
    container.close()


# -- Slack: a broken signature never gets past the check, and never crashes it ---------------------

NOW = str(int(time.time()))


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Slack-Request-Timestamp": "now", "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": "", "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": NOW, "X-Slack-Signature": "v0=0"}, b"payload=\xff"),
        ({"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": " " + NOW, "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": "+" + NOW, "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": "1_7", "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": "\uff11\uff17".encode(), "X-Slack-Signature": "v0=0"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": NOW, "X-Slack-Signature": b"v0=\xff\xfe"}, b"payload=x"),
        ({"X-Slack-Request-Timestamp": NOW}, b"payload=x"),
        ({}, b"\xff\xfe"),
    ],
    ids=[
        "timestamp now",
        "empty timestamp",
        "body not utf-8",
        "timestamp of 5000 digits",
        "timestamp with a space",
        "timestamp with a sign",
        "timestamp with an underscore",
        "timestamp in fullwidth digits",
        "signature not ascii",
        "no signature",
        "no headers",
    ],
)
def test_unsigned_or_badly_signed_slack_requests_get_401_with_a_reason(
    slack_client: TestClient, headers: dict[str, Any], body: bytes
) -> None:
    response = slack_client.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid request" and response.json()["message"]


def test_a_signature_over_other_bytes_is_refused(slack_client: TestClient) -> None:
    headers = slack_signed(b"payload=x")
    assert slack_client.post("/slack/events", content=b"payload=y", headers=headers).status_code == 401


# -- Slack: a signed body Bolt could not read is refused before Bolt sees it -----------------------


def _click(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": sh.OPERATOR},
        "team": {"id": "T0001"},
        "actions": [{"action_id": "crm:approve", "value": "approve:prp_x"}],
    }
    payload.update(changes)
    return payload


def _submission(**view: Any) -> dict[str, Any]:
    return {"type": "view_submission", "user": {"id": sh.OPERATOR}, "view": view}


SIGNED_MALFORMED: list[tuple[str, bytes, str]] = [
    ("payload=[1]", interactive("[1]"), FORM),
    ("payload=null", interactive("null"), FORM),
    ("payload=1", interactive("1"), FORM),
    ("payload=string", interactive('"x"'), FORM),
    ("payload not json", interactive("{not json"), FORM),
    ("payload nested 100000 deep", interactive(DEEP.decode()), FORM),
    ("json body a list", b"[1]", JSON),
    ("json body null", b"null", JSON),
    ("json body a string", b'"x"', JSON),
    ("json body nested 100000 deep", DEEP_OBJECT, JSON),
    ("json body nested 40 deep", b'{"a":' * 40 + b"1" + b"}" * 40, JSON),
    ("body not utf-8", b'{"type": "event_callback", "x": "\xff"}', JSON),
    ("form body not utf-8", b"command=%2Fpending&text=\xff", FORM),
    ("actions empty", interactive(_click(actions=[])), FORM),
    ("actions missing", interactive({"type": "block_actions", "user": {"id": "U1"}}), FORM),
    ("actions a string", interactive(_click(actions="x")), FORM),
    ("actions of numbers", interactive(_click(actions=[1])), FORM),
    ("action_id a number", interactive(_click(actions=[{"action_id": 5}])), FORM),
    ("team a number", interactive(_click(team=5)), FORM),
    ("enterprise a number", interactive(_click(enterprise=5)), FORM),
    ("user a list", interactive(_click(user=[])), FORM),
    ("channel a number", interactive(_click(channel=5)), FORM),
    ("authorizations of numbers", interactive(_click(authorizations=[1])), FORM),
    ("authorizations a number", interactive(_click(authorizations=5)), FORM),
    ("response_urls of numbers", interactive(_click(response_urls=[1])), FORM),
    ("type a number", interactive(_click(type=5)), FORM),
    ("view missing", interactive({"type": "view_submission", "user": {"id": "U1"}}), FORM),
    ("view a list", interactive({"type": "view_submission", "view": []}), FORM),
    ("view without callback_id", interactive(_submission(state={})), FORM),
    (
        "view state values a string",
        interactive(_submission(callback_id="crm_reject", state={"values": "x"})),
        FORM,
    ),
    (
        "view input value a number",
        interactive(
            _submission(
                callback_id="crm_reject", state={"values": {"reason": {"reason_input": {"value": 5}}}}
            )
        ),
        FORM,
    ),
    (
        "view private_metadata a number",
        interactive(_submission(callback_id="crm_reject", private_metadata=5)),
        FORM,
    ),
    ("event null", json.dumps({"type": "event_callback", "event": None}).encode(), JSON),
    ("event a string", json.dumps({"type": "event_callback", "event": "x"}).encode(), JSON),
    ("event type a list", json.dumps({"type": "event_callback", "event": {"type": []}}).encode(), JSON),
    (
        "event_id an object",
        json.dumps({"type": "event_callback", "event_id": {}, "event": {"type": "x"}}).encode(),
        JSON,
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b, c) for _, b, c in SIGNED_MALFORMED],
    ids=[n for n, _, _ in SIGNED_MALFORMED],
)
def test_signed_slack_bodies_bolt_cannot_read_get_400_with_a_reason(
    slack_client: TestClient, body: bytes, content_type: str
) -> None:
    response = slack_client.post(
        "/slack/events", content=body, headers=slack_signed(body, content_type=content_type)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed" and response.json()["message"]


def test_a_signed_well_formed_command_still_reaches_bolt(slack_client: TestClient) -> None:
    body = urlencode({"command": "/pending", "text": "", "user_id": sh.OPERATOR, "team_id": "T0001"}).encode()
    response = slack_client.post("/slack/events", content=body, headers=slack_signed(body, content_type=FORM))
    assert response.status_code == 200


# -- Slack: fuzzed, signed and unsigned ------------------------------------------------------------

_KEYS = sorted(
    TEXTS
    | OBJECTS
    | OBJECT_LISTS
    | TEXT_OR_OBJECT
    | {"is_enterprise_install", "is_ext_shared_channel", "values"}
)
_TYPES = [
    "block_actions",
    "view_submission",
    "view_closed",
    "event_callback",
    "url_verification",
    "shortcut",
    "message_action",
    "block_suggestion",
    "interactive_message",
    "dialog_submission",
]
_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)
_payload = st.fixed_dictionaries(
    {"type": st.sampled_from(_TYPES) | _leaf},
    optional={key: _value for key in _KEYS if key not in {"type", "response_url", "response_urls"}},
)


@st.composite
def slack_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A body as Slack would carry it (event JSON, interactivity form, slash command form) or noise."""
    kind = draw(st.sampled_from(["json", "interactive", "slash", "bytes", "any-json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), draw(st.sampled_from([FORM, JSON, ""]))
    if kind == "any-json":
        return json.dumps(draw(_value)).encode(), draw(st.sampled_from([FORM, JSON]))
    payload = draw(_payload)
    if kind == "json":
        return json.dumps(payload).encode(), JSON
    if kind == "interactive":
        return interactive(payload), FORM
    fields = {
        "command": draw(st.sampled_from(["/customer", "/pending", "/note", "/x"])),
        "text": draw(st.text(max_size=30)),
    }
    fields.update(
        draw(
            st.dictionaries(
                st.sampled_from(["user_id", "team_id", "channel_id", "payload"]), st.text(max_size=10)
            )
        )
    )
    return urlencode(fields).encode(), FORM


@given(
    body=slack_bodies(),
    signed=st.booleans(),
    junk=st.dictionaries(
        st.sampled_from(["X-Slack-Request-Timestamp", "X-Slack-Signature", "Content-Length"]),
        st.binary(max_size=20),
    ),
)
@FUZZ
def test_no_slack_request_signed_or_not_gets_a_5xx(
    slack_client: TestClient, body: tuple[bytes, str], signed: bool, junk: dict[str, bytes]
) -> None:
    content, content_type = body
    if b'"response_url"' in content:  # pragma: no cover - excluded by the strategy
        return
    headers: dict[str, Any] = slack_signed(content, content_type=content_type) if signed else dict(junk)
    if not signed and content_type:
        headers["Content-Type"] = content_type
    headers.pop("Content-Length", None) if signed else None
    try:
        response = slack_client.post("/slack/events", content=content, headers=headers)
    except Exception:  # a header value httpx itself refuses to send never reaches the app
        return
    assert response.status_code < 500, f"{response.status_code}: {response.text} for {content[:200]!r}"


# -- Telegram -------------------------------------------------------------------------------------

TELEGRAM_MALFORMED = [
    ("nested 100000 deep", DEEP_OBJECT),
    ("nested 100000 deep under an update", b'{"update_id": 1, "message": ' + DEEP_OBJECT + b"}"),
    ("nested 40 deep", b'{"update_id": 1, "message": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}"),
    ("update_id a bool", b'{"update_id": true}'),
    ("message a number", b'{"update_id": 1, "message": 5}'),
    ("callback_query a list", b'{"update_id": 1, "callback_query": []}'),
    (
        "a date past the year 9999",
        b'{"update_id": 1, "message": {"message_id": 1, "date": 1e30, "chat": {"id": 1, "type": "private"}}}',
    ),
    ("empty body", b""),
    ("not utf-8", b'{"update_id": 1, "x": "\xff"}'),
]


@pytest.mark.parametrize("body", [b for _, b in TELEGRAM_MALFORMED], ids=[n for n, _ in TELEGRAM_MALFORMED])
def test_telegram_bodies_with_the_right_secret_that_are_not_updates_get_400(
    telegram_client: TestClient, body: bytes
) -> None:
    headers = {"Content-Type": JSON, SECRET_HEADER: th.WEBHOOK_SECRET}
    response = telegram_client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.text


_update_keys = [
    "update_id",
    "message",
    "callback_query",
    "edited_message",
    "from",
    "chat",
    "text",
    "date",
    "message_id",
    "entities",
    "data",
    "id",
    "type",
    "is_bot",
    "first_name",
    "chat_instance",
    "reply_markup",
]
_update_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_update_keys), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(
    document=st.dictionaries(st.sampled_from(_update_keys), _update_value, max_size=5),
    update_id=st.integers(0, 2**40) | _leaf,
    secret=st.sampled_from([th.WEBHOOK_SECRET, None, "wrong"]),
)
@FUZZ
def test_no_telegram_update_with_or_without_the_secret_gets_a_5xx(
    telegram_client: TestClient, document: dict[str, Any], update_id: Any, secret: str | None
) -> None:
    document["update_id"] = update_id
    headers = {"Content-Type": JSON}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    response = telegram_client.post(WEBHOOK_PATH, content=json.dumps(document).encode(), headers=headers)
    assert response.status_code < 500, response.text
    if secret != th.WEBHOOK_SECRET:
        assert response.status_code == 403


# -- Standard Webhooks and Stripe: headers that are not what they claim ----------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-timestamp": "now"},
        {"webhook-timestamp": ""},
        {"webhook-timestamp": "9" * 5000},
        {"webhook-timestamp": "\uff11\uff17".encode()},
        {"webhook-timestamp": "nan"},
        {"webhook-signature": b"v1,\xff\xfe"},
        {"webhook-signature": "v1,"},
        {"webhook-id": b"msg_\xff"},
    ],
    ids=[
        "timestamp now",
        "empty timestamp",
        "5000 digits",
        "fullwidth digits",
        "nan",
        "signature not ascii",
        "empty signature",
        "id not ascii",
    ],
)
@pytest.mark.parametrize("path", ["/signals", "/webhooks/email"])
def test_standard_webhook_headers_that_cannot_be_read_get_401(
    web: TestClient, path: str, change: dict[str, Any]
) -> None:
    body = signal_body()
    headers: dict[str, Any] = {**signed_headers(body), **change}
    response = web.post(path, content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "bad_signature" and response.json()["message"]


@pytest.mark.parametrize(
    "header",
    ["t=now,v1=0", "t=,v1=", "t=\uff11\uff17,v1=0".encode(), b"t=1,v1=\xff", "t=" + "9" * 5000 + ",v1=0"],
)
def test_stripe_signature_headers_that_cannot_be_read_get_401(web: TestClient, header: Any) -> None:
    body = b'{"id": "evt_1", "type": "invoice.paid"}'
    response = web.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["list", "object"])
def test_signed_json_nested_100000_deep_gets_a_4xx(web: TestClient, body: bytes) -> None:
    assert 400 <= web.post("/signals", content=body, headers=signed_headers(body)).status_code < 500
    stripe = web.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_signature(body)})
    assert stripe.status_code == 400 and stripe.json()["error"] == "malformed"


def test_a_signed_block_action_without_an_action_id_gets_400(slack_client: TestClient) -> None:
    # Found by bench/fault_run.py's fuzz: 15 of 762 requests, all of this shape.
    body = interactive(_click(actions=[{}], user={}))
    response = slack_client.post("/slack/events", content=body, headers=slack_signed(body, content_type=FORM))
    assert response.status_code == 400, response.text
