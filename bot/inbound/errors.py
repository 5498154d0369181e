"""Why an inbound delivery was refused. The web app maps each to a status; the CLI to an exit code."""

from __future__ import annotations

from typing import Any


class InboundRefused(Exception):
    """A delivery that was refused before anything was written; `reason` labels the refusal metric."""

    status = 400
    reason = "bad_request"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotConfigured(InboundRefused):
    """The endpoint's secret is not set, so nothing it receives could be authenticated."""

    status = 503
    reason = "not_configured"


class BadSignature(InboundRefused):
    """Missing or wrong signature, or a timestamp outside the tolerance (DESIGN.md invariant 5)."""

    status = 401
    reason = "bad_signature"


class BodyTooLarge(InboundRefused):
    status = 413
    reason = "too_large"


class MalformedBody(InboundRefused):
    """The body is not what the endpoint reads at all (not JSON, not a mail message)."""

    status = 400
    reason = "malformed"


class InvalidSignal(InboundRefused):
    """The body parsed but fails the schema; `errors` name each field and what is wrong with it."""

    status = 422
    reason = "invalid"

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.errors = errors or []


class UnknownSignalType(InvalidSignal):
    reason = "unknown_type"


class SurfaceFailed(RuntimeError):
    """A chat surface cannot run for a reason the operator must fix (a refused token); the message is
    one line naming the setting and the fix."""
