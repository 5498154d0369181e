"""Response bodies of the HTTP app, as documented in its OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AcceptedOut(BaseModel):
    """A signal recorded, or recognised as a redelivery (then `event_id` is the original one)."""

    event_id: str
    duplicate: bool


class IgnoredOut(BaseModel):
    """A verified Stripe event of a type the CRM does not use; 2xx so Stripe stops resending it."""

    ignored: str


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the field, e.g. customer.email; empty for the body")
    message: str


class ErrorOut(BaseModel):
    """Why a request was refused; nothing was written."""

    error: str = Field(description="machine-readable reason, e.g. bad_signature, too_large, unknown_type")
    message: str
    errors: list[FieldError] = Field(default_factory=list)
    known_types: list[str] | None = None


class CheckOut(BaseModel):
    ok: bool
    detail: str


class HealthOut(BaseModel):
    status: str = Field(description="ok, or unavailable with the failing checks named")
    failing: list[str]
    checks: dict[str, CheckOut]
