"""Prometheus metrics of one app: a registry per app (tests and several apps never share counters).

Add a metric as a named attribute of Metrics, with its reason in the help text; gauges that read
state at scrape time (queue depth) are collectors registered with `add_collector`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from store.intake import backlog

if TYPE_CHECKING:
    from jobs.queue import JobQueue

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The named metrics; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.signals = Counter(
            "crm_signals",
            "Signals recorded (new events), by signal type and source",
            ["type", "source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "crm_signal_duplicates",
            "Redeliveries answered with the original event id, by source",
            ["source"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "crm_refusals",
            "Inbound requests refused before anything was written, by endpoint and reason",
            ["endpoint", "reason"],
            registry=self.registry,
        )

    def add_collector(self, collector: Collector) -> None:
        """Register a collector that reads its values at scrape time."""
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class QueueCollector(Collector):
    """Jobs waiting per priority and jobs parked as failed, read from the queue at each scrape."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("crm_queue_depth", "Jobs waiting, by priority", labels=["priority"])
        failed = GaugeMetricFamily("crm_jobs_failed", "Jobs that used up their retries (see `crm jobs`)")
        try:
            for priority, count in self.queue.depth().items():
                depth.add_metric([priority], count)
            failed.add_metric([], len(self.queue.failed_jobs()))
        except Exception as exc:  # the broker being down must not break /metrics; /healthz reports it
            log.warning("queue metrics unavailable: %s", exc)
            return
        yield depth
        yield failed

    def describe(self) -> Iterator[Metric]:
        return iter(())


class IntakeCollector(Collector):
    """Signals accepted but not yet in the log, and those given up on, read at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            counts = backlog(self.engine)
        except Exception as exc:  # the database being down must not break /metrics; /healthz says so
            log.warning("intake metrics unavailable: %s", exc)
            return
        yield GaugeMetricFamily(
            "crm_intake_waiting", "Signals accepted, waiting to be sequenced into the log", counts["waiting"]
        )
        yield GaugeMetricFamily(
            "crm_intake_failed",
            "Signals the log refused after every attempt (the error is on their intake row)",
            counts["failed"],
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


def build_metrics(queue: JobQueue, engine: Engine) -> Metrics:
    """Metrics with the queue, intake and proposal-lifecycle collectors registered (built by the App)."""
    from jobs.lifecycle_metrics import LifecycleCollector

    metrics = Metrics()
    metrics.add_collector(QueueCollector(queue))
    metrics.add_collector(IntakeCollector(engine))
    metrics.add_collector(LifecycleCollector(engine))
    return metrics
