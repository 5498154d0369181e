"""The policy enforcer: every proposal gets a verdict and the list of rules that led to it.

Pure decision code: a proposal, its context and the rules (agents/policy.yaml) in, a Verdict out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.context import AgentContext
from agents.injection import looks_like_injection
from agents.proposal import MONEY_KINDS, OUTBOUND_KINDS, ActionKind, Proposal

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")
KNOWN_VERSIONS = (1,)

DEFAULT_AUTO_KINDS: tuple[ActionKind, ...] = ("add_note", "create_task", "change_stage")

Decision = Literal["auto", "approval", "refused", "deferred"]


class PolicyError(ValueError):
    """The policy file is missing, malformed or of an unknown version; the message says where."""


class AppliedRule(BaseModel):
    """One rule that had a say, explained in a line for the "Why?" button."""

    model_config = ConfigDict(frozen=True)
    name: str
    explanation: str


class Verdict(BaseModel):
    """auto: run without a tap · approval: a person decides · refused: logged, never run ·
    deferred: hold until `not_before`, then `then` (auto or approval)."""

    model_config = ConfigDict(frozen=True)
    decision: Decision
    rules: tuple[AppliedRule, ...] = ()
    not_before: datetime | None = None
    then: Literal["auto", "approval"] | None = None

    def explain(self) -> str:
        """All applied rules, one per line."""
        return "\n".join(f"{r.name}: {r.explanation}" for r in self.rules)


class Reviewed(BaseModel):
    """A proposal with the verdict the runtime and the policy gave it."""

    model_config = ConfigDict(frozen=True)
    proposal: Proposal
    verdict: Verdict


def _hhmm(value: str) -> str:
    time.fromisoformat(value)
    return value


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = "21:00"
    end: str = "08:00"
    _check_start = field_validator("start")(classmethod(lambda cls, v: _hhmm(v)))
    _check_end = field_validator("end")(classmethod(lambda cls, v: _hhmm(v)))


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(default=3, ge=0, le=365)


class MoneyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ceiling_cents: int = Field(default=50_000, ge=0)
    max_discount_percent: float = Field(default=30, ge=0, le=100)


class AutoExecute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[ActionKind] = Field(default_factory=lambda: list(DEFAULT_AUTO_KINDS))
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)


class PolicyConfig(BaseModel):
    """The YAML file, validated."""

    model_config = ConfigDict(extra="forbid")
    version: int
    capabilities: dict[str, list[ActionKind]] = Field(default_factory=dict)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    money: MoneyLimits = Field(default_factory=MoneyLimits)
    auto_execute: AutoExecute = Field(default_factory=AutoExecute)

    @model_validator(mode="after")
    def _known_version(self) -> PolicyConfig:
        if self.version not in KNOWN_VERSIONS:
            raise ValueError(f"version {self.version} is unknown (this code reads {KNOWN_VERSIONS})")
        if set(self.auto_execute.kinds) & (OUTBOUND_KINDS | MONEY_KINDS):
            raise ValueError("auto_execute.kinds may not contain outbound or money kinds")
        return self


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate a policy file (the shipped defaults when no path is given)."""
    source = Path(path) if path else DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read policy {source}: {exc}") from exc
    try:
        return Policy(PolicyConfig.model_validate(raw))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"bad policy {source}: {problems}") from None


class Policy:
    """Applies the rules in order; the first refusal ends the review."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.quiet_start = time.fromisoformat(config.quiet_hours.start)
        self.quiet_end = time.fromisoformat(config.quiet_hours.end)

    @property
    def version(self) -> int:
        return self.config.version

    def review(self, proposal: Proposal, context: AgentContext) -> Verdict:
        """The verdict for one proposal in its context."""
        rules: list[AppliedRule] = []

        def refuse(name: str, why: str) -> Verdict:
            return Verdict(decision="refused", rules=(*rules, AppliedRule(name=name, explanation=why)))

        allowed = self.config.capabilities.get(proposal.agent)
        if allowed is None or proposal.kind not in allowed:
            return refuse("capability", f"{proposal.agent} may not propose {proposal.kind}")
        rules.append(
            AppliedRule(name="capability", explanation=f"{proposal.agent} may propose {proposal.kind}")
        )

        subject = context.trigger.data.get("subject")
        untrusted = looks_like_injection(context.trigger.text, str(subject) if subject else None)
        if untrusted:
            if proposal.kind in MONEY_KINDS or proposal.kind == "merge_customers":
                return refuse(
                    "inbound_instructions",
                    "the message tries to instruct the agent; money and merges are never taken from it",
                )
            rules.append(
                AppliedRule(
                    name="inbound_instructions",
                    explanation="the message tries to instruct the agent: nothing runs without a person",
                )
            )

        if proposal.kind in MONEY_KINDS:
            refusal = self._money_refusal(proposal.params)
            if refusal:
                return refuse("money_ceiling", refusal)
            rules.append(AppliedRule(name="money", explanation="discounts and refunds always need approval"))

        decision = self._base_decision(proposal, rules, force_approval=untrusted)
        if proposal.kind not in OUTBOUND_KINDS:
            return Verdict(decision=decision, rules=tuple(rules))

        not_before = self._frequency_cap(context, rules)
        at = max(context.now, not_before) if not_before else context.now
        zone = context.customer_zone()
        quiet_end = quiet_until(at, zone, self.quiet_start, self.quiet_end)
        if quiet_end:
            who = "customer's" if context.customer.timezone else "operator's"
            rules.append(
                AppliedRule(
                    name="quiet_hours",
                    explanation=f"night in the {who} time zone ({zone.key}); held until "
                    f"{quiet_end.astimezone(zone):%a %H:%M} there",
                )
            )
            not_before = quiet_end.astimezone(UTC)
        if not_before:
            return Verdict(decision="deferred", rules=tuple(rules), not_before=not_before, then=decision)
        return Verdict(decision=decision, rules=tuple(rules))

    def _money_refusal(self, params: dict[str, Any]) -> str | None:
        limits = self.config.money
        cents = _int(params.get("amount_cents"))
        if cents is not None and cents > limits.ceiling_cents:
            return f"{cents / 100:.2f} is above the ceiling of {limits.ceiling_cents / 100:.2f}"
        percent = _float(params.get("percent"))
        if percent is not None and percent > limits.max_discount_percent:
            return f"{percent:g}% is above the ceiling of {limits.max_discount_percent:g}%"
        if cents is None and percent is None:
            return "no amount given"
        return None

    def _base_decision(
        self, proposal: Proposal, rules: list[AppliedRule], force_approval: bool
    ) -> Literal["auto", "approval"]:
        auto = self.config.auto_execute
        if force_approval:
            return "approval"
        if proposal.kind not in auto.kinds:
            rules.append(AppliedRule(name="needs_approval", explanation=f"{proposal.kind} is not low-risk"))
            return "approval"
        if proposal.confidence < auto.min_confidence:
            rules.append(
                AppliedRule(
                    name="confidence",
                    explanation=f"confidence {proposal.confidence:.2f} is below {auto.min_confidence:.2f}",
                )
            )
            return "approval"
        rules.append(
            AppliedRule(
                name="auto_execute",
                explanation=f"{proposal.kind} is low-risk and confidence {proposal.confidence:.2f} "
                f"≥ {auto.min_confidence:.2f}",
            )
        )
        return "auto"

    def _frequency_cap(self, context: AgentContext, rules: list[AppliedRule]) -> datetime | None:
        days = self.config.frequency_cap.days
        last_out = context.last_outbound_at
        if not days or last_out is None:
            return None
        until = (last_out + timedelta(days=days)).astimezone(UTC)
        if until <= context.now:
            return None
        inbound = context.inbound_at()
        if inbound and inbound > last_out:
            rules.append(
                AppliedRule(name="frequency_cap", explanation="the customer wrote since our last message")
            )
            return None
        rules.append(
            AppliedRule(
                name="frequency_cap",
                explanation=f"we wrote {(context.now - last_out).days} day(s) ago; at most one message "
                f"per {days} days, held until {until:%Y-%m-%d %H:%M} UTC",
            )
        )
        return until


def quiet_until(at: datetime, zone: ZoneInfo, start: time, end: time) -> datetime | None:
    """If `at` falls in the quiet window [start, end) local time, when it ends (aware); else None.

    The window may cross midnight (21:00 to 08:00). The end is a wall-clock time on the right local day,
    so a DST change during the night moves it with the clock; an end that does not exist that day
    (inside a spring-forward gap) resolves to the first valid instant after it.
    """
    local = at.astimezone(zone)
    now_t = local.time().replace(tzinfo=None)
    crosses_midnight = start > end
    if crosses_midnight:
        quiet = now_t >= start or now_t < end
        end_day: date = local.date() if now_t < end else local.date() + timedelta(days=1)
    else:
        quiet = start <= now_t < end
        end_day = local.date()
    if not quiet:
        return None
    wall = datetime.combine(end_day, end, tzinfo=zone)
    # A round trip through UTC turns a non-existent wall time into a real instant: with fold=0 a time
    # in a spring-forward gap takes the pre-transition offset, which lands after the gap, never before.
    return datetime.fromtimestamp(wall.timestamp(), zone)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
