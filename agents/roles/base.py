"""What every role is: a name, the event types it reads, the action kinds it may propose, a tier, a budget."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from agents.context import AgentContext
from agents.model import AgentModel, Tier
from agents.proposal import ActionKind, Proposal
from store.settings import DEFAULT_DAILY_BUDGET_USD


class Role(ABC):
    """A bounded agent. `propose` returns data only; it never calls a connector (invariant 6)."""

    name: ClassVar[str]
    consumes: ClassVar[frozenset[str]]
    kinds: ClassVar[frozenset[ActionKind]]
    tier: ClassVar[Tier] = "draft"
    daily_budget_usd: ClassVar[float] = DEFAULT_DAILY_BUDGET_USD

    @abstractmethod
    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        """Proposals for this context (possibly none)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
