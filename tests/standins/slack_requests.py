"""Inbound Slack requests as Slack sends them (PROTOCOLS.md sections 1 and 2): bodies, and their signatures.

Signatures come from slack_sdk's own `SignatureVerifier.generate_signature`, over the exact bytes sent.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

TEAM = {"id": "T0001", "domain": "example"}


def signed_headers(
    secret: str, body: bytes, *, timestamp: int | None = None, content_type: str = ""
) -> dict[str, str]:
    """X-Slack-Request-Timestamp and X-Slack-Signature for `body`, plus the content type."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body.decode("utf-8"))
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def slash(command: str, text: str, *, user: str, response_url: str, channel: str = "C0OPS") -> bytes:
    """A slash command body (form-encoded, flat fields)."""
    return urlencode(
        {
            "token": "legacy",
            "team_id": TEAM["id"],
            "team_domain": TEAM["domain"],
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0STANDIN",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex[:8]}",
        }
    ).encode()


def slash_payload(
    command: str, text: str, *, user: str, response_url: str, channel: str = "C0OPS"
) -> dict[str, Any]:
    """The same slash command as a Socket Mode envelope payload."""
    return {
        "team_id": TEAM["id"],
        "channel_id": channel,
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A0STANDIN",
        "response_url": response_url,
        "trigger_id": f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex[:8]}",
    }


def click(
    value: str,
    *,
    user: str,
    response_url: str,
    action_id: str | None = None,
    channel: str = "C0OPS",
    message_ts: str = "1700000001.000100",
    ephemeral: bool = False,
    select: bool = False,
) -> dict[str, Any]:
    """A block_actions payload for a tap on a button (or a static_select choice) carrying `value`."""
    action: dict[str, Any] = {
        "action_id": action_id or "crm:" + value.split(":", 1)[0],
        "block_id": "proposal",
        "action_ts": f"{time.time():.6f}",
    }
    if select:
        action.update(
            type="static_select",
            selected_option={"text": {"type": "plain_text", "text": "x"}, "value": value},
        )
    else:
        action.update(type="button", value=value, text={"type": "plain_text", "text": "x"})
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
        "api_app_id": "A0STANDIN",
        "token": "legacy",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        },
        "trigger_id": f"{uuid.uuid4().int % 10**12}.1234.{uuid.uuid4().hex[:8]}",
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "ops"},
        "message": {"type": "message", "ts": message_ts, "text": "proposal", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def submission(
    opened_view: dict[str, Any], values: dict[str, dict[str, str]], *, user: str
) -> dict[str, Any]:
    """A view_submission of a modal the app opened (as views.open received it), with typed values.

    `values` maps block_id → {action_id: value}.
    """
    state = {
        "values": {
            block: {action: {"type": "plain_text_input", "value": value} for action, value in inputs.items()}
            for block, inputs in values.items()
        }
    }
    view = {**opened_view, "id": "V0MODAL", "team_id": TEAM["id"], "state": state, "hash": "1.x"}
    return {
        "type": "view_submission",
        "team": TEAM,
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
        "api_app_id": "A0STANDIN",
        "token": "legacy",
        "trigger_id": f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex[:8]}",
        "view": view,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def interactive_body(payload: dict[str, Any]) -> bytes:
    """How interactivity travels over HTTP: form-encoded, one field `payload` holding the JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def message_event(
    text: str, *, user: str, channel: str, ts: str, event_id: str, subtype: str | None = None
) -> dict[str, Any]:
    """An Events API `event_callback` carrying a channel message."""
    event: dict[str, Any] = {
        "type": "message",
        "channel_type": "channel",
        "text": text,
        "user": user,
        "ts": ts,
        "team": TEAM["id"],
        "channel": channel,
        "event_ts": ts,
    }
    if subtype:
        event["subtype"] = subtype
    return {
        "token": "legacy",
        "team_id": TEAM["id"],
        "api_app_id": "A0STANDIN",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(float(ts)),
        "authorizations": [{"team_id": TEAM["id"], "user_id": "U0BOT", "is_bot": True}],
        "is_ext_shared_channel": True,
    }
