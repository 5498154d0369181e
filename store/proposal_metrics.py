"""Lifecycle metrics as functions over the proposal projection (the digest and /metrics both read them).

Computed from projections rather than counted in memory, so every process (web, worker, digest)
reports the same figures and a replay reproduces them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from store import tables as t

HUMAN_DECISIONS = ("approved", "edited", "rejected")
# The one window the decision rates, time to decision and cost per action are reported over, in the
# digest and on /metrics alike, so the two always agree.
RATE_WINDOW = timedelta(days=30)
# Decisions that let an action go ahead.
GO_DECISIONS = ("approved", "edited", "auto")


@dataclass(frozen=True)
class LifecycleMetrics:
    """Proposal outcomes and decision behaviour over a period."""

    by_agent_outcome: dict[tuple[str, str], int] = field(default_factory=dict)
    decided: int = 0  # by a person
    approval_rate: float | None = None
    edit_rate: float | None = None
    rejection_rate: float | None = None
    undo_rate: float | None = None  # undone / went ahead: the "false action" rate
    decision_seconds_p50: float | None = None
    decision_seconds_mean: float | None = None
    executed: int = 0
    cost_usd: float = 0.0
    cost_per_executed_action: float | None = None


def outcome_of(row: dict[str, Any]) -> str:
    """One word for where a proposal ended up (or is)."""
    if row["state"] in {"refused", "undone", "expired", "failed", "uncertain"}:
        return str(row["state"])
    return str(row["decision"] or row["state"])


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def lifecycle_metrics(connection: Connection, since: datetime | None = None) -> LifecycleMetrics:
    """The metrics over proposals created since `since` (all of them when None)."""
    p = t.proposals.c
    query = select(p.agent, p.state, p.decision, p.created_at, p.decided_at, p.cost_usd)
    if since is not None:
        query = query.where(p.created_at >= since)
    rows = [dict(row._mapping) for row in connection.execute(query)]
    by_outcome = Counter((row["agent"], outcome_of(row)) for row in rows)
    decisions = Counter(row["decision"] for row in rows)
    human = sum(decisions[d] for d in HUMAN_DECISIONS)
    went_ahead = sum(decisions[d] for d in GO_DECISIONS)
    undone = sum(1 for row in rows if row["state"] == "undone")
    waits = [
        (row["decided_at"] - row["created_at"]).total_seconds()
        for row in rows
        if row["decision"] in HUMAN_DECISIONS and row["decided_at"] is not None
    ]
    executed = sum(1 for row in rows if row["state"] == "executed")
    cost = round(sum(row["cost_usd"] or 0.0 for row in rows), 6)
    return LifecycleMetrics(
        by_agent_outcome=dict(by_outcome),
        decided=human,
        approval_rate=_rate(decisions["approved"], human),
        edit_rate=_rate(decisions["edited"], human),
        rejection_rate=_rate(decisions["rejected"], human),
        undo_rate=_rate(undone, went_ahead),
        decision_seconds_p50=statistics.median(waits) if waits else None,
        decision_seconds_mean=statistics.fmean(waits) if waits else None,
        executed=executed,
        cost_usd=cost,
        cost_per_executed_action=cost / executed if executed else None,
    )


def recent_metrics(connection: Connection, now: datetime) -> LifecycleMetrics:
    """The metrics over proposals made in the last RATE_WINDOW (what the digest and /metrics report)."""
    return lifecycle_metrics(connection, now - RATE_WINDOW)
