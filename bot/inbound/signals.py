"""The generic signal connector: a Standard Webhooks JSON body (DESIGN.md "Signal body") → Signal.

`parse_signal` is the one parser POST /signals and `crm signal` both use; both go through the intake
inbox (bot.inbound.intake), so a key sent both ways is one event.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.inbound.errors import InvalidSignal, MalformedBody, UnknownSignalType
from bot.inbound.intake import Accepted, InboundSignal, ensure_storable, record
from store.events import SIGNAL_TYPES, CustomerRef

if TYPE_CHECKING:
    from bot.bootstrap import App

SOURCE = "signals"

# Years a signal's occurred_at may name: wide enough for any real history, narrow enough that
# converting to UTC can never overflow.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999


class SignalBody(BaseModel):
    """The JSON body of POST /signals and `crm signal` (DESIGN.md "Signal body")."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="one of the known signal types, e.g. lead.created")
    occurred_at: datetime | None = Field(default=None, description="ISO-8601; naive times are UTC")
    customer: CustomerRef
    text: str | None = Field(default=None, max_length=200_000)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
            raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def known_types() -> list[str]:
    return sorted(SIGNAL_TYPES)


def load_json(body: bytes | str) -> Any:
    """Parse a JSON body; anything that is not strict JSON (NaN, bad UTF-8, absurd nesting) is refused."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MalformedBody("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # bad UTF-8, NaN/Infinity, integers too long to read
        raise MalformedBody(f"malformed JSON: {exc}") from None


def deeper_than(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests objects and lists more than `limit` levels deep."""
    stack = [(document, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_signal(body: bytes, key: str, source: str = SOURCE) -> InboundSignal:
    """Validate a signal body; raises MalformedBody, UnknownSignalType or InvalidSignal naming fields."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidSignal(
            "the body must be a JSON object", errors=[{"field": "", "message": "must be a JSON object"}]
        )
    ensure_storable(document)
    signal_type = document.get("type")
    if signal_type is None:
        raise InvalidSignal("type is required", errors=[{"field": "type", "message": "required"}])
    if not isinstance(signal_type, str) or signal_type not in SIGNAL_TYPES:
        raise UnknownSignalType(
            f"unknown signal type {signal_type!r}; known types: {', '.join(known_types())}",
            errors=[{"field": "type", "message": "unknown signal type"}],
            known_types=known_types(),
        )
    try:
        parsed = SignalBody.model_validate(document)
    except ValidationError as exc:
        raise invalid(exc) from None
    model = SIGNAL_TYPES[signal_type]
    if model.DATA_MODEL is not None:
        try:
            model.DATA_MODEL.model_validate(parsed.data)
        except ValidationError as exc:
            raise invalid(exc, prefix="data") from None
    signal = model(customer=parsed.customer, text=parsed.text, data=parsed.data)
    return InboundSignal(signal_type, signal, key, source, parsed.occurred_at)


def invalid(exc: ValidationError, prefix: str = "") -> InvalidSignal:
    """An InvalidSignal naming every failing field as a dotted path (`customer.email`, `data.invoice_id`)."""
    errors = []
    for error in exc.errors(include_url=False):
        parts = [prefix] if prefix else []
        parts += [str(part) for part in error["loc"]]
        errors.append({"field": ".".join(parts), "message": error["msg"]})
    fields = ", ".join(error["field"] or "body" for error in errors)
    return InvalidSignal(f"the signal fails the schema at {fields}", errors=errors)


def webhook_key(webhook_id: str) -> str:
    """The idempotency key of a POST /signals delivery."""
    return f"{SOURCE}:{webhook_id}"


def content_key(body: bytes) -> str:
    """The key of a signal sent without a webhook-id (`crm signal`): the same bytes are the same signal."""
    return f"{SOURCE}:sha256:{hashlib.sha256(body).hexdigest()}"


def accept_signal(container: App, body: bytes, key: str) -> Accepted:
    """Parse and record one signal body under key, in the log on return (`crm signal`, the demo)."""
    return record(container, parse_signal(body, key))
