"""The Telegram `Surface` (jobs.notify): posts and edits proposal messages, replies in customers' chats.

Workers call surfaces synchronously from their threads, and python-telegram-bot is async, so the surface
owns a small event loop on a daemon thread with its own bot, and waits for each call's result. It works
in any process (worker, web, `crm bot`) without the polling Application running there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter, ExtBot

from bot.telegram.render import PARSE_MODE, Message, escape, lines_html, proposal_message
from jobs.notify import MessageRef, SurfaceError
from jobs.views import ProposalView

if TYPE_CHECKING:
    from store.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A 429 answer (flood control) is waited out and retried this many times; after that the caller hears
# about it (the notify fan-out logs it, the executor retries its job).
RETRY_AFTER_RETRIES = 3
# Longest single wait for a 429 we accept inline; Telegram can ask for minutes after a burst, and a
# worker thread must not hang that long.
MAX_RETRY_WAIT = 30.0
# Longest a worker waits for one surface call, waits for 429s included.
CALL_TIMEOUT = 90.0
SURFACE_KEY = "telegram_surface"
# A photo caption holds at most 1,024 characters (Bot API sendPhoto).
MAX_CAPTION = 1024
# Edits that cannot happen and never will: the message is gone or too old to edit.
GONE = ("message to edit not found", "message can't be edited", "message_id_invalid", "chat not found")
NOT_MODIFIED = "message is not modified"


def retry_seconds(exc: RetryAfter) -> float:
    """RetryAfter's wait in seconds (an int or a timedelta depending on PTB settings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 warns that retry_after will become a timedelta
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class RetryAfterLimiter(BaseRateLimiter[None]):
    """Reacts only when needed: on 429 waits `retry_after` and calls again (PTB's approach 1)."""

    def __init__(self, retries: int = RETRY_AFTER_RETRIES, max_wait: float = MAX_RETRY_WAIT) -> None:
        self.retries = retries
        self.max_wait = max_wait

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Call; on RetryAfter wait as told (capped) and call again, `retries` times at most."""
        attempt = 0
        while True:
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                attempt += 1
                wait = retry_seconds(exc)
                if attempt > self.retries or wait > self.max_wait:
                    raise
                log.warning("telegram %s: 429, retrying in %.1fs (attempt %d)", endpoint, wait, attempt)
                await asyncio.sleep(wait)


def make_bot(settings: Settings) -> ExtBot[None]:
    """A bot for TELEGRAM_API_URL with the token, honouring 429s; not initialised (no call made)."""
    if settings.telegram_bot_token is None:
        raise SurfaceError("TELEGRAM_BOT_TOKEN is not set")
    return ExtBot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=settings.telegram_api_url,
        base_file_url=file_url(settings.telegram_api_url),
        rate_limiter=RetryAfterLimiter(),
    )


def file_url(api_url: str) -> str:
    """The file download URL next to an API URL (`…/bot` → `…/file/bot`)."""
    root, _, last = api_url.rstrip("/").rpartition("/")
    return f"{root}/file/{last}" if root else f"{api_url}/file"


class _Loop:
    """An event loop on a daemon thread; `run` waits for a coroutine's result from any other thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="telegram-surface", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a surface call from its own loop would wait for itself")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class TelegramSurface:
    """Proposal messages in TELEGRAM_CHAT_ID; replies to customers in their private chats."""

    name = "telegram"

    def __init__(self, settings: Settings, bot_factory: Callable[[], Bot] | None = None) -> None:
        self.chat_id = settings.telegram_chat_id
        self._factory = bot_factory or (lambda: make_bot(settings))
        self._loop: _Loop | None = None
        self._bot: Bot | None = None
        self._lock = threading.Lock()

    def _call(self, make: Callable[[Bot], Coroutine[Any, Any, T]]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = _Loop()
            loop = self._loop
        return loop.run(self._with_bot(make))

    async def _with_bot(self, make: Callable[[Bot], Coroutine[Any, Any, T]]) -> T:
        if self._bot is None:
            bot = self._factory()
            await bot.initialize()
            self._bot = bot
        return await make(self._bot)

    def _send(self, chat_id: str, message: Message) -> int:
        sent = self._call(lambda bot: bot.send_message(chat_id=chat_id, **message.send_kwargs()))
        return int(sent.message_id)

    def post_proposal(self, view: ProposalView) -> MessageRef | None:
        """Post the proposal with its keyboard in TELEGRAM_CHAT_ID (None when no chat is configured)."""
        if not self.chat_id:
            return None
        try:
            message_id = self._send(self.chat_id, proposal_message(view))
        except TelegramError as exc:
            raise SurfaceError(f"Telegram sendMessage failed: {exc}") from exc
        return MessageRef(self.name, str(self.chat_id), str(message_id))

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        """Edit the posted message in place; a message that is gone gets a fresh copy instead."""
        message = proposal_message(view)
        try:
            self._call(
                lambda bot: bot.edit_message_text(
                    chat_id=ref.chat_id, message_id=int(ref.message_id), **message.send_kwargs()
                )
            )
        except BadRequest as exc:
            text = str(exc).lower()
            if NOT_MODIFIED in text:
                return  # a second refresh with the same content: already showing it
            if any(reason in text for reason in GONE):
                log.warning(
                    "proposal %s: message %s gone (%s); posting it anew", view.id, ref.message_id, exc
                )
                self._repost(ref, message)
                return
            raise SurfaceError(f"Telegram editMessageText failed: {exc}") from exc
        except TelegramError as exc:
            raise SurfaceError(f"Telegram editMessageText failed: {exc}") from exc

    def _repost(self, ref: MessageRef, message: Message) -> None:
        try:
            self._send(ref.chat_id, message)
        except TelegramError as exc:
            log.warning("reposting to chat %s failed too: %s", ref.chat_id, exc)

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        """Send `text` as plain text to a customer's chat; returns the message id.

        The Bot API has no idempotency key for sendMessage; the executor guarantees at most one call.
        """
        try:
            sent = self._call(lambda bot: bot.send_message(chat_id=chat_id, text=text))
        except Forbidden as exc:  # the customer blocked the bot: permanent, say so plainly
            raise SurfaceError(f"Telegram chat {chat_id} refuses messages from the bot: {exc}") from exc
        except TelegramError as exc:
            raise SurfaceError(f"Telegram sendMessage to {chat_id} failed: {exc}") from exc
        log.info("telegram reply %s sent to %s as %s", idempotency_key, chat_id, sent.message_id)
        return str(sent.message_id)

    def post_notice(self, lines: list[str]) -> None:
        """A plain message in TELEGRAM_CHAT_ID."""
        chat_id = self.chat_id
        if not chat_id:
            return
        try:
            self._call(
                lambda bot: bot.send_message(chat_id=chat_id, text=lines_html(lines), parse_mode=PARSE_MODE)
            )
        except TelegramError as exc:
            raise SurfaceError(f"Telegram notice failed: {exc}") from exc

    def post_image(self, path: Path, caption: str) -> None:
        """A picture (the digest chart) in TELEGRAM_CHAT_ID, uploaded as multipart."""
        chat_id = self.chat_id
        if not chat_id:
            return
        data = path.read_bytes()
        try:
            self._call(
                lambda bot: bot.send_photo(
                    chat_id=chat_id, photo=data, caption=escape(caption[:MAX_CAPTION]), parse_mode=PARSE_MODE
                )
            )
        except TelegramError as exc:
            raise SurfaceError(f"Telegram sendPhoto failed: {exc}") from exc

    def close(self) -> None:
        """Stop the loop thread (the bot's HTTP client goes with it)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            if self._bot is not None:
                try:
                    loop.run(self._bot.shutdown(), timeout=5)
                except Exception:  # closing is best effort
                    log.debug("telegram bot shutdown failed", exc_info=True)
            loop.close()
            self._bot = None
