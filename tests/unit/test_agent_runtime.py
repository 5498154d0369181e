"""The agent runtime: subscriptions, the fence around declared kinds, pausing, and policy applied."""

from __future__ import annotations

from typing import ClassVar

import pytest

from agents.context import AgentContext
from agents.model import AgentModel, ModelClient
from agents.proposal import ActionKind, Proposal
from agents.roles.base import Role
from agents.runtime import AgentRuntime, UnknownRole, build_runtime
from tests.conftest import SettingsFactory
from tests.fixtures.agents import context_for

COMPLAINT = {"id": "c", "subject": "Broken", "text": "The export is not working, really frustrating."}


class Greedy(Role):
    """Declares notes only, but tries to send money and an email too."""

    name: ClassVar[str] = "greedy"
    consumes: ClassVar[frozenset[str]] = frozenset({"message.received"})
    kinds: ClassVar[frozenset[ActionKind]] = frozenset({"add_note"})

    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        def make(kind: ActionKind, **params: object) -> Proposal:
            return Proposal(
                agent="inbox_triage",
                kind=kind,
                customer_id=context.customer.id,
                params=params,
                rationale="greedy",
                confidence=0.99,
            )

        return [
            make("add_note", text="hi"),
            make("issue_refund", amount_cents=100),
            make("send_email", to="x@y"),
        ]


class Broken(Role):
    name: ClassVar[str] = "broken"
    consumes: ClassVar[frozenset[str]] = frozenset({"message.received"})
    kinds: ClassVar[frozenset[ActionKind]] = frozenset({"add_note"})

    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        raise RuntimeError("boom")


def test_the_default_runtime_has_five_roles_subscribed_to_their_signals() -> None:
    runtime = AgentRuntime()
    assert set(runtime.roles) == {
        "inbox_triage",
        "lead_qualification",
        "renewal_nudges",
        "billing_monitor",
        "memory_curator",
    }
    assert [r.name for r in runtime.subscribers("lead.created")] == ["lead_qualification"]
    assert [r.name for r in runtime.subscribers("invoice.paid")] == ["billing_monitor"]
    assert [r.name for r in runtime.subscribers("subscription.renewal_due")] == ["renewal_nudges"]
    assert {r.name for r in runtime.subscribers("message.received")} == {"inbox_triage", "memory_curator"}
    assert [r.name for r in runtime.subscribers("customer.possible_duplicate")] == ["memory_curator"]
    assert runtime.subscribers("task.created") == []
    for role in runtime.roles.values():  # every declared kind is allowed by the shipped policy too
        assert set(role.kinds) <= set(runtime.policy.config.capabilities[role.name])


def test_propose_returns_every_proposal_with_its_verdict() -> None:
    reviewed = AgentRuntime().propose(context_for(COMPLAINT, "message.received"))
    by_kind = {r.proposal.kind: r.verdict for r in reviewed}
    # A calm complaint from a small account: a reply and a task, no escalation (agents/escalation.py).
    assert set(by_kind) == {"send_email", "create_task"}
    assert by_kind["send_email"].decision == "approval"
    assert all(r.proposal.agent == "inbox_triage" for r in reviewed)
    assert all(r.verdict.rules for r in reviewed)


def test_kinds_outside_the_roles_declaration_are_refused_and_recorded() -> None:
    runtime = AgentRuntime(roles=[Greedy()])
    reviewed = runtime.propose(context_for(COMPLAINT, "message.received"))
    verdicts = {r.proposal.kind: r.verdict for r in reviewed}
    assert verdicts["issue_refund"].decision == "refused"
    assert verdicts["issue_refund"].rules[0].name == "role_kinds"
    assert verdicts["send_email"].decision == "refused"
    # a role speaks only for itself: the spoofed agent name is replaced, and policy knows no "greedy"
    assert all(r.proposal.agent == "greedy" for r in reviewed)
    assert verdicts["add_note"].decision == "refused" and verdicts["add_note"].rules[0].name == "capability"


def test_one_broken_role_does_not_silence_the_others() -> None:
    runtime = AgentRuntime(roles=[Broken(), *AgentRuntime().roles.values()])
    kinds = [r.proposal.kind for r in runtime.propose(context_for(COMPLAINT, "message.received"))]
    assert "send_email" in kinds


def test_pause_and_resume_one_role_or_all_through_a_shared_set() -> None:
    paused: set[str] = set()
    runtime = AgentRuntime(paused=paused)
    context = context_for(COMPLAINT, "message.received")
    runtime.pause("inbox_triage")
    assert paused == {"inbox_triage"} and runtime.is_paused("inbox_triage")
    assert runtime.propose(context) == []
    runtime.resume("inbox_triage")
    assert runtime.propose(context) != []
    runtime.pause()
    assert runtime.is_paused("memory_curator") and runtime.propose(context) == []
    runtime.resume()
    assert paused == set() and runtime.propose(context) != []
    with pytest.raises(UnknownRole, match="inbox_triage"):
        runtime.pause("inbox_triaj")


def test_paused_set_from_outside_is_respected() -> None:
    runtime = AgentRuntime(paused={"*"})
    assert runtime.propose(context_for(COMPLAINT, "message.received")) == []


def test_build_runtime_without_a_key_runs_on_rules_and_templates(make_settings: SettingsFactory) -> None:
    runtime = build_runtime(make_settings())
    assert runtime.model is None
    reviewed = runtime.propose(context_for(COMPLAINT, "message.received"))
    assert reviewed and all(r.proposal.drafted_from_template for r in reviewed)


def test_build_runtime_with_a_key_builds_a_model_client(make_settings: SettingsFactory) -> None:
    settings = make_settings(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    runtime = build_runtime(settings)
    assert isinstance(runtime.model, ModelClient)
    assert str(runtime.model.client.base_url) == "http://127.0.0.1:9/v1/"
    assert runtime.model.tiers == {"cheap": "gpt-4o-mini", "draft": "gpt-4o"}
