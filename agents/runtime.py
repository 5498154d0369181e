"""The agent runtime: runs every role subscribed to an event, fences them in, and asks policy.

`AgentRuntime.propose(context)` is the one entry point the job pipeline calls. The paused set is
passed in (any mutable set) so it can live in the store later; "*" in it pauses every role.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableSet
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from agents.context import AgentContext
from agents.model import AgentModel, BudgetMeter, ModelClient
from agents.policy import AppliedRule, Policy, Reviewed, Verdict, load_policy
from agents.proposal import Proposal
from agents.roles import Role, default_roles
from store.settings import Settings

log = logging.getLogger(__name__)

ALL = "*"


class UnknownRole(KeyError):
    """No role by that name; the message lists the ones there are."""


class AgentRuntime:
    """Roles, policy and model client wired together."""

    def __init__(
        self,
        *,
        roles: Iterable[Role] | None = None,
        policy: Policy | None = None,
        model: ModelClient | None = None,
        paused: MutableSet[str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> None:
        self.roles: dict[str, Role] = {role.name: role for role in (roles or default_roles())}
        self.policy = policy or load_policy()
        self.model = model
        self.paused: MutableSet[str] = paused if paused is not None else set()
        self.budgets = dict(budgets or {})

    def subscribers(self, event_type: str) -> list[Role]:
        """Roles that read this event type, paused or not."""
        return [role for role in self.roles.values() if event_type in role.consumes]

    def propose(self, context: AgentContext, *, only: str | None = None) -> list[Reviewed]:
        """Every subscribed, unpaused role's proposals (or `only` that role's), each with its verdict."""
        day = context.now.astimezone(ZoneInfo(context.operator_timezone)).date()
        reviewed: list[Reviewed] = []
        for role in self.subscribers(context.trigger.type):
            if self.is_paused(role.name) or (only is not None and role.name != only):
                continue
            try:
                proposals = role.propose(context, self._model_for(role, day))
            except Exception:
                # One broken role must not silence the others; the job log has the traceback.
                log.exception("role %s failed on event %s", role.name, context.trigger.id)
                continue
            reviewed.extend(self._review(role, proposal, context) for proposal in proposals)
        return reviewed

    def _review(self, role: Role, proposal: Proposal, context: AgentContext) -> Reviewed:
        if proposal.agent != role.name:  # a role speaks only for itself
            proposal = proposal.model_copy(update={"agent": role.name})
        if proposal.kind not in role.kinds:
            rule = AppliedRule(name="role_kinds", explanation=f"{role.name} does not declare {proposal.kind}")
            log.warning("refused %s from %s: kind not declared", proposal.kind, role.name)
            return Reviewed(proposal=proposal, verdict=Verdict(decision="refused", rules=(rule,)))
        return Reviewed(proposal=proposal, verdict=self.policy.review(proposal, context))

    def _model_for(self, role: Role, day: date) -> AgentModel:
        budget = self.budgets.get(role.name, role.daily_budget_usd)
        return AgentModel(self.model, role.name, budget, day)

    def is_paused(self, name: str) -> bool:
        """Whether a role is paused (directly or by pausing all)."""
        return ALL in self.paused or name in self.paused

    def pause(self, name: str | None = None) -> None:
        """Pause one role, or all of them when no name is given."""
        self.paused.add(self._checked(name) if name else ALL)

    def resume(self, name: str | None = None) -> None:
        """Resume one role, or every role (clearing all pauses) when no name is given."""
        if name is None:
            self.paused.clear()
            return
        self.paused.discard(self._checked(name))

    def _checked(self, name: str) -> str:
        if name not in self.roles:
            raise UnknownRole(f"no agent {name!r}; there are: {', '.join(sorted(self.roles))}")
        return name


def build_runtime(
    settings: Settings,
    *,
    paused: MutableSet[str] | None = None,
    policy_path: Path | str | None = None,
    meter: BudgetMeter | None = None,
) -> AgentRuntime:
    """The runtime from settings: a model client when OPENAI_API_KEY is set, else rules and templates."""
    client = ModelClient.from_settings(settings, meter=meter)
    runtime = AgentRuntime(
        policy=load_policy(policy_path or settings.policy_file), model=client, paused=paused
    )
    runtime.budgets = {name: settings.agent_daily_budget_usd for name in runtime.roles}
    return runtime
