"""Append the `message.classified` event for a triage run (the audit record "Why?" shows)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents.classified import classification_in
from agents.policy import Reviewed
from store import events as ev


def append_classified(store: Any, event: ev.Event, reviewed: Iterable[Reviewed]) -> str | None:
    """Append how the message in `event` was classified, once per message; returns the event id.

    `store` is the EventStore; `reviewed` the runtime's answer for `event`. A repeat (redelivery,
    replayed handler) is a no-op through the idempotency key. None when no triage ran.
    """
    payload = classification_in(reviewed)
    if payload is None:
        return None
    appended = store.append(
        ev.NewEvent(
            type="message.classified",
            payload=payload,
            stream=event.stream,
            idempotency_key=f"classified:{event.id}",
            actor="agent:inbox_triage",
            confidence=payload.confidence,
            correlation_id=event.correlation_id or event.id,
            causation_id=event.id,
        ),
        dispatch=False,
    )
    return str(appended.event.id)
