"""The Bolt app, built from settings in a factory (never at import time), with its middleware."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_bolt import App as BoltApp
from slack_bolt import BoltResponse

from bot.inbound import slack_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from slack_bolt.request import BoltRequest

    from bot.bootstrap import App

log = logging.getLogger(__name__)


class SlackNotConfigured(RuntimeError):
    """SLACK_BOT_TOKEN (and a signing secret or app token) is missing; the message says which."""


def build_slack_app(container: App, *, verify_token: bool = False) -> BoltApp:
    """The Bolt app for this process (the App builds it once: `app.slack_bolt`), listeners registered.

    With verify_token, `auth.test` is called now (fail fast at `crm bot`); otherwise on the first
    request, so the web app starts even while Slack is unreachable.
    """
    from bot.slack.listeners import register

    settings = container.settings
    if settings.slack_bot_token is None:
        raise SlackNotConfigured("SLACK_BOT_TOKEN is not set")
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = BoltApp(
        client=container.slack_client,
        # Without a secret only Socket Mode can reach the app; the HTTP route refuses requests then, and the
        # verification middleware stays on with an unguessable secret so nothing unsigned gets through.
        signing_secret=secret or _unusable_secret(),
        token_verification_enabled=verify_token,
        request_verification_enabled=True,
        # Listeners ack inside the request and hand their work to lazy listeners (bot.slack.listeners):
        # the 200 never waits for a thread of the pool that does the work.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        logger=_bolt_logger(),
    )
    app.middleware(_skip_retried_events(container))
    register(app, container)
    return app


# Lines Bolt and its Socket Mode client log that say nothing to the operator: the first because we
# pass the client built from SLACK_BOT_TOKEN (Bolt reads the variable too), the second because a refused
# app token is reported once, by `start_slack`, with the fix.
_UNHELPFUL = ("As you gave `client` as well", "Failed to retrieve WSS URL")


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("bot.slack.bolt")
    if not any(isinstance(f, _DropUnhelpful) for f in logger.filters):
        logger.addFilter(_DropUnhelpful())
    return logger


class _DropUnhelpful(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_UNHELPFUL)


def _unusable_secret() -> str:
    import secrets

    return secrets.token_hex(32)


def _skip_retried_events(container: App) -> Callable[..., BoltResponse]:
    """Middleware: an Events API delivery whose event_id was handled already gets 200 and no listener.

    Slack redelivers (same event_id, X-Slack-Retry-Num) when its 3 s passed without a 200, even while
    the first delivery is still being handled; Bolt runs the listener again unless told otherwise.
    """

    def skip_retried_events(req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> Any:
        event_id = req.body.get("event_id") if isinstance(req.body, dict) else None
        is_event = req.body.get("type") == "event_callback" and event_id
        if is_event and slack_state.already_seen(container.engine, str(event_id)):
            log.info("slack event %s already handled; retry ignored", event_id)
            return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})
        return next()

    return skip_retried_events
