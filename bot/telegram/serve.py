"""Serving the Telegram surface two ways.

Long polling by default (`crm bot`, `crm run`: no public URL needed); webhook mode when
TELEGRAM_WEBHOOK_URL is set, served at `POST /telegram/webhook` of the web app (`telegram_router`),
which refuses (403) any request without the right `X-Telegram-Bot-Api-Secret-Token` before parsing
it (invariant 5).
Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from telegram import Update
from telegram.error import InvalidToken, NetworkError

from bot.inbound import telegram_state
from bot.inbound.errors import InboundRefused, SurfaceFailed
from bot.inbound.signals import deeper_than, load_json
from bot.telegram.app import AnyApplication, TelegramNotConfigured, build_application, webhook_mode
from bot.telegram.handlers import menu_commands
from bot.web.body import read_body

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# An update is a few KiB; anything near this is not from Telegram.
MAX_UPDATE_BYTES = 1024 * 1024
# Deeper than any update (a message inside a reply inside a callback query is about eight levels).
MAX_DEPTH = 32
# getUpdates long-poll length in seconds: short enough that `crm bot` stops promptly on Ctrl-C.
POLL_TIMEOUT = 10
# How often a polling runner checks its stop flag, in seconds.
STOP_CHECK = 0.2
# While Telegram is unreachable at start: the first wait between tries, doubling up to the last.
FIRST_RETRY_S = 2
MAX_RETRY_S = 60


# -- long polling ----------------------------------------------------------------------------------


def run_telegram(container: App, stop: threading.Event | None = None) -> None:
    """Poll Telegram until `stop` is set (or SIGINT/SIGTERM when run on the main thread).

    In webhook mode this returns at once: `crm web` receives the updates.
    """
    if webhook_mode(container):
        log.info("Telegram is in webhook mode (TELEGRAM_WEBHOOK_URL); `crm web` receives its updates")
        return
    asyncio.run(serve_polling(container, stop or threading.Event()))


async def serve_polling(container: App, stop: threading.Event) -> None:
    """Initialise (getMe), register the menu, poll and handle updates until `stop` is set."""
    application = build_application(container)
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    if not container.settings.telegram_chat_id:
        log.warning(
            "TELEGRAM_CHAT_ID is not set: proposals are not posted to Telegram (operators' commands still "
            "work); set it to your chat's id (README → Telegram, step 2)"
        )
    await asyncio.to_thread(telegram_state.forget_old_updates, container.engine)
    if not await _initialise(application, container, stop):
        return
    async with application:
        await application.bot.set_my_commands(menu_commands())
        updater = application.updater
        assert updater is not None
        await updater.start_polling(
            timeout=POLL_TIMEOUT, allowed_updates=Update.ALL_TYPES, drop_pending_updates=False
        )
        await application.start()
        log.info("Telegram: polling as @%s", application.bot.username)
        try:
            while not stop.is_set():
                await asyncio.sleep(STOP_CHECK)
        finally:
            await updater.stop()
            await application.stop()


async def _initialise(application: AnyApplication, container: App, stop: threading.Event) -> bool:
    """getMe until Telegram answers, one line per failed try with a growing wait; False if stopped first.

    A refused token is no outage: it raises SurfaceFailed naming TELEGRAM_BOT_TOKEN.
    """
    delay = FIRST_RETRY_S
    while not stop.is_set():
        try:
            await application.initialize()
            return True
        except InvalidToken:
            raise SurfaceFailed(
                "Telegram refused TELEGRAM_BOT_TOKEN: copy the token @BotFather gave you (123456:ABC-…)"
            ) from None
        except NetworkError as exc:  # TimedOut too: the network or Telegram is down, wait it out
            log.warning(
                "Telegram is unreachable at %s (%s); trying again in %d s",
                container.settings.telegram_api_url,
                exc.message,
                delay,
            )
        deadline = asyncio.get_running_loop().time() + delay
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(STOP_CHECK)
        delay = min(delay * 2, MAX_RETRY_S)
    return False


# -- webhook ---------------------------------------------------------------------------------------


def telegram_router(container: App) -> APIRouter:
    """`POST /telegram/webhook`, and a lifespan that starts the bot, sets the webhook and the menu."""
    settings = container.settings
    if settings.telegram_webhook_secret is None:
        raise TelegramNotConfigured(
            "TELEGRAM_WEBHOOK_URL is set but TELEGRAM_WEBHOOK_SECRET is not: set it to 1-256 characters "
            "of A-Z, a-z, 0-9, _ and -; Telegram sends it back with every update"
        )
    secret = settings.telegram_webhook_secret.get_secret_value()
    application = container.telegram_webhook_application
    router = APIRouter(lifespan=_lifespan(application, container, secret))
    router.add_api_route(
        WEBHOOK_PATH,
        _webhook_endpoint(application, secret),
        methods=["POST"],
        summary="Telegram updates (webhook mode)",
        include_in_schema=False,
    )
    return router


def _lifespan(application: AnyApplication, container: App, secret: str) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(telegram_state.forget_old_updates, container.engine)
        await application.initialize()
        await application.start()
        await application.bot.set_webhook(
            url=str(container.settings.telegram_webhook_url),
            secret_token=secret,
            allowed_updates=Update.ALL_TYPES,
        )
        await application.bot.set_my_commands(menu_commands())
        log.info("Telegram: webhook set for @%s", application.bot.username)
        try:
            yield
        finally:
            await application.stop()
            await application.shutdown()

    return lifespan


def _update(data: Any, application: AnyApplication) -> Update | None:
    """The Update a parsed webhook body holds, or None when it is not one."""
    if not isinstance(data, dict) or type(data.get("update_id")) is not int or deeper_than(data, MAX_DEPTH):
        return None
    try:
        return Update.de_json(data, application.bot)
    except Exception:
        # PTB builds each field's object from whatever the JSON holds and raises whatever that
        # meets (TypeError, KeyError, OverflowError for a date…): all of it means "not an update".
        log.info("telegram webhook: a body with the right secret is not an update", exc_info=True)
        return None


def _webhook_endpoint(application: AnyApplication, secret: str) -> Any:
    expected = secret.encode()

    async def telegram_webhook(request: Request) -> Response:
        """Check the secret token first, then queue the update and answer 200 at once."""
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return Response("Request did not include the secret token", status_code=403)
        if not hmac.compare_digest(given.encode(), expected):
            return Response("Request had the wrong secret token", status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return Response("Content-Type must be application/json", status_code=403)
        try:
            body = await read_body(request, MAX_UPDATE_BYTES)
            data = load_json(body)
        except InboundRefused as exc:
            return Response(exc.message, status_code=exc.status)
        update = _update(data, application)
        if update is None:
            return Response("Not a Telegram update", status_code=400)
        await application.update_queue.put(update)
        return Response(status_code=200)

    return telegram_webhook
