"""The Telegram surface: one python-telegram-bot Application, polled or fed by `POST /telegram/webhook`.

Handlers only translate a Telegram update into a command-layer call and render the reply in HTML
(DESIGN.md invariant 8). Nothing here connects at import time: everything is built from settings.
"""

from __future__ import annotations

from bot.telegram.app import TelegramNotConfigured, build_application, webhook_mode
from bot.telegram.serve import SECRET_HEADER, WEBHOOK_PATH, run_telegram, telegram_router
from bot.telegram.surface import TelegramSurface

__all__ = [
    "SECRET_HEADER",
    "WEBHOOK_PATH",
    "TelegramNotConfigured",
    "TelegramSurface",
    "build_application",
    "run_telegram",
    "telegram_router",
    "webhook_mode",
]
