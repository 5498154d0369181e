"""Reasons and edits reach the agents: after the operator rejects a draft with a reason, the next draft
for that customer and kind is written knowing it (the model is told; a template draft says it heeds
it), and an edit's greeting and sign-off shape the next template draft."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobs.handlers import HANDLERS, INBOX_TRIAGE
from jobs.propose import propose_for
from store import events as ev
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import OPERATOR, RecordingSurface, row, settings_for
from tests.standins.openai_server import OpenAIStandIn, Reply

REASON = "too pushy, and never mention pricing"


def _daytime_zone() -> str:
    """A fixed-offset zone where it is midday now, so quiet hours never hold the test's emails."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _message(store: EventStore, n: int, text: str, email: str = "ada@acme.test") -> ev.Event:
    signal = ev.MessageReceived(
        customer=ev.CustomerRef(name="Ada Lovelace", email=email),
        text=text,
        data={"subject": "Question", "message_id": f"<m{n}@acme.test>"},
    )
    return store.record_signal("message.received", signal, f"mail:{n}:{email}", source="email").event


def _drafts(surface: RecordingSurface) -> list[Any]:
    return [view for view in surface.posted if view.kind == "send_email"]


@pytest.fixture
def model() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn() as server:
        yield server


def test_a_rejection_reason_is_heeded_by_the_next_template_draft(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CRM_TIMEZONE=_daytime_zone())
    surface = RecordingSurface()
    app = app_for(store, settings, handlers=dict(HANDLERS))
    app.notifier.add(surface)
    propose_for(app, INBOX_TRIAGE, _message(store, 1, "How do I export my invoices?"))
    [first] = _drafts(surface)
    assert REASON not in row(store, first.id)["proposed"]["rationale"]
    rejected = app.commands.run(OPERATOR, f"reject {first.number} {REASON}")
    assert rejected.ok, rejected.text

    propose_for(app, INBOX_TRIAGE, _message(store, 2, "And can I change my billing email?"))
    latest = _drafts(surface)[-1]
    assert latest.id != first.id
    assert f"heeds the operator's last rejection: {REASON}" in row(store, latest.id)["proposed"]["rationale"]
    assert any(REASON in line for line in latest.body), "the card says so"

    # another customer's drafts do not carry Ada's reason
    propose_for(app, INBOX_TRIAGE, _message(store, 3, "How do I export my invoices?", "bo@other.test"))
    other = _drafts(surface)[-1]
    assert other.customer_id != latest.customer_id
    assert REASON not in row(store, other.id)["proposed"]["rationale"]


def test_the_model_is_told_the_reason_when_it_drafts_next(
    store: EventStore, tmp_path: Path, model: OpenAIStandIn
) -> None:
    settings = settings_for(
        tmp_path, CRM_TIMEZONE=_daytime_zone(), OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=model.base_url
    )
    model.default = Reply(content="not json")  # classification falls back to the rules
    answer = {"subject": "Re: Question", "body": "Hi Ada,\n\nHere is how it works.\n\nBest"}
    model.on("DraftOut", Reply(content=answer), Reply(content=answer))
    surface = RecordingSurface()
    app = app_for(store, settings, handlers=dict(HANDLERS))
    app.notifier.add(surface)
    propose_for(app, INBOX_TRIAGE, _message(store, 1, "How do I export my invoices?"))
    [first] = _drafts(surface)
    assert app.commands.run(OPERATOR, f"reject {first.number} {REASON}").ok

    propose_for(app, INBOX_TRIAGE, _message(store, 2, "And can I change my billing email?"))
    drafts = [r for r in model.requests if "DraftOut" in json.dumps(r.get("response_format") or {})]
    assert len(drafts) == 2, [r.get("response_format") for r in model.requests]
    assert REASON not in json.dumps(drafts[0]["messages"])
    told = drafts[1]["messages"][-1]["content"]
    assert f"“{REASON}”" in told and "rejected earlier drafts" in told
    latest = _drafts(surface)[-1]
    assert row(store, latest.id)["proposed"]["draft"]["body"].startswith("Hi Ada,\n\nHere is how")
