"""The `message.classified` record of one triage run: built by the triage role, carried on its proposals.

Roles return proposals only, so the triage attaches its reading of the message (intent, confidence,
language, injection flag, escalation rules, method, model version) to every proposal as a source;
the job that records proposals turns it into a `message.classified` event (jobs/classified.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.intents import Classification
from agents.policy import Reviewed
from agents.proposal import Proposal, Source
from store.events import MessageClassified

SOURCE_ID = "message.classified"


def record(
    found: Classification,
    *,
    event_id: str,
    language: str | None,
    injected: bool,
    escalation_rules: Iterable[str] = (),
) -> MessageClassified:
    """The payload for one classified message."""
    return MessageClassified(
        message_event_id=event_id,
        intent=found.intent,
        confidence=round(float(found.confidence), 3),
        language=language,
        injection=injected,
        escalation_rules=list(escalation_rules),
        method=found.method,
        model_version=found.version,
    )


def as_source(payload: MessageClassified) -> Source:
    """The record as a proposal source (its JSON in the note)."""
    return Source(kind="rule", id=SOURCE_ID, note=payload.model_dump_json())


def classification_in(items: Iterable[Reviewed | Proposal]) -> MessageClassified | None:
    """The classification carried by a triage run's proposals, if any."""
    for item in items:
        proposal = item.proposal if isinstance(item, Reviewed) else item
        for source in proposal.sources:
            if source.kind == "rule" and source.id == SOURCE_ID and source.note:
                return MessageClassified.model_validate_json(source.note)
    return None
