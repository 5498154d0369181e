"""Serving the Bolt app: HTTP at `POST /slack/events` of the web app, or Socket Mode for `crm bot`/`run`."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.error import BoltError
from slack_sdk.errors import SlackApiError
from starlette.concurrency import run_in_threadpool

from bot.inbound.errors import BadSignature, BodyTooLarge, MalformedBody, SurfaceFailed
from bot.inbound.verify import verify_slack_request
from bot.slack.app import SlackNotConfigured
from bot.slack.payload import slack_payload
from bot.web.body import read_body

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# Slack's own payloads are a few KiB (a block_actions carries the whole message, up to ~50 blocks);
# 1 MiB is far above any of them and bounds what an unauthenticated sender can make us buffer.
MAX_SLACK_BODY = 1024 * 1024
EVENTS_PATH = "/slack/events"


def slack_router(container: App) -> APIRouter:
    """`POST /slack/events`: events, commands and interactivity, through Bolt (signature checked there)."""
    router = APIRouter()
    settings = container.settings
    app = container.slack_bolt if settings.slack_bot_token and settings.slack_signing_secret else None
    # Without a signing secret the route only answers 503.
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""

    @router.post(EVENTS_PATH, include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        if app is None or not secret:
            return JSONResponse(
                {"error": "not_configured", "message": "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"},
                status_code=503,
            )
        try:
            body = await read_body(request, MAX_SLACK_BODY)
        except BodyTooLarge as exc:
            return JSONResponse({"error": "too_large", "message": exc.message}, status_code=413)
        except MalformedBody as exc:
            return JSONResponse({"error": "malformed", "message": exc.message}, status_code=400)
        # Bolt parses the body before it checks the signature (and a malformed one makes it fail);
        # check the signature first, over the raw bytes, so nothing unauthenticated is parsed
        # (DESIGN.md invariant 5), then the payload's shape, so nothing Bolt cannot read reaches it.
        try:
            verify_slack_request(secret, body, request.headers)
        except BadSignature as exc:
            return JSONResponse({"error": "invalid request", "message": exc.message}, status_code=401)
        try:
            slack_payload(body, request.headers.get("content-type"))
        except MalformedBody as exc:
            return JSONResponse({"error": "malformed", "message": exc.message}, status_code=400)
        # Bolt's dispatch is synchronous (it waits for ack() or a listener); keep it off the event loop.
        bolt_response = await run_in_threadpool(app.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    return router


def start_slack(container: App) -> SocketModeHandler:
    """Connect to Slack in Socket Mode (non-blocking); `handler.close()` disconnects.

    A refused token or an unreachable Slack raises SurfaceFailed with one line saying what to fix.
    """
    settings = container.settings
    if settings.slack_app_token is None:
        raise SlackNotConfigured("SLACK_APP_TOKEN (xapp-…) is not set; Socket Mode needs it")
    try:
        bolt = container.slack_bolt  # calls auth.test with SLACK_BOT_TOKEN
    except BoltError as exc:
        raise SurfaceFailed(
            f"Slack refused SLACK_BOT_TOKEN ({_slack_reason(exc)}): copy the Bot User OAuth Token "
            "(xoxb-…) from your app's OAuth & Permissions page"
        ) from None
    handler = SocketModeHandler(bolt, app_token=settings.slack_app_token.get_secret_value())
    try:
        handler.connect()  # apps.connections.open with SLACK_APP_TOKEN
    except SlackApiError as exc:
        raise SurfaceFailed(
            f"Slack refused SLACK_APP_TOKEN ({exc.response.get('error', 'refused')}): create an app-level "
            "token (xapp-…) with the connections:write scope under Basic Information → App-Level Tokens"
        ) from None
    except OSError as exc:
        raise SurfaceFailed(f"Slack is unreachable at {settings.slack_api_url}: {exc}") from None
    log.info("Slack connected in Socket Mode")
    return handler


def _slack_reason(exc: Exception) -> str:
    """The Slack error code in a Bolt error's message (`invalid_auth`), or its first line."""
    text = str(exc)
    for code in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        if code in text:
            return code
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def run_slack(container: App, stop: threading.Event | None = None) -> None:
    """Socket Mode until SIGINT/SIGTERM (or `stop` is set): the Slack part of `crm bot`."""
    stop = stop or threading.Event()
    handler = start_slack(container)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        handler.close()
