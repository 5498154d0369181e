"""The fuzz scenario of the fault run: every endpoint, from the OpenAPI document and by hand.

Generated requests (schemathesis, positive and negative data) for each operation of the running app's
`/openapi.json`, signed correctly so they reach the parsers; then hand-made malformed bodies for
`/slack/events`, `/telegram/webhook`, `/webhooks/stripe` and `/webhooks/email` (issue 16's reproductions
and their relatives), each with and without a valid signature; then random bytes and random JSON, signed,
to the two chat endpoints.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.inbound_support import signed_headers, stripe_signature
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as th
from tests.standins import slack_requests as sr

if TYPE_CHECKING:
    from bench.fault_run import Result
    from bench.fault_stack import Stack

DEEP = b"[" * 100_000 + b"]" * 100_000

schemathesis.openapi.media_type("message/rfc822", st.binary(max_size=2000))


def fuzz(stack: Stack, budget: int) -> Result:
    from bench.fault_run import Result

    result = Result("5. fuzz of every endpoint")
    statuses: dict[str, dict[int, int]] = {}
    with httpx.Client(base_url=stack.url, timeout=30) as client:

        def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
            try:
                status: int | None = client.request(
                    method, path, content=body or None, headers=headers
                ).status_code
            except httpx.HTTPError:
                status = None
            result.count(status)
            per = statuses.setdefault(path, {})
            per[status or 0] = per.get(status or 0, 0) + 1
            if status is not None and status >= 500:
                result.notes.append(f"{status} from {method} {path}: {body[:120]!r}")

        hand = list(handmade())
        for method, path, body, headers in hand:
            send(method, path, body, headers)
        chat_share = max(0, (budget - len(hand)) // 3)
        random_chat(send, chat_share)
        generated(stack, send, max(0, budget - result.attempts))
    result.notes.append(f"statuses per path: {json.dumps(statuses, sort_keys=True)}")
    return result


def handmade() -> Any:
    """(method, path, body, headers): issue 16's reproductions and relatives."""
    now = str(int(time.time()))
    unsigned = [
        {"X-Slack-Request-Timestamp": "now", "X-Slack-Signature": "v0=0"},
        {"X-Slack-Request-Timestamp": "", "X-Slack-Signature": "v0=0"},
        {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=zz"},
        {"X-Slack-Request-Timestamp": "9" * 40, "X-Slack-Signature": "v0=" + "0" * 64},
        {},
    ]
    slack_bodies = [
        b"payload=x",
        b"payload=\xff",
        b"payload=[1]",
        b"payload=null",
        b"payload=%7B%7D",
        b"payload=" + b"%5B" * 5000,
        b"\xff\xfe",
        b"",
        b"[1]",
        b"null",
        b'{"type": "event_callback", "event": 1}',
        b'{"type": "url_verification"}',
        DEEP,
        sr.interactive_body({"type": "block_actions", "actions": [], "user": {"id": sh.OPERATOR}}),
        sr.interactive_body({"type": "block_actions", "actions": [{"action_id": "crm:approve"}]}),
        sr.interactive_body({"type": "view_submission", "view": None}),
        sr.slash("/customer", "%", user=sh.OPERATOR, response_url="http://127.0.0.1:9/x"),
        sr.slash("/customer", "x" * 100_000, user=sh.STRANGER, response_url="http://127.0.0.1:9/x"),
    ]
    for body in slack_bodies:
        for content_type in (sr.FORM, sr.JSON):
            for headers in unsigned:
                yield "POST", "/slack/events", body, {**headers, "Content-Type": content_type}
            signed = signed_or_raw(body, content_type)
            yield "POST", "/slack/events", body, signed
    telegram_bodies = [
        DEEP,
        b"[1]",
        b"null",
        b"\xff",
        b"{}",
        b'{"update_id": "1"}',
        b'{"update_id": 1, "callback_query": 5}',
        b'{"update_id": 2, "message": {"date": 99999999999999999999}}',
        b'{"update_id": 3, "callback_query": {"id": "x", "from": {"id": 1}, "data": "approve:nope"}}',
        json.dumps(
            {
                "update_id": 4,
                "message": {
                    "message_id": 1,
                    "date": 1,
                    "chat": {"id": 1, "type": "x"},
                    "text": "/customer %",
                },
            }
        ).encode(),
    ]
    for body in telegram_bodies:
        for secret in (None, "wrong", th.WEBHOOK_SECRET):
            headers = {"Content-Type": "application/json"}
            if secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = secret
            yield "POST", "/telegram/webhook", body, headers
    webhook_bodies = [b"", b"{", b"[]", b"\xff", DEEP, b'{"type": "lead.created"}', b'{"id": 1, "type": []}']
    for body in webhook_bodies:
        yield "POST", "/webhooks/stripe", body, {"Stripe-Signature": "t=1,v1=00"}
        yield "POST", "/webhooks/stripe", body, {"Stripe-Signature": stripe_signature(body)}
        yield (
            "POST",
            "/signals",
            body,
            {"webhook-id": "x", "webhook-timestamp": "y", "webhook-signature": "v1,AA"},
        )
        yield "POST", "/signals", body, signed_headers(body)
        yield "POST", "/webhooks/email", body, signed_headers(body, content_type="message/rfc822")
    mail = b"From: a@b\r\nSubject: hi\r\n there\r\nMessage-ID: <x\r\n@y>\r\n\r\nhello"
    yield "POST", "/webhooks/email", mail, signed_headers(mail, content_type="message/rfc822")
    for name in ("\u00df" * 255, "\ufdfa" * 200):
        body = json.dumps(
            {"type": "lead.created", "customer": {"name": name, "email": "eszett@grow.example"}}
        ).encode()
        yield "POST", "/signals", body, signed_headers(body)
    for path in ("/metrics", "/docs", "/openapi.json", "/healthz"):
        yield "GET", path, b"", {"Authorization": "Bearer wrong"}


def signed_or_raw(body: bytes, content_type: str) -> dict[str, str]:
    """Slack's signature over body; slack_sdk's signer needs text, so undecodable bytes go unsigned."""
    try:
        return sr.signed_headers(sh.SECRET, body, content_type=content_type)
    except UnicodeDecodeError:
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=" + "0" * 64,
        }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def random_chat(send: Any, n: int) -> None:
    """n signed bodies, random bytes or random JSON (objects shaped a bit like the real ones)."""
    rng = random.Random(16)

    @given(value=_json, raw=st.binary(max_size=300), pick=st.integers(0, 3))
    @settings(
        max_examples=max(1, n),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def one(value: Any, raw: bytes, pick: int) -> None:
        if pick == 0:
            body = raw
        elif pick == 1:
            body = json.dumps({"update_id": rng.randrange(10**9), "callback_query": value}).encode()
        else:
            body = json.dumps(value).encode()
        if pick in (1, 3):
            headers = {
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": th.WEBHOOK_SECRET,
            }
            send("POST", "/telegram/webhook", body, headers)
        else:
            if pick == 2:
                form = sr.interactive_body({"type": "block_actions", "actions": [value], "user": value})
            else:
                form = b"payload=" + quote_from_bytes(body).encode()
            send("POST", "/slack/events", form, signed_or_raw(form, sr.FORM))

    one()


def generated(stack: Stack, send: Any, n: int) -> None:
    """Schemathesis cases for each operation of the app's OpenAPI document, signed like real senders."""
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    modes = [(op, mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    per = max(1, n // max(1, len(modes)))
    for operation, mode in modes:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=per, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def one(case: Any) -> None:
            body = raw_body(case)
            headers = {
                k: v
                for k, v in (case.headers or {}).items()
                if isinstance(v, str) and not k.lower().startswith(("webhook-", "stripe-"))
            }
            if case.path in {"/signals", "/webhooks/email"}:
                headers.update(signed_headers(body, content_type=case.media_type or "application/json"))
            elif case.path == "/webhooks/stripe":
                headers["stripe-signature"] = stripe_signature(body)
            with contextlib.suppress(UnicodeEncodeError):  # a header httpx cannot put on the wire
                send(case.method, case.formatted_path, body, headers)

        # Negative data for an operation that takes no input cannot be made: nothing to send there.
        with contextlib.suppress(Unsatisfiable):
            one()


def raw_body(case: Any) -> bytes:
    body = case.body
    if body is None or type(body).__name__ == "NotSet":
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return json.dumps(body).encode("utf-8", "surrogatepass")
