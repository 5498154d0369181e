"""Escalation rules, table-driven: each case names the rules that must fire (and nothing else)."""

from __future__ import annotations

import pytest

from agents.escalation import RULES, Situation, fired, reason

MSG = "message.received"
CASES: list[tuple[str, Situation, set[str]]] = [
    (
        "solicitor",
        Situation(MSG, "Our solicitors will write to you about the losses.", "complaint"),
        {"legal_threat"},
    ),
    (
        "chargeback",
        Situation(MSG, "I will file a chargeback with my bank.", "billing_question"),
        {"legal_threat"},
    ),
    ("anwalt", Situation(MSG, "Unser Anwalt meldet sich bei Ihnen.", "complaint"), {"legal_threat"}),
    (
        "leak",
        Situation(MSG, "Your export contained another company's data.", "complaint"),
        {"security_incident"},
    ),
    ("fuite", Situation(MSG, "C'est une fuite de données grave.", "complaint"), {"security_incident"}),
    ("wyciek", Situation(MSG, "To wyciek danych!", "complaint"), {"security_incident"}),
    (
        "new-iban-refund",
        Situation(
            MSG, "Please send the refund to our new IBAN DE89 3704 0044 0532 0130 00.", "billing_question"
        ),
        {"suspected_fraud"},
    ),
    (
        "angry",
        Situation(MSG, "Get someone on the phone now.", "complaint", learned_escalation=0.8),
        {"angry_or_serious"},
    ),
    ("calm", Situation(MSG, "The report is a bit slow.", "complaint", learned_escalation=0.1), set()),
    ("small-churn", Situation(MSG, "Please cancel at the end of the month.", "cancellation_risk"), set()),
    (
        "valuable-churn-mrr",
        Situation(MSG, "We are moving to a competitor.", "cancellation_risk", mrr_cents=250_000),
        {"valuable_churn"},
    ),
    (
        "valuable-churn-seats",
        Situation(MSG, "We won't renew our 40 licences.", "cancellation_risk"),
        {"valuable_churn"},
    ),
    ("hot-lead", Situation("lead.created", "Ready to buy 50 seats this week, lawyer approved."), set()),
    ("spam-legal-words", Situation(MSG, "Lawyer-approved SEO services!", "spam"), set()),
    (
        "large-long",
        Situation("invoice.overdue", overdue_cents=1_200_000, days_overdue=90),
        {"large_long_overdue"},
    ),
    ("large-recent", Situation("invoice.overdue", overdue_cents=1_200_000, days_overdue=10), set()),
    ("small-long", Situation("invoice.overdue", overdue_cents=20_000, days_overdue=120), set()),
    ("disputed", Situation("invoice.overdue", invoice_state="disputed"), {"disputed_invoice"}),
    ("insolvent", Situation("invoice.overdue", invoice_state="insolvent"), {"insolvency"}),
    ("in-transit", Situation("invoice.overdue", invoice_state="in_transit"), set()),
    (
        "renewal-at-risk-valuable",
        Situation("subscription.renewal_due", renewal_at_risk=True, yearly_cents=3_600_000),
        {"valuable_renewal_at_risk"},
    ),
    (
        "renewal-at-risk-small",
        Situation("subscription.renewal_due", renewal_at_risk=True, yearly_cents=30_000),
        set(),
    ),
]


@pytest.mark.parametrize(("case", "situation", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_situation_fires_exactly_the_rules_it_should(
    case: str, situation: Situation, expected: set
) -> None:
    assert {rule.name for rule in fired(situation)} == expected


def test_every_rule_is_exercised_and_explains_itself() -> None:
    exercised = {name for _, _, expected in CASES for name in expected}
    assert exercised == {rule.name for rule in RULES}
    rules = fired(
        Situation("invoice.overdue", overdue_cents=900_000, days_overdue=70, invoice_state="disputed")
    )
    assert reason(rules).startswith("disputed_invoice: the invoice is disputed; large_long_overdue:")
