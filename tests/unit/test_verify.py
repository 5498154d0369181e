"""Signature checks over raw bytes (bot.inbound.verify): constant-time, and nothing but BadSignature."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.inbound.errors import BadSignature, MalformedBody
from bot.inbound.verify import (
    unix_seconds,
    verify_slack_request,
    verify_standard_webhook,
    verify_stripe_signature,
)
from bot.slack.payload import slack_payload
from tests.inbound_support import SIGNALS_SECRET, STRIPE_SECRET

# PROTOCOLS.md section 1: Slack's published test vector.
VECTOR_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VECTOR_TIMESTAMP = "1531420618"
VECTOR_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
VECTOR_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1531420618", 1531420618),
        ("0", 0),
        ("", None),
        (None, None),
        ("now", None),
        (" 1", None),
        ("+1", None),
        ("-1", None),
        ("1_0", None),
        ("1.5", None),
        ("1e9", None),
        ("\uff11\uff17", None),
        ("9" * 13, None),
    ],
)
def test_only_plain_ascii_digits_are_a_timestamp(value: str | None, expected: int | None) -> None:
    assert unix_seconds(value) == expected


def test_slacks_published_vector_verifies_at_its_time_and_not_later(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = {"X-Slack-Request-Timestamp": VECTOR_TIMESTAMP, "X-Slack-Signature": VECTOR_SIGNATURE}
    monkeypatch.setattr(time, "time", lambda: int(VECTOR_TIMESTAMP) + 10)
    verify_slack_request(VECTOR_SECRET, VECTOR_BODY, headers)
    with pytest.raises(BadSignature):
        verify_slack_request(VECTOR_SECRET, VECTOR_BODY + b"x", headers)
    monkeypatch.setattr(time, "time", lambda: int(VECTOR_TIMESTAMP) + 301)
    with pytest.raises(BadSignature, match="timestamp"):
        verify_slack_request(VECTOR_SECRET, VECTOR_BODY, headers)


_header_text = st.text(max_size=40) | st.binary(max_size=40).map(lambda raw: raw.decode("latin-1"))


@given(
    body=st.binary(max_size=200),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-Slack-Request-Timestamp",
                "X-Slack-Signature",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
            ]
        ),
        _header_text | st.just(str(int(time.time()))),
    ),
    stripe=_header_text,
)
def test_no_header_or_body_makes_a_check_raise_anything_but_bad_signature(
    body: bytes, headers: dict[str, str], stripe: str
) -> None:
    for check in (
        lambda: verify_slack_request("secret", body, headers),
        lambda: verify_standard_webhook(SIGNALS_SECRET, "SIGNALS_SECRET", body, headers),
        lambda: verify_stripe_signature(STRIPE_SECRET, body, stripe),
    ):
        with pytest.raises(BadSignature):
            check()


@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "", "Application/JSON; charset=utf-8"]
    ),
)
def test_a_slack_body_is_a_payload_object_or_refused_as_malformed(body: bytes, content_type: str) -> None:
    try:
        assert isinstance(slack_payload(body, content_type), dict)
    except MalformedBody as exc:
        assert exc.message


@given(body=st.text(max_size=200), webhook_id=st.from_regex(r"msg_[A-Za-z0-9]{1,20}", fullmatch=True))
def test_standard_webhooks_signed_by_the_reference_package_verify_here_and_back(
    body: str, webhook_id: str
) -> None:
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    from bot.inbound.verify import sign_standard_webhook

    now = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SIGNALS_SECRET).sign(webhook_id, now, body),
    }
    raw = body.encode()
    assert verify_standard_webhook(SIGNALS_SECRET, "SIGNALS_SECRET", raw, headers) == webhook_id
    ours = {**headers, "webhook-signature": sign_standard_webhook(SIGNALS_SECRET, webhook_id, now, raw)}
    Webhook(SIGNALS_SECRET).verify(raw, ours, json_parse=False)


@given(body=st.text(max_size=200))
def test_stripe_signatures_the_stripe_package_accepts_verify_here(body: str) -> None:
    import stripe

    from tests.inbound_support import stripe_signature

    raw = body.encode()
    header = stripe_signature(raw)
    stripe.WebhookSignature.verify_header(raw, header, STRIPE_SECRET, tolerance=300)
    verify_stripe_signature(STRIPE_SECRET, raw, header)
