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
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool

from bot.slack.app import SlackNotConfigured

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
    # Without a signing secret the route only answers 503; slack_sdk refuses an empty secret.
    secret = settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if app is not None and secret else None

    @router.post(EVENTS_PATH, include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        if app is None or verifier is None:
            return JSONResponse(
                {"error": "not_configured", "message": "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"},
                status_code=503,
            )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_SLACK_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_SLACK_BODY:
            return JSONResponse({"error": "too_large"}, status_code=413)
        # Bolt parses the body before it checks the signature (and a malformed one raises); check it
        # first so nothing unauthenticated is parsed (DESIGN.md invariant 5). Bolt checks it again.
        if not verifier.is_valid_request(body, dict(request.headers)):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        try:
            bolt_request = to_bolt_request(request, body)
        except (UnicodeDecodeError, ValueError):
            return JSONResponse({"error": "malformed", "message": "not a Slack payload"}, status_code=400)
        # Bolt's dispatch is synchronous (it waits for ack() or a listener); keep it off the event loop.
        bolt_response = await run_in_threadpool(app.dispatch, bolt_request)
        return to_starlette_response(bolt_response)

    return router


def start_slack(container: App) -> SocketModeHandler:
    """Connect to Slack in Socket Mode (non-blocking); `handler.close()` disconnects."""
    settings = container.settings
    if settings.slack_app_token is None:
        raise SlackNotConfigured("SLACK_APP_TOKEN (xapp-…) is not set; Socket Mode needs it")
    handler = SocketModeHandler(container.slack_bolt, app_token=settings.slack_app_token.get_secret_value())
    handler.connect()
    log.info("Slack connected in Socket Mode")
    return handler


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
