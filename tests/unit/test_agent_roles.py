"""Lead qualification, renewal nudges, billing monitor and memory curator on labelled examples, no model."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from agents.model import AgentModel
from agents.proposal import MONEY_KINDS, OUTBOUND_KINDS, Proposal
from agents.roles.base import Role
from agents.roles.billing import BillingMonitor
from agents.roles.curator import MemoryCurator
from agents.roles.leads import GOOD_LEAD_SCORE, LeadQualification, judge, score_lead
from agents.roles.renewals import RenewalNudges, window_for
from tests.fixtures.agents import context_for, load

LEADS, RENEWALS, BILLING, CURATOR = load("leads"), load("renewals"), load("billing"), load("curator")


def run(role: Role, example: dict[str, Any], event_type: str) -> list[Proposal]:
    context = context_for(example, event_type)
    proposals = role.propose(context, AgentModel(None, role.name, 1.0, context.now.date()))
    for p in proposals:
        assert p.kind in role.kinds and p.agent == role.name and p.customer_id == context.customer.id
        assert p.kind not in MONEY_KINDS, "no role proposes money on its own"
        assert p.rationale and p.sources and p.event_id == context.trigger.id
        if p.kind in OUTBOUND_KINDS:
            assert p.drafted_from_template and p.draft is not None and p.draft.body
    return proposals


def check(proposals: list[Proposal], example: dict[str, Any]) -> None:
    kinds = [p.kind for p in proposals]
    for kind in example.get("expect", []):
        assert kind in kinds, f"{example['id']}: expected {kind}, got {kinds}"
    if example.get("expect") == []:  # nothing for the customer or the operator to act on; a note may say why
        assert set(kinds) <= {"add_note"}, f"{example['id']}: expected nothing, got {kinds}"
    for kind in example.get("forbid", []):
        assert kind not in kinds, f"{example['id']}: {kind} must not be proposed"


def test_there_are_at_least_sixty_labelled_examples_across_the_roles() -> None:
    assert len(LEADS) + len(RENEWALS) + len(BILLING) + len(CURATOR) + len(load("triage")) >= 60


# ---- lead qualification ----


@pytest.mark.parametrize("example", LEADS, ids=[e["id"] for e in LEADS])
def test_lead_qualification(example: dict[str, Any]) -> None:
    proposals = run(LeadQualification(), example, "lead.created")
    check(proposals, example)
    ref = example["ref"]
    verdict, score, _ = judge(example.get("text", ""), "", ref, example.get("data", {}))
    assert verdict == example["verdict"], f"{example['id']}: {verdict} ({score})"
    email = next((p for p in proposals if p.kind == "send_email"), None)
    if email is not None:
        assert email.params["to"] == ref["email"]
        assert email.params["template"] == verdict
        assert ref["name"].split()[0] in email.draft.body  # type: ignore[union-attr]
    assert f"lead score {score}/100" in proposals[0].rationale


def test_lead_score_is_fit_plus_intent_and_each_point_is_named() -> None:
    score, reasons = score_lead(
        "What does it cost?", {"company": "Northwind", "email": "a@northwind.io"}, {"source": "pricing_page"}
    )
    assert score == 10 + 15 + 20 + 15
    assert reasons == [
        "+10 company named",
        "+15 business email (northwind.io)",
        "+20 source: pricing_page",
        "+15 asks about price/demo/trial",
    ]
    free, _ = score_lead("hello", {"email": "someone@gmail.com"}, {})
    assert free == 0


def test_lead_score_caps_each_half_at_fifty() -> None:
    score, _ = score_lead(
        "pricing demo trial asap for 20 users",
        {"company": "X", "email": "a@x.io"},
        {"source": "referral", "title": "CEO", "company_size": 500, "budget": 10},
    )
    assert score == 100
    assert GOOD_LEAD_SCORE < 100


# ---- renewal nudges ----


@pytest.mark.parametrize(
    ("days", "window"), [(31, None), (30, 30), (15, 30), (14, 14), (8, 14), (7, 7), (0, 7), (-1, None)]
)
def test_renewal_window_by_days_left(days: int, window: int | None) -> None:
    assert window_for(days) == window


@pytest.mark.parametrize("example", RENEWALS, ids=[e["id"] for e in RENEWALS])
def test_renewal_nudges(example: dict[str, Any]) -> None:
    proposals = run(RenewalNudges(), example, "subscription.renewal_due")
    check(proposals, example)
    if "window" in example:
        data = example["data"]
        key = f"renewal:{data['subscription_id']}:{data['renews_on']}:{example['window']}"
        assert all(p.params["window_key"] == key for p in proposals)


def test_a_nudge_once_proposed_is_not_proposed_again_for_the_same_window() -> None:
    example = next(e for e in RENEWALS if e["id"] == "r-30")
    first = run(RenewalNudges(), example, "subscription.renewal_due")
    recorded = {
        "type": "proposal.pending",
        "days_ago": 1,
        "data": {"proposal": first[0].model_dump(mode="json")},
    }
    again = run(RenewalNudges(), {**example, "recent": [recorded]}, "subscription.renewal_due")
    assert again == []


# ---- billing monitor ----


@pytest.mark.parametrize("example", BILLING, ids=[e["id"] for e in BILLING])
def test_billing_monitor(example: dict[str, Any]) -> None:
    proposals = run(BillingMonitor(), example, example["type"])
    check(proposals, example)
    if "step" in example:
        key = f"dunning:{example['data']['invoice_id']}:{example['step']}"
        assert [p.params["dunning_key"] for p in proposals] == [key]


def test_dunning_climbs_the_ladder_one_step_per_overdue_signal_and_stops_when_paid() -> None:
    base = {"id": "ladder", "data": {"invoice_id": "INV-9", "amount": 100, "due_date": "2026-01-01"}}
    history: list[dict[str, Any]] = []
    steps = []
    for _ in range(5):
        proposals = run(BillingMonitor(), {**base, "recent": history}, "invoice.overdue")
        if not proposals:
            break
        steps.append(proposals[0].params["dunning_key"].rsplit(":", 1)[1])
        history.append(
            {
                "type": "proposal.executed",
                "days_ago": 1,
                "data": {"proposal": proposals[0].model_dump(mode="json")},
            }
        )
    assert steps == ["friendly", "firm", "final", "operator"]
    paid = [
        *history[:1],
        {"type": "invoice.paid", "days_ago": 0.01, "data": {"data": {"invoice_id": "INV-9"}}},
    ]
    assert run(BillingMonitor(), {**base, "recent": paid}, "invoice.overdue") == []


def test_dunning_emails_never_mention_discounts_or_refunds() -> None:
    for example in BILLING:
        for p in run(BillingMonitor(), example, example["type"]):
            if p.draft:
                assert not any(w in p.draft.body.lower() for w in ("discount", "refund", "credit"))


# ---- memory curator ----


@pytest.mark.parametrize("example", CURATOR, ids=[e["id"] for e in CURATOR])
def test_memory_curator(example: dict[str, Any]) -> None:
    proposals = run(MemoryCurator(), example, example["type"])
    check(proposals, example)
    for p in proposals:
        if p.kind == "merge_customers":
            assert p.params == {"into": "cus_1", "merged": "cus_2", "reason": "same name and company domain"}
        if p.kind == "add_note":
            assert p.params["text"].startswith("Summary: ")
            assert len(p.params["summary_of"]) >= 12


DEFAULT_DAY = date(2026, 3, 1)


def test_a_good_lead_is_offered_to_the_operators_own_webhook_only_when_one_is_set() -> None:
    from agents.policy import load_policy

    no_model = AgentModel(None, "lead_qualification", 1.0, DEFAULT_DAY)
    example = next(e for e in load("leads") if e["id"] == "l-demo-cto")
    without = LeadQualification().propose(context_for(example, "lead.created"), no_model)
    assert "post_webhook" not in [p.kind for p in without]

    hook = "https://hooks.example.com/new-lead"
    context = context_for(example, "lead.created").model_copy(update={"webhook_url": hook})
    [post] = [p for p in LeadQualification().propose(context, no_model) if p.kind == "post_webhook"]
    assert post.params["url"] == hook
    assert post.params["json"]["event"] == "lead.qualified"
    assert post.params["json"]["customer"]["email"] == "priya@northwind.io"
    assert load_policy().review(post, context).decision in {"approval", "deferred"}, "never without a tap"

    poor = next(e for e in load("leads") if e["verdict"] != "good")
    context = context_for(poor, "lead.created").model_copy(update={"webhook_url": hook})
    assert "post_webhook" not in [p.kind for p in LeadQualification().propose(context, no_model)]
