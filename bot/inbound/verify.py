"""Standard Webhooks signatures, checked on the raw body before anything is parsed (DESIGN.md invariant 5)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bot.inbound.errors import BadSignature, NotConfigured

# The window the Standard Webhooks spec (and Stripe) allow between signing and receiving: it bounds
# how long a captured request can be replayed.
TIMESTAMP_TOLERANCE = timedelta(minutes=5)

# Longest webhook-id accepted: the id becomes part of the idempotency key (a 255-character column).
MAX_WEBHOOK_ID = 128


def verify_standard_webhook(secret: str | None, setting: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Check `webhook-signature` over `webhook-id.webhook-timestamp.body`; return the webhook-id.

    Raises NotConfigured when the secret (named by `setting`) is unset and BadSignature otherwise.
    """
    if not secret:
        raise NotConfigured(f"{setting} is not set, so this endpoint cannot authenticate anything")
    lowered = {key.lower(): value for key, value in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    if not (webhook_id and lowered.get("webhook-timestamp") and lowered.get("webhook-signature")):
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(webhook_id) > MAX_WEBHOOK_ID:
        raise BadSignature(f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        # The package signs `str` bodies as UTF-8; a raw mail in another charset is checked byte-wise
        # with the same scheme (HMAC-SHA256 of "id.timestamp." + body, base64, "v1,").
        _verify_bytes(secret, body, lowered)
        return webhook_id
    try:
        Webhook(secret).verify(body, lowered, json_parse=False)
    except WebhookVerificationError as exc:
        raise BadSignature(f"signature refused: {exc}") from None
    except (ValueError, binascii.Error):
        raise BadSignature("webhook-signature is not a list of `v1,<base64>` signatures") from None
    return webhook_id


def _verify_bytes(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    try:
        timestamp = datetime.fromtimestamp(float(headers["webhook-timestamp"]), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise BadSignature("webhook-timestamp is not a Unix time") from None
    if abs(datetime.now(UTC) - timestamp) > TIMESTAMP_TOLERANCE:
        raise BadSignature("signature refused: timestamp outside 5 minutes of now")
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    signed = f"{headers['webhook-id']}.{int(timestamp.timestamp())}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        try:
            given = base64.b64decode(signature, validate=True)
        except binascii.Error:
            continue
        if version == "v1" and hmac.compare_digest(expected, given):
            return
    raise BadSignature("signature refused: no matching signature found")


def sign_standard_webhook(secret: str, webhook_id: str, timestamp: datetime, body: bytes) -> str:
    """The `webhook-signature` value for body (what a sender computes; tests and `crm` tools use it)."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    signed = f"{webhook_id}.{int(timestamp.timestamp())}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
