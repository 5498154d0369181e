"""Request signatures (Standard Webhooks, Slack, Stripe), checked on the raw body before anything is parsed.

DESIGN.md invariant 5. Every check here works on the bytes received, compares in constant time, and
never raises anything but BadSignature (or NotConfigured): a malformed header or body is a refusal,
never a crash, whoever sent it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from bot.inbound.errors import BadSignature, NotConfigured

# The window the Standard Webhooks spec, Slack and Stripe allow between signing and receiving: it
# bounds how long a captured request can be replayed.
TIMESTAMP_TOLERANCE = timedelta(minutes=5)

# Longest webhook-id accepted: the id becomes part of the idempotency key (a 255-character column).
MAX_WEBHOOK_ID = 128

# Digits a Unix-seconds timestamp header may have: ten reach the year 2286; anything longer is not a
# timestamp and is refused before int() has to read it.
MAX_TIMESTAMP_DIGITS = 12


def unix_seconds(value: str | None) -> int | None:
    """A timestamp header as whole Unix seconds, or None unless it is 1-12 ASCII digits.

    Stricter than int(): no sign, spaces, underscores, exponents or non-ASCII digits, so the text the
    sender signed and the number checked against the clock are the same thing.
    """
    if not value or len(value) > MAX_TIMESTAMP_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def is_recent(timestamp: int, now: float | None = None) -> bool:
    """Whether a signed timestamp is within TIMESTAMP_TOLERANCE of now, either way."""
    current = time.time() if now is None else now
    return abs(current - timestamp) <= TIMESTAMP_TOLERANCE.total_seconds()


def matches_any(expected: bytes, candidates: Iterable[bytes | None]) -> bool:
    """Whether any candidate equals expected; every candidate is compared in constant time."""
    found = False
    for candidate in candidates:
        if candidate is not None and hmac.compare_digest(expected, candidate):
            found = True
    return found


def header_bytes(value: str) -> bytes:
    """A header value as comparable bytes (a non-ASCII value cannot equal a hex or base64 signature)."""
    return value.encode("utf-8", "replace")


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


# -- Standard Webhooks (POST /signals, POST /webhooks/email) -----------------------------------------


def verify_standard_webhook(secret: str | None, setting: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Check `webhook-signature` over `webhook-id.webhook-timestamp.body`; return the webhook-id.

    Raises NotConfigured when the secret (named by `setting`) is unset and BadSignature otherwise.
    """
    if not secret:
        raise NotConfigured(f"{setting} is not set, so this endpoint cannot authenticate anything")
    lowered = _lowered(headers)
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (webhook_id and stamp and signatures):
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(webhook_id) > MAX_WEBHOOK_ID:
        raise BadSignature(f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    if not (webhook_id.isascii() and webhook_id.isprintable()):
        raise BadSignature("webhook-id must be printable ASCII")
    timestamp = unix_seconds(stamp)
    if timestamp is None:
        raise BadSignature("webhook-timestamp is not a Unix time in whole seconds")
    if not is_recent(timestamp):
        raise BadSignature("signature refused: timestamp outside 5 minutes of now")
    expected = _standard_mac(secret, f"{webhook_id}.{stamp}.".encode() + body)
    candidates = []
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1":
            candidates.append(_base64(signature))
    if not matches_any(expected, candidates):
        raise BadSignature("signature refused: no matching v1 signature found")
    return webhook_id


def sign_standard_webhook(secret: str, webhook_id: str, timestamp: datetime, body: bytes) -> str:
    """The `webhook-signature` value for body (what a sender computes; tests and `crm` tools use it)."""
    mac = _standard_mac(secret, f"{webhook_id}.{int(timestamp.timestamp())}.".encode() + body)
    return "v1," + base64.b64encode(mac).decode()


def _standard_mac(secret: str, signed: bytes) -> bytes:
    # The key is the base64 part after `whsec_`, padded as the standardwebhooks package pads it.
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    return hmac.new(key, signed, hashlib.sha256).digest()


def _base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


# -- Slack (POST /slack/events) ----------------------------------------------------------------------


def verify_slack_request(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Check `X-Slack-Signature` over `v0:timestamp:body` (PROTOCOLS.md section 1); BadSignature if not.

    The same check Bolt makes afterwards, but over the raw bytes and without its failure modes (a
    timestamp that is not a number, a body that is not UTF-8, a non-ASCII signature all raised there).
    """
    lowered = _lowered(headers)
    stamp = lowered.get("x-slack-request-timestamp", "")
    signature = lowered.get("x-slack-signature", "")
    timestamp = unix_seconds(stamp)
    if timestamp is None or not signature:
        raise BadSignature("missing X-Slack-Signature, or X-Slack-Request-Timestamp is not a Unix time")
    if not is_recent(timestamp):
        raise BadSignature("signature refused: timestamp outside 5 minutes of now")
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    if not matches_any(b"v0=" + mac.hexdigest().encode(), [header_bytes(signature)]):
        raise BadSignature("signature refused")


# -- Stripe (POST /webhooks/stripe) ------------------------------------------------------------------


def verify_stripe_signature(secret: str, body: bytes, header: str) -> None:
    """Check `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` over `t.body`; BadSignature if not."""
    stamp, signatures = "", []
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name.strip() == "t":
            stamp = value.strip()
        elif name.strip() == "v1":
            signatures.append(header_bytes(value.strip()))
    timestamp = unix_seconds(stamp)
    if timestamp is None or not signatures:
        raise BadSignature("Stripe-Signature must be t=<unix seconds>,v1=<hex signature>")
    if not is_recent(timestamp):
        raise BadSignature("signature refused: timestamp outside 5 minutes of now")
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    if not matches_any(mac.hexdigest().encode(), signatures):
        raise BadSignature("signature refused: no matching v1 signature found")
