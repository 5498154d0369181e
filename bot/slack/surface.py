"""The Slack `Surface` (jobs.notify): posts and edits proposal messages, replies in customer channels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.slack.render import escape, fallback, proposal_message
from jobs.notify import MessageRef, SurfaceError
from jobs.views import ProposalView

if TYPE_CHECKING:
    from store.settings import Settings

log = logging.getLogger(__name__)

# Slack answers 429 with Retry-After when a method's tier limit is hit (chat.postMessage: about one
# message per second per channel). Waiting and retrying twice rides out a burst; beyond that the
# caller hears about it (the notify fan-out logs it, the executor retries the job).
RATE_LIMIT_RETRIES = 2
# Per-call HTTP timeout in seconds: a hung Slack call must not hold a worker thread for long.
CALL_TIMEOUT = 15


def make_web_client(settings: Settings) -> WebClient:
    """A WebClient for SLACK_API_URL with the bot token, retrying 429s after Retry-After."""
    if settings.slack_bot_token is None:
        raise SurfaceError("SLACK_BOT_TOKEN is not set")
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=CALL_TIMEOUT,
        retry_handlers=[
            ConnectionErrorRetryHandler(),
            RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


class SlackSurface:
    """Proposal messages in SLACK_CHANNEL; replies to customers in their linked channels."""

    name = "slack"

    def __init__(self, client: WebClient, channel: str | None) -> None:
        self.client = client
        self.channel = channel

    def post_proposal(self, view: ProposalView) -> MessageRef | None:
        """Post the proposal with its buttons in SLACK_CHANNEL (None when no channel is configured)."""
        if not self.channel:
            return None
        response = self._call("chat_postMessage", channel=self.channel, **proposal_message(view))
        return MessageRef(self.name, str(response["channel"]), str(response["ts"]))

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        """Edit the posted message in place (chat.update); a final view has no buttons."""
        self._call("chat_update", channel=ref.chat_id, ts=ref.message_id, **proposal_message(view))

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        """Post `text` in a customer's channel; returns the message `ts`.

        Slack has no idempotency key for chat.postMessage; the key travels as message metadata so a
        message can be traced back to its action (the executor guarantees at most one call).
        """
        response = self._call(
            "chat_postMessage",
            channel=chat_id,
            text=escape(text),
            metadata={"event_type": "crm_reply", "event_payload": {"idempotency_key": idempotency_key}},
        )
        return str(response["ts"])

    def post_notice(self, lines: list[str]) -> None:
        """A plain message in SLACK_CHANNEL."""
        if self.channel:
            self._call("chat_postMessage", channel=self.channel, text=escape(fallback(lines)))

    def post_image(self, path: Path, caption: str) -> None:
        """Upload a chart (the digest's) into SLACK_CHANNEL: files.getUploadURLExternal, upload, complete."""
        if self.channel:
            self._call(
                "files_upload_v2", channel=self.channel, file=str(path), title=caption, filename=path.name
            )

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            raise SurfaceError(f"Slack {method} failed: {exc.response.get('error', exc)}") from exc
