"""Intake routes. They only translate: read the body, verify, hand it to bot.inbound, answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from bot.inbound.email import parse_email
from bot.inbound.intake import Accepted, InboundSignal, accept, accept_on_loop
from bot.inbound.signals import parse_signal, webhook_key
from bot.inbound.stripe import map_event, verify_event
from bot.inbound.verify import verify_standard_webhook
from bot.metrics import Metrics
from bot.web.body import read_body
from bot.web.openapi import EMAIL_BODY, REFUSALS, SIGNAL_BODY, STRIPE_BODY
from bot.web.schemas import AcceptedOut, IgnoredOut

if TYPE_CHECKING:
    from bot.bootstrap import App
    from store.intake_async import AsyncStager

router = APIRouter()

# Bodies up to this size are parsed and staged in the event loop (well under a millisecond of CPU, less
# than a worker thread's hand-off); larger ones, up to MAX_BODY_BYTES, take tens of milliseconds to
# parse and check, and go to a worker thread so that they do not hold up every other request.
IN_LOOP_BYTES = 64 * 1024


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
    return _accepted(request, await _accept(request, lambda: parse_signal(body, key), in_loop=_small(body)))


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
    return _accepted(request, await _accept(request, lambda: inbound, in_loop=_small(body)))


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
    # Parsing a mail (and converting its HTML) is CPU work: keep it off the event loop.
    return _accepted(request, await _accept(request, lambda: parse_email(body), in_loop=False))


async def _accept(request: Request, prepare: Callable[[], InboundSignal], *, in_loop: bool) -> Accepted:
    """Parse (`prepare`) and stage the signal: in the event loop when the app has its async stager
    (bot.web.app) and the work is small, otherwise in a worker thread."""
    container = _container(request)
    stager: AsyncStager | None = getattr(request.app.state, "stager", None)
    if stager is not None and in_loop:
        return await accept_on_loop(container, stager, prepare())
    return await run_in_threadpool(lambda: accept(container, prepare()))


def _small(body: bytes) -> bool:
    return len(body) <= IN_LOOP_BYTES


def _container(request: Request) -> App:
    container: App = request.app.state.container
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
    if accepted.warnings:
        content["warnings"] = list(accepted.warnings)
    return JSONResponse(content, status_code=202)
