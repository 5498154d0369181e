"""Append the `message.classified` event for a triage run (the audit record "Why?" shows)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from agents.classified import classification_in
from agents.classifier.corrections import examples_from_events
from agents.classifier.model import learn_from
from agents.policy import Reviewed
from store import events as ev
from store import tables as t
from store.log import to_event


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


# The last `intent.corrected` position each store's corrections were learnt up to, in this process.
_learned_up_to: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_learned_lock = threading.Lock()


def learn_corrections(store: Any) -> int:
    """Teach this process's classifier the operator's corrections it has not seen yet (from any
    process: the log is read by type and position, an indexed query); returns how many were learnt."""
    e = t.events.c
    with _learned_lock:
        after = _learned_up_to.get(store, 0)
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(t.events).where(e.type == "intent.corrected", e.position > after).order_by(e.position)
            ).all()
        if rows:
            _learned_up_to[store] = int(rows[-1]._mapping["position"])
    examples = examples_from_events(to_event(row._mapping) for row in rows)
    if examples:
        learn_from(examples)
    return len(examples)


def learn_correction(event: ev.Event, ctx: Any) -> None:
    """Handler of `intent.corrected`: the classifier of this process uses the new example at once."""
    learn_from(examples_from_events([event]))
