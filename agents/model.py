"""The model client: tiers over the OpenAI SDK, structured output, a cost meter and a daily budget.

Any failure is an outcome, never an exception: no key, over budget, timeout, API error or output that
fails validation all come back as `ModelOutcome(value=None, fallback=...)`, and the agent drafts from
its template instead (DESIGN.md invariant 7).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, Literal, Protocol, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from agents.proposal import Cost
from store.settings import DEFAULT_MODEL_TIMEOUT_S, Settings

log = logging.getLogger(__name__)

Tier = Literal["cheap", "draft"]
Fallback = Literal["no_model", "budget_exhausted", "timeout", "error", "invalid_output"]
T = TypeVar("T", bound=BaseModel)

# USD per million tokens (input, output), from the providers' public price lists. A model missing
# here is charged at UNKNOWN_MODEL_PRICE, deliberately high, so budgets still bite on a new model.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
}
UNKNOWN_MODEL_PRICE = (5.00, 15.00)
# Named in store.settings with the settings they default; kept here for the roles and the client.
DEFAULT_TIMEOUT_S = DEFAULT_MODEL_TIMEOUT_S


def price_of(
    model: str, prompt_tokens: int, completion_tokens: int, prices: Mapping[str, tuple[float, float]]
) -> float:
    """USD for one call; dated model names (gpt-4o-mini-2024-07-18) use their base model's price."""
    rate = prices.get(model)
    if rate is None:
        base = max((name for name in prices if model.startswith(name + "-")), key=len, default=None)
        rate = prices[base] if base else UNKNOWN_MODEL_PRICE
    return round((prompt_tokens * rate[0] + completion_tokens * rate[1]) / 1_000_000, 8)


def add_costs(*costs: Cost) -> Cost:
    """The sum of several calls' costs; the model named is the last one that was called."""
    models = [c.model for c in costs if c.model]
    return Cost(
        model=models[-1] if models else None,
        prompt_tokens=sum(c.prompt_tokens for c in costs),
        completion_tokens=sum(c.completion_tokens for c in costs),
        usd=round(sum(c.usd for c in costs), 8),
    )


class BudgetMeter(Protocol):
    """Spending per agent per day; swap in a shared one (Redis, the store) for many workers."""

    def spent(self, agent: str, day: date) -> float: ...

    def record(self, agent: str, day: date, usd: float) -> None: ...


class MemoryBudgetMeter:
    """Per-process spending, enough for one worker (and for tests)."""

    def __init__(self) -> None:
        self._spent: dict[tuple[str, date], float] = {}
        self._lock = threading.Lock()

    def spent(self, agent: str, day: date) -> float:
        with self._lock:
            return self._spent.get((agent, day), 0.0)

    def record(self, agent: str, day: date, usd: float) -> None:
        with self._lock:
            self._spent[(agent, day)] = self._spent.get((agent, day), 0.0) + usd


@dataclass
class ModelOutcome(Generic[T]):
    """A parsed value, or the reason there is none; the cost is recorded either way."""

    value: T | None
    cost: Cost = field(default_factory=Cost)
    fallback: Fallback | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


class ModelClient:
    """Chat completions with a JSON schema, parsed into a pydantic model, metered per agent and day."""

    def __init__(
        self,
        client: openai.OpenAI,
        tiers: Mapping[Tier, str],
        *,
        prices: Mapping[str, tuple[float, float]] = PRICES_PER_MILLION,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        meter: BudgetMeter | None = None,
    ) -> None:
        # No SDK retries: a slow or failing model means a template now, not a stalled worker.
        self.client = client.with_options(timeout=timeout_s, max_retries=0)
        self.tiers = dict(tiers)
        self.prices = prices
        self.meter: BudgetMeter = meter or MemoryBudgetMeter()

    @classmethod
    def from_settings(cls, settings: Settings, meter: BudgetMeter | None = None) -> ModelClient | None:
        """A client, or None when no key is configured (the no-model mode)."""
        if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
            return None
        client = openai.OpenAI(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url or None
        )
        return cls(
            client,
            {"cheap": settings.model_cheap, "draft": settings.model_draft},
            timeout_s=settings.model_timeout_s,
            meter=meter,
        )

    def ask(
        self,
        *,
        agent: str,
        tier: Tier,
        messages: list[dict[str, str]],
        schema: type[T],
        day: date,
        budget_usd: float,
    ) -> ModelOutcome[T]:
        """One structured call for one agent; never raises for model trouble."""
        if self.meter.spent(agent, day) >= budget_usd:
            return ModelOutcome(
                None, fallback="budget_exhausted", detail=f"{agent} spent its {budget_usd} USD today"
            )
        model = self.tiers[tier]
        try:
            request: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
                },
                "temperature": 0.2,
            }
            response = self.client.chat.completions.create(**request)
        except openai.APITimeoutError:
            return ModelOutcome(None, fallback="timeout", detail=f"{model} timed out")
        except openai.APIError as exc:
            log.warning("model %s failed for %s: %s", model, agent, exc)
            return ModelOutcome(None, fallback="error", detail=f"{model}: {type(exc).__name__}")
        cost = self._cost(response, model)
        self.meter.record(agent, day, cost.usd)
        try:
            content = response.choices[0].message.content if response.choices else None
            if not content:
                raise ValueError("empty answer")
            value = schema.model_validate(json.loads(content))
        except (ValueError, ValidationError, TypeError) as exc:
            # json.JSONDecodeError and pydantic's ValidationError are both ValueErrors.
            return ModelOutcome(None, cost=cost, fallback="invalid_output", detail=str(exc)[:200])
        return ModelOutcome(value, cost=cost)

    def _cost(self, response: Any, model: str) -> Cost:
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        name = getattr(response, "model", None) or model
        return Cost(
            model=name,
            prompt_tokens=prompt,
            completion_tokens=completion,
            usd=price_of(name, prompt, completion, self.prices),
        )


class AgentModel:
    """The model as one agent sees it today: its name and budget bound in, absent when not configured."""

    def __init__(self, client: ModelClient | None, agent: str, budget_usd: float, day: date) -> None:
        self.client = client
        self.agent = agent
        self.budget_usd = budget_usd
        self.day = day

    @property
    def available(self) -> bool:
        return self.client is not None

    def ask(self, tier: Tier, messages: list[dict[str, str]], schema: type[T]) -> ModelOutcome[T]:
        """Structured answer, or a fallback outcome ("no_model" when none is configured)."""
        if self.client is None:
            return ModelOutcome(None, fallback="no_model")
        return self.client.ask(
            agent=self.agent,
            tier=tier,
            messages=messages,
            schema=schema,
            day=self.day,
            budget_usd=self.budget_usd,
        )


FALLBACK_NOTES: dict[str, str] = {
    "no_model": "no model configured",
    "budget_exhausted": "the agent's daily model budget is spent",
    "timeout": "the model timed out",
    "error": "the model call failed",
    "invalid_output": "the model's answer failed validation",
}


def fallback_note(outcome: ModelOutcome[Any]) -> str:
    """`drafted from template (why)` for a rationale."""
    return f"drafted from template ({FALLBACK_NOTES.get(outcome.fallback or '', 'model not used')})"
