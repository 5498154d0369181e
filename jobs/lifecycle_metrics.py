"""Prometheus view of the lifecycle metrics, read from the projections at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from store.events import utcnow
from store.proposal_metrics import lifecycle_metrics, recent_metrics

log = logging.getLogger(__name__)


class LifecycleCollector(Collector):
    """crm_proposals{agent,outcome}, decision rates, undo rate, time to decision, cost per action."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            with self.engine.connect() as connection:
                m = lifecycle_metrics(connection)  # every proposal ever, by agent and outcome
                recent = recent_metrics(connection, utcnow())
        except Exception as exc:  # the database being down must not break /metrics
            log.warning("lifecycle metrics unavailable: %s", exc)
            return
        proposals = GaugeMetricFamily(
            "crm_proposals", "Proposals by agent and outcome", labels=["agent", "outcome"]
        )
        for (agent, outcome), count in sorted(m.by_agent_outcome.items()):
            proposals.add_metric([agent, outcome], count)
        yield proposals
        # rates, waits and cost over the digest's window (RATE_WINDOW), so the two agree
        rates = GaugeMetricFamily(
            "crm_decision_rate", "Share of human decisions by kind (last 30 days)", labels=["decision"]
        )
        for name, value in (
            ("approved", recent.approval_rate),
            ("edited", recent.edit_rate),
            ("rejected", recent.rejection_rate),
        ):
            rates.add_metric([name], value or 0.0)
        yield rates
        yield GaugeMetricFamily(
            "crm_undo_rate",
            "Undone / went ahead (false actions), last 30 days",
            value=recent.undo_rate or 0.0,
        )
        yield GaugeMetricFamily(
            "crm_decision_seconds_p50",
            "Median time from proposal to decision, last 30 days",
            value=recent.decision_seconds_p50 or 0.0,
        )
        yield GaugeMetricFamily(
            "crm_actions_executed", "Actions executed, last 30 days", value=recent.executed
        )
        yield GaugeMetricFamily(
            "crm_cost_per_executed_action_usd",
            "Model spend on proposals divided by actions executed, last 30 days",
            value=recent.cost_per_executed_action or 0.0,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())
