"""Slack and Telegram at once on one store: the web app (Slack over HTTP) and Telegram long polling,
each against its stand-in, with a loopback SMTP server. Shared by the tests that use both surfaces."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bot.bootstrap import App, bootstrap
from bot.web import create_app
from jobs.handlers import Handler
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as h
from tests.standins.slack_api import SlackStandIn
from tests.standins.telegram_api import TelegramStandIn


@contextmanager
def both_surfaces(
    make_settings: Any, db_url: str, operators: str, handlers: Mapping[str, Handler] | None = None
) -> Iterator[dict[str, Any]]:
    """`{"api", "slack", "smtp", "container", "client"}` while both surfaces run."""
    api = TelegramStandIn(h.TOKEN).start()
    try:
        with SlackStandIn(bot_token=sh.BOT_TOKEN, app_token=sh.APP_TOKEN) as slack, h.smtp_server() as smtp:
            env = {
                **sh.slack_settings(slack.api_url, db_url),
                **h.telegram_env(api, db_url, smtp.port),
                "OPERATORS": operators,
            }
            container: App = bootstrap(make_settings(**env), handlers=handlers or {})
            try:
                with h.WebServer(create_app(container), h.free_port()) as server, h.polling(container):
                    api.wait_polling()
                    yield {
                        "api": api,
                        "slack": slack,
                        "smtp": smtp,
                        "container": container,
                        "client": sh.SlackClient(server.url, slack),
                    }
            finally:
                container.close()
    finally:
        api.stop()
