"""Reconciling the classifier's and the model's intents (the documented rule in agents/roles/triage.py)."""

from __future__ import annotations

import pytest

from agents.intents import Classification
from agents.roles.triage import TriageOut, reconcile

RULES = Classification("auto_reply", 0.99, ("Auto-Submitted: auto-replied",), method="rules")
SURE = Classification("complaint", 0.95, method="classifier", escalation=0.7, version="v")
UNSURE = Classification("question", 0.55, method="classifier", version="v")


@pytest.mark.parametrize(
    ("learned", "answer", "intent", "method", "confidence"),
    [
        (RULES, TriageOut(intent="question", confidence=0.99), "auto_reply", "rules", 0.99),
        (SURE, None, "complaint", "classifier", 0.95),
        (SURE, TriageOut(intent="complaint", confidence=0.8), "complaint", "model", 0.8),
        (SURE, TriageOut(intent="question", confidence=0.7), "complaint", "classifier", 0.95),
        (SURE, TriageOut(intent="cancellation_risk", confidence=0.97), "cancellation_risk", "model", 0.97),
        (UNSURE, TriageOut(intent="billing_question", confidence=0.6), "billing_question", "model", 0.6),
    ],
    ids=["rules-win", "no-model", "agree", "sure-classifier-holds", "surer-model-wins", "unsure-classifier"],
)
def test_the_reconciled_intent_follows_the_documented_rule(
    learned: Classification, answer: TriageOut | None, intent: str, method: str, confidence: float
) -> None:
    found = reconcile(learned, answer)
    assert (found.intent, found.method, found.confidence) == (intent, method, confidence)
    assert found.escalation == learned.escalation  # the learned signals are kept whoever names the intent
