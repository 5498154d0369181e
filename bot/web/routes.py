"""Intake routes. They only translate: read the body, verify, hand it to bot.inbound, answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from bot.inbound.email import parse_email
from bot.inbound.intake import Accepted, accept
from bot.inbound.signals import parse_signal, webhook_key
from bot.inbound.stripe import map_event, verify_event
from bot.inbound.verify import verify_standard_webhook
from bot.metrics import Metrics
from bot.web.body import read_body
from bot.web.openapi import EMAIL_BODY, REFUSALS, SIGNAL_BODY, STRIPE_BODY
from bot.web.schemas import AcceptedOut, IgnoredOut

if TYPE_CHECKING:
    from bot.bootstrap import Container

router = APIRouter()


@router.post(
    "/signals",
    status_code=202,
    response_model=AcceptedOut,
    responses=REFUSALS,
    openapi_extra=SIGNAL_BODY,
    summary="Record one customer signal (Standard Webhooks signed JSON)",
)
async def post_signal(request: Request) -> JSONResponse:
    container = _container(request)
    body = await read_body(request)
    verified_id = verify_standard_webhook(
        _secret(container.settings.signals_secret), "SIGNALS_SECRET", body, request.headers
    )
    key = webhook_key(verified_id)
    accepted = await run_in_threadpool(lambda: accept(container, parse_signal(body, key)))
    return _accepted(request, accepted)


@router.post(
    "/webhooks/stripe",
    status_code=202,
    response_model=AcceptedOut,
    responses={200: {"model": IgnoredOut, "description": "a type the CRM does not use"}, **REFUSALS},
    openapi_extra=STRIPE_BODY,
    summary="Record a Stripe event (invoices, subscriptions, checkout)",
)
async def post_stripe(request: Request) -> JSONResponse:
    container = _container(request)
    body = await read_body(request)
    event = verify_event(
        _secret(container.settings.stripe_webhook_secret), body, request.headers.get("stripe-signature")
    )
    inbound = map_event(event)
    if inbound is None:
        return JSONResponse({"ignored": str(event.get("type"))}, status_code=200)
    return _accepted(request, await run_in_threadpool(lambda: accept(container, inbound)))


@router.post(
    "/webhooks/email",
    status_code=202,
    response_model=AcceptedOut,
    responses=REFUSALS,
    openapi_extra=EMAIL_BODY,
    summary="Record an inbound email (raw RFC 822, signed like /signals)",
)
async def post_email(request: Request) -> JSONResponse:
    container = _container(request)
    body = await read_body(request)
    verify_standard_webhook(
        _secret(container.settings.signals_secret), "SIGNALS_SECRET", body, request.headers
    )
    # Parsing a 1 MiB mail (and converting its HTML) is CPU work: keep it off the event loop.
    accepted = await run_in_threadpool(lambda: accept(container, parse_email(body)))
    return _accepted(request, accepted)


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _accepted(request: Request, accepted: Accepted) -> JSONResponse:
    metrics: Metrics = request.app.state.metrics
    if accepted.duplicate:
        metrics.duplicates.labels(accepted.source).inc()
    else:
        metrics.signals.labels(accepted.type, accepted.source).inc()
    content: dict[str, Any] = {"event_id": accepted.event_id, "duplicate": accepted.duplicate}
    return JSONResponse(content, status_code=202)
