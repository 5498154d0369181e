"""Small I/O helpers of the Telegram handlers: send, edit the tapped message, answer a tap, look up copies.

Each one swallows what Telegram may legitimately refuse (a message gone or unchanged, a tap too old to
answer) and logs it, so one refused call never breaks a decision that has already been recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import BadRequest, TelegramError

from bot.telegram import render

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)


def notifier(container: App) -> Any:
    return container.notifier


async def send(update: Update, message: render.Message) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    try:
        await update.get_bot().send_message(chat_id=chat.id, **message.send_kwargs())
    except TelegramError as exc:
        log.warning("telegram send to %s failed: %s", chat.id, exc)


async def send_photo(update: Update, path: Path, caption: str) -> None:
    """A picture (the digest chart) in the chat the update came from."""
    chat = update.effective_chat
    if chat is None:
        return
    try:
        await update.get_bot().send_photo(
            chat_id=chat.id, photo=path.read_bytes(), caption=render.escape(caption)
        )
    except (TelegramError, OSError) as exc:
        log.warning("telegram photo to %s failed: %s", chat.id, exc)


async def edit_tapped(update: Update, message: render.Message) -> None:
    """Edit the message whose button was tapped; gone or unchanged messages are fine."""
    query = update.callback_query
    if query is None:
        return
    try:
        await query.edit_message_text(**message.send_kwargs())
    except BadRequest as exc:
        log.info("editing the tapped message was not possible: %s", exc)


async def answer(update: Update, text: str) -> None:
    query = update.callback_query
    if query is None:
        return
    try:
        await query.answer(text or None)
    except TelegramError as exc:  # too old (the user waited > 15 min): nothing to tell any more
        log.info("answerCallbackQuery failed: %s", exc)
