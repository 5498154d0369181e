"""Inbox triage on labelled messages with no model: intents, proposals, and nothing forbidden."""

from __future__ import annotations

from typing import Any

import pytest

from agents.intents import classify
from agents.model import AgentModel
from agents.policy import load_policy
from agents.proposal import MONEY_KINDS, OUTBOUND_KINDS
from agents.roles.triage import InboxTriage
from tests.fixtures.agents import context_for, load

EXAMPLES = load("triage")
# The trained classifier on tests/fixtures/agents/triage.yaml (written beside the old cue rules, never
# trained on): 52/62 = 0.839 (triage-v3; triage-v2: 53/62). Several misses are labels the taxonomy now
# reads otherwise (an angry billing message is a billing question). The honest figure is the corpus dev split
# (tests/unit/test_corpus_scorecard.py); this guards against regressions on these examples.
MEASURED_ACCURACY = 0.839
MARGIN = 0.05
NO_MODEL = AgentModel(None, "inbox_triage", 1.0, context_for(EXAMPLES[0], "message.received").now.date())


def _kinds(example: dict[str, Any]) -> list[str]:
    context = context_for(example, "message.received")
    return [p.kind for p in InboxTriage().propose(context, NO_MODEL)]


def test_no_model_triage_accuracy_stays_near_what_was_measured() -> None:
    hits = [classify(e.get("text"), e.get("subject"), e.get("data")).intent == e["intent"] for e in EXAMPLES]
    accuracy = sum(hits) / len(hits)
    print(f"\nno-model triage accuracy: {sum(hits)}/{len(hits)} = {accuracy:.3f}")
    assert len(EXAMPLES) >= 60
    assert accuracy >= MEASURED_ACCURACY - MARGIN


def test_examples_cover_languages_auto_replies_spam_and_injection() -> None:
    intents = {e["intent"] for e in EXAMPLES}
    assert intents == {
        "question",
        "complaint",
        "cancellation_risk",
        "buying_signal",
        "billing_question",
        "auto_reply",
        "spam",
    }
    assert sum(1 for e in EXAMPLES if e.get("injection")) >= 4
    texts = " ".join(str(e.get("text")) for e in EXAMPLES)
    for word in ("Rechnung", "factura", "facture", "😡"):
        assert word in texts


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_triage_proposes_what_the_label_expects_and_nothing_forbidden(example: dict[str, Any]) -> None:
    kinds = _kinds(example)
    for kind in example.get("forbid", []):
        assert kind not in kinds, f"{example['id']}: {kind} must not be proposed"
    assert not set(kinds) & MONEY_KINDS, "triage never proposes money on its own"
    if example["intent"] in ("auto_reply", "spam"):
        assert not set(kinds) & OUTBOUND_KINDS
    if example.get("injection"):
        assert set(kinds) <= {"send_email", "send_chat_reply", "escalate", "add_note", "create_task"}
    rules = classify(example.get("text"), example.get("subject"), example.get("data"))
    if rules.intent == example["intent"]:  # a misclassification is counted by the accuracy test instead
        # Escalation is its own decision now (agents/escalation.py, tested by its table and the corpus):
        # a plain complaint or cancellation from a small account is not one.
        for kind in set(example.get("expect", [])) - {"escalate"}:
            assert kind in kinds, f"{example['id']}: expected {kind}, got {kinds}"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.get("injection")], ids=lambda e: e["id"])
def test_injection_attempts_never_run_without_a_person(
    example: dict[str, Any],
) -> None:
    context = context_for(example, "message.received")
    policy = load_policy()
    proposals = InboxTriage().propose(context, NO_MODEL)
    verdicts = {p.kind: policy.review(p, context).decision for p in proposals}
    assert set(verdicts.values()) <= {"approval", "deferred"}, verdicts
    # A bare instruction to the agent may be filed as spam (no reply); a reply is the template only.
    reply = next((p for p in proposals if p.kind in OUTBOUND_KINDS), None)
    if reply is not None:
        assert reply.drafted_from_template
        assert "refund" not in reply.draft.body.lower() if reply.draft else True


def test_reply_threads_to_the_inbound_email_and_uses_the_customer_address() -> None:
    example = {
        "id": "thread",
        "subject": "Exporting",
        "text": "How do I export?",
        "data": {"message_id": "<m1@acme.example>", "references": ["<m0@acme.example>"]},
    }
    context = context_for(example, "message.received")
    reply = next(p for p in InboxTriage().propose(context, NO_MODEL) if p.kind == "send_email")
    assert reply.params["to"] == "dana@acme.example"
    assert reply.params["subject"] == "Re: Exporting"
    assert reply.params["in_reply_to"] == "<m1@acme.example>"
    assert reply.params["references"] == ["<m0@acme.example>", "<m1@acme.example>"]
    assert reply.draft is not None and reply.draft.body.startswith("Hi Dana,")
    assert reply.drafted_from_template and reply.cost.model is None
    assert "drafted from template (no model configured)" in reply.rationale


def test_template_reply_takes_the_operators_greeting_and_sign_off_from_their_last_edit() -> None:
    example = {
        "id": "style",
        "text": "Can I add a second admin?",
        "corrections": [
            {
                "kind": "send_email",
                "days_ago": 2,
                "original": {"subject": "Re: x", "body": "Hi Lee,\n\nThanks.\n\nBest regards"},
                "edited": {"subject": "Re: x", "body": "Hey Lee!\n\nThanks, sorted.\n\nCheers,\nSam"},
            },
        ],
    }
    context = context_for(example, "message.received")
    reply = next(p for p in InboxTriage().propose(context, NO_MODEL) if p.kind == "send_email")
    assert reply.draft is not None
    assert reply.draft.body.startswith("Hey Dana!")
    assert reply.draft.body.endswith("Cheers,\nSam")


def test_no_email_on_file_turns_the_reply_into_a_task() -> None:
    example = {
        "id": "noemail",
        "text": "How do I export?",
        "customer": {"contacts": []},
        "ref": {"name": "Dana"},
    }
    kinds = [p.kind for p in InboxTriage().propose(context_for(example, "message.received"), NO_MODEL)]
    assert "send_email" not in kinds
    assert kinds.count("create_task") == 2


def test_a_subject_with_line_breaks_is_replied_to_on_one_line() -> None:
    example = {
        "id": "crlf",
        "subject": "Exporting\r\nBcc: thief@evil.test",
        "text": "How do I export contacts?",
    }
    context = context_for(example, "message.received")
    replies = [p for p in InboxTriage().propose(context, NO_MODEL) if p.kind == "send_email"]
    assert replies and all(
        p.draft and p.draft.subject == "Re: Exporting Bcc: thief@evil.test" for p in replies
    )


def test_an_unsure_classification_says_so_and_nothing_runs_without_a_tap() -> None:
    # The vaguest of a few lines the classifier cannot place (calibrated confidence below UNSURE_BELOW).
    vague = [
        "Re: the thing from yesterday",
        "Following up on this",
        "Per our call, attached.",
        "Can we talk?",
    ]
    text = min(vague, key=lambda line: classify(line).confidence)
    assert classify(text).unsure, classify(text)
    example = {"id": "vague", "text": text, "customer": {"stage": "lead"}}
    context = context_for(example, "message.received")
    proposals = InboxTriage().propose(context, NO_MODEL)
    policy = load_policy()
    assert proposals and all(p.rationale.startswith("unsure:") for p in proposals)
    assert "change_stage" not in [p.kind for p in proposals]
    assert all(policy.review(p, context).decision in ("approval", "deferred") for p in proposals)
