"""The OpenAPI document: request bodies are documented by hand because the routes read raw bytes.

FastAPI documents a body only when it parses it, and parsing must wait until the signature over the
raw bytes is verified (DESIGN.md invariant 5); so the schemas are added to the generated document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bot.inbound.intake import MAX_EMAIL
from bot.inbound.signals import SignalBody, known_types
from bot.web.schemas import ErrorOut

_REF = "#/components/schemas/{model}"


def _refused(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _refused("malformed body (not JSON, not a mail message)"),
    401: _refused("missing or wrong signature, or a timestamp outside 5 minutes"),
    413: _refused("body over 1 MiB"),
    422: _refused("the body fails the schema; `errors` names the fields"),
    503: _refused("the endpoint's secret is not set, or the database is down (see Retry-After)"),
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


# The Standard Webhooks headers, documented here rather than declared as route parameters: the routes
# verify the raw request headers, and FastAPI's parameter parsing costs a quarter of a request.
WEBHOOK_HEADERS = [
    _header("webhook-id", "unique per message; the idempotency key"),
    _header("webhook-timestamp", "Unix seconds"),
    _header("webhook-signature", "v1,<base64>"),
]

SIGNAL_BODY = {
    "parameters": WEBHOOK_HEADERS,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="SignalBody")}}},
    },
}

STRIPE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Stripe event, as Stripe sends it (verified with the Stripe-Signature header)",
    "required": ["id", "object", "type", "data"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 128, "examples": ["evt_1PqRsT2eZvKYlo2C"]},
        "object": {"type": "string", "enum": ["event"]},
        "type": {"type": "string", "examples": ["invoice.payment_failed"]},
        "created": {"type": "integer"},
        "livemode": {"type": "boolean"},
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {"object": {"type": "object"}},
        },
    },
}

STRIPE_BODY = {
    "parameters": [_header("Stripe-Signature", "t=<unix seconds>,v1=<hex HMAC-SHA256>")],
    "requestBody": {"required": True, "content": {"application/json": {"schema": STRIPE_EVENT_SCHEMA}}},
}

EMAIL_BODY = {
    "parameters": WEBHOOK_HEADERS,
    "requestBody": {
        "required": True,
        "content": {
            "message/rfc822": {
                "schema": {"type": "string", "format": "binary", "description": "the raw message"}
            }
        },
    },
}


def install_openapi(app: FastAPI) -> None:
    """Make app.openapi() include the hand-documented request schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            signal = SignalBody.model_json_schema(ref_template=_REF)
            schemas.update(signal.pop("$defs", {}))
            signal["properties"]["type"]["enum"] = known_types()
            schemas["SignalBody"] = signal
            # What CustomerRef's validators and the identity rules enforce, said in the schema too.
            customer = schemas["CustomerRef"]
            customer["minProperties"] = 1
            customer["properties"]["email"]["anyOf"][0].update(format="email", maxLength=MAX_EMAIL)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
