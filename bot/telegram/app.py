"""The Telegram surface's python-telegram-bot Application, built in a factory (never at import time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telegram.ext import Application, ApplicationBuilder

from bot.telegram.handlers import register
from bot.telegram.surface import RetryAfterLimiter, file_url

if TYPE_CHECKING:
    from bot.bootstrap import App

AnyApplication = Application[Any, Any, Any, Any, Any, Any]


class TelegramNotConfigured(RuntimeError):
    """TELEGRAM_BOT_TOKEN (or, for webhook mode, TELEGRAM_WEBHOOK_SECRET) is missing."""


def build_application(container: App, *, webhook: bool = False) -> AnyApplication:
    """The Application for this process, its handlers registered.

    With webhook=True it has no Updater: updates arrive through `telegram_router`'s route.
    """
    settings = container.settings
    if settings.telegram_bot_token is None:
        raise TelegramNotConfigured("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_url)
        .base_file_url(file_url(settings.telegram_api_url))
        .rate_limiter(RetryAfterLimiter())
        # Handlers wait on the command layer in threads; let taps from several people overlap.
        .concurrent_updates(True)
    )
    if webhook:
        builder = builder.updater(None)
    application: AnyApplication = builder.build()
    register(application, container)
    return application


def webhook_mode(container: App) -> bool:
    """True when Telegram should deliver by webhook to the web app rather than be polled."""
    settings = container.settings
    return bool(settings.telegram_bot_token and settings.telegram_webhook_url)
