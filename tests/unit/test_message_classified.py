"""The `message.classified` event: declared in the store, carried by triage, appended once per message."""

from __future__ import annotations

from agents.classified import classification_in
from agents.classifier.model import MODEL_VERSION
from agents.context import build_context
from agents.runtime import AgentRuntime
from jobs.classified import append_classified
from store import events as ev
from store.uow import EventStore

DANA = ev.CustomerRef(name="Dana Reyes", email="dana@acme.example", company="Acme")


def test_the_payload_type_is_declared_next_to_the_other_events_and_validates() -> None:
    assert ev.payload_model("message.classified") is ev.MessageClassified
    payload = ev.MessageClassified(
        message_event_id="evt_1",
        intent="complaint",
        confidence=0.91,
        language="de",
        injection=False,
        escalation_rules=["legal_threat"],
        method="classifier",
        model_version="triage-v3",
    )
    assert ev.parse_payload("message.classified", 1, payload.model_dump(mode="json")) == payload


def test_triage_carries_its_reading_and_the_job_appends_it_once(store: EventStore) -> None:
    signal = ev.MessageReceived(
        customer=DANA,
        text="Unser Anwalt wird sich melden, der Export ist seit Tagen kaputt.",
        data={"subject": "Export"},
    )
    event = store.record_signal("message.received", signal, "test:msg:1", source="test").event
    with store.engine.connect() as connection:
        context = build_context(connection, event, event.stream)
    assert context is not None
    reviewed = AgentRuntime().propose(context)
    found = classification_in(reviewed)
    assert found is not None
    assert found.message_event_id == event.id and found.language == "de"
    assert found.method == "classifier" and found.model_version == MODEL_VERSION
    assert "legal_threat" in found.escalation_rules

    first = append_classified(store, event, reviewed)
    again = append_classified(store, event, reviewed)
    assert first is not None and first == again
    recorded = [e for e in store.read_all() if e.type == "message.classified"]
    assert len(recorded) == 1 and recorded[0].causation_id == event.id
    assert recorded[0].payload == found
