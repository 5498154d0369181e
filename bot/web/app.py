"""The app factory and the mapping from refusals and outages to HTTP answers (DESIGN.md invariant 9)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout as AsyncPoolTimeout
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.inbound.errors import InboundRefused
from bot.metrics import Metrics
from bot.web import ops, routes
from bot.web.guard import OpsPagesGuard
from bot.web.openapi import install_openapi
from store.intake_async import AsyncStager

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# What a client is told to wait before retrying while the database is down: long enough for a
# restart or failover, short enough that webhook senders' own retry schedules are not outrun.
RETRY_AFTER_S = 5
# Connections the event loop stages signals with: as many as requests usually wait on the database at
# once under load, without crowding a small Postgres server.
STAGE_POOL = 15
# How long a request waits for one of them before it is answered 503: a busy pool frees one in
# milliseconds, so this long means the database is unreachable.
STAGE_WAIT_S = 3.0


def create_app(container: App) -> FastAPI:
    """The HTTP app over a built App: intake, ops, `POST /slack/events` (503 until Slack's HTTP mode is
    configured) and, in Telegram's webhook mode, `POST /telegram/webhook`."""
    from bot.slack import slack_router
    from bot.telegram import telegram_router, webhook_mode

    app = FastAPI(
        lifespan=_lifespan,
        title="chatops-crm",
        version="0.1.0",
        description="Signal intake, webhooks, health and metrics of the chat-ops CRM.",
    )
    app.state.container = container
    app.state.metrics = container.metrics
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(slack_router(container))
    if webhook_mode(container):
        app.include_router(telegram_router(container))
    app.add_exception_handler(InboundRefused, _refused)  # type: ignore[arg-type]
    for outage in (OperationalError, InterfaceError, PoolTimeout, psycopg.OperationalError, AsyncPoolTimeout):
        app.add_exception_handler(outage, _database_down)
    for unstorable in (DataError, psycopg.DataError):
        app.add_exception_handler(unstorable, _unstorable)
    app.add_exception_handler(Exception, _internal)
    install_openapi(app)
    token = container.settings.metrics_token
    app.add_middleware(
        OpsPagesGuard,
        paths=ops_pages(app),
        token=token.get_secret_value() if token is not None else None,
    )
    return app


def ops_pages(app: FastAPI) -> list[str]:
    """The paths OpsPagesGuard restricts: the metrics and every page of the API documentation."""
    pages = [
        ops.METRICS_PATH,
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        app.swagger_ui_oauth2_redirect_url,
    ]
    return [page for page in pages if page]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On Postgres, the routes stage signals in the event loop with an AsyncStager bound to this loop.

    Without it (SQLite, or an app driven without its lifespan) they stage from worker threads.
    """
    container: App = app.state.container
    stager = None
    if container.engine.dialect.name == "postgresql":
        stager = AsyncStager(
            container.settings.resolved_database_url, max_size=STAGE_POOL, timeout=STAGE_WAIT_S
        )
        await stager.open()
    app.state.stager = stager
    try:
        yield
    finally:
        app.state.stager = None
        if stager is not None:
            await stager.close()


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "other"


def _count_refusal(request: Request, reason: str) -> None:
    metrics: Metrics = request.app.state.metrics
    metrics.refusals.labels(_endpoint(request), reason).inc()


async def _refused(request: Request, exc: InboundRefused) -> JSONResponse:
    _count_refusal(request, exc.reason)
    body = {"error": exc.reason, "message": exc.message, **exc.detail}
    body["errors"] = getattr(exc, "errors", [])
    return JSONResponse(body, status_code=exc.status)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unreachable on %s: %s", request.url.path, exc)
    _count_refusal(request, "database_down")
    body = {"error": "database_down", "message": "the database is unreachable; nothing was recorded, retry"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    # A value the inbound checks let through but a column refuses (e.g. a key grown past its width):
    # the transaction rolled back, so it is bad input, answered as such rather than as a crash.
    log.warning("database refused a value on %s: %s", request.url.path, exc)
    _count_refusal(request, "unstorable")
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    body = {"error": "unstorable", "message": f"a value does not fit the database: {reason}", "errors": []}
    return JSONResponse(body, status_code=422)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    # The trace goes to the log, never to the client.
    log.exception("unhandled error on %s", request.url.path)
    _count_refusal(request, "internal")
    return JSONResponse(
        {"error": "internal", "message": "internal error; it has been logged"}, status_code=500
    )
