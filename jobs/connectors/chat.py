"""Chat reply to a customer through a registered surface (the Slack or Telegram chat they wrote in).

Chat apps cannot deduplicate a send, so, like SMTP, the connector calls `handover()` just before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.connectors.base import ActionRequest, ActionResult, Handover, OutcomeUnknown, PermanentError
from jobs.notify import SurfaceError


class ChatReplyConnector:
    """send_chat_reply via `Surface.send_reply`."""

    name = "chat"
    dedupes = False

    def __init__(self, surface_named: Callable[[str], Any]) -> None:
        self.surface_named = surface_named  # e.g. Notifier.surface

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        """Send the draft text to params["chat_id"] on params["surface"]."""
        name = str(request.params.get("surface") or "")
        chat_id = str(request.params.get("chat_id") or request.params.get("channel") or "")
        text = (request.draft or {}).get("body") or str(request.params.get("text") or "")
        surface = self.surface_named(name)
        if surface is None:
            raise PermanentError(f"no {name or 'chat'} surface is configured to reply through")
        if not chat_id or not text.strip():
            raise PermanentError("a chat reply needs a chat id and some text", retryable=False)
        handover()
        try:
            message_id = surface.send_reply(chat_id, text, idempotency_key=request.idempotency_key)
        except SurfaceError as exc:  # the chat app refused it outright: nothing was posted
            raise PermanentError(f"{name} refused the reply: {exc}") from None
        except Exception as exc:
            raise OutcomeUnknown(f"{name} send failed midway: {exc}") from None
        return ActionResult(reference=f"{name}:{chat_id}:{message_id}")
