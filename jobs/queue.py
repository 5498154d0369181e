"""The job queue seam: priorities, the retry policy and the JobQueue protocol both backends implement.

Two backends, picked by the composition root from settings (`make_queue`):
- `jobs.redis_queue.RedisJobQueue` (REDIS_URL set): RQ 2, one RQ queue per priority; `crm worker`
  listens to them highest first.
- `jobs.inprocess.InProcessJobQueue` (no REDIS_URL): background threads in the same process with the
  same semantics (priority order, retries with backoff, a failed registry, deterministic job ids).

Job functions are module-level and take ids only (`process_event(event_id)`, `execute(proposal_id)`);
they find the store and the rest through `jobs.context.current()`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from store.settings import Settings

# Highest first: a decision the operator is waiting on beats a new signal, which beats memory upkeep.
DECISIONS = "decisions"
SIGNALS = "signals"
HOUSEKEEPING = "housekeeping"
PRIORITIES: tuple[str, ...] = (DECISIONS, SIGNALS, HOUSEKEEPING)

PROCESS_EVENT = "jobs.process.process_event"

# Job id prefix of process_event jobs; the rest is the event id, so an event is queued at most once.
EVENT_JOB_PREFIX = "event-"


class UnknownPriority(ValueError):
    """A priority that is not one of PRIORITIES."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing job is tried again, and after how many seconds each time.

    `intervals[n]` is the wait before retry n+1; the last interval repeats if there are fewer than `max`.
    """

    max: int
    intervals: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.max < 0 or any(i < 0 for i in self.intervals) or not self.intervals:
            raise ValueError("retry: max and intervals must be non-negative, with at least one interval")

    def delay(self, retry_number: int) -> int:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        return self.intervals[min(retry_number, len(self.intervals)) - 1]


# A transient failure (the database restarting, a model API hiccup) usually clears within minutes;
# five tries spread over ~20 minutes ride that out without hammering anything, then the job is parked
# in the failed registry for the operator (`crm jobs`).
DEFAULT_RETRY = RetryPolicy(max=5, intervals=(2, 10, 60, 300, 900))
NO_RETRY = RetryPolicy(max=0)


@dataclass(frozen=True)
class JobInfo:
    """What `crm jobs` shows about one job, whichever backend ran it."""

    id: str
    func: str
    args: tuple[Any, ...]
    priority: str
    status: str
    error: str | None = None
    enqueued_at: datetime | None = None
    ended_at: datetime | None = None
    retries_left: int | None = None


class JobQueue(Protocol):
    """What producers (intake, the executor, the scheduler) and `crm jobs` need from a queue backend."""

    def enqueue_event(self, event_id: str, *, priority: str = SIGNALS) -> bool:
        """Queue process_event(event_id) under the job id `event-<id>`.

        True when the queue has it (newly queued, or already queued/running/parked under that id);
        False, never an exception, when the backend is unreachable: the outbox row stays and
        `jobs.relay.relay_outbox` queues it later. Shared by the backends that subclass JobQueue.
        """
        return (
            self.enqueue(PROCESS_EVENT, event_id, priority=priority, job_id=event_job_id(event_id))
            is not None
        )

    def enqueue(
        self,
        func: str | Callable[..., Any],
        *args: Any,
        priority: str,
        job_id: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        not_before: datetime | None = None,
    ) -> str | None:
        """Queue func(*args) (a dotted path or a module-level function taking ids) at a priority.

        With job_id, a job already known under that id (queued, running, finished or failed) is not
        queued again. With not_before, the job runs no earlier than then (the undo window, policy holds,
        snoozes). Returns the job id, or None when the backend is unreachable.
        """
        ...

    def failed_jobs(self) -> list[JobInfo]:
        """Jobs that used up their retries, newest first."""
        ...

    def job(self, job_id: str) -> JobInfo | None:
        """One job by id, or None if the queue does not know it."""
        ...

    def retry_failed(self, job_id: str) -> bool:
        """Queue a failed job again (with fresh retries); False if it is not in the failed registry."""
        ...

    def depth(self) -> dict[str, int]:
        """Jobs waiting per priority (for /metrics)."""
        ...

    def waiting(self, job_id: str, *, priority: str) -> bool:
        """Whether the job is still in its priority's queue, taken by no worker yet: it has not begun,
        so it will see everything written before now. False when unknown, begun or unreachable."""
        ...

    def ping(self) -> bool:
        """Whether the backend is reachable (for /healthz)."""
        ...


def event_job_id(event_id: str) -> str:
    """The deterministic job id of process_event(event_id)."""
    return EVENT_JOB_PREFIX + event_id


def check_priority(priority: str) -> str:
    """priority, or UnknownPriority naming the known ones."""
    if priority not in PRIORITIES:
        raise UnknownPriority(f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}")
    return priority


def func_path(func: str | Callable[..., Any]) -> str:
    """The dotted path of a job function (RQ stores jobs by path, so must the in-process queue)."""
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def resolve_func(path: str) -> Callable[..., Any]:
    """Import a job function from its dotted path."""
    module, _, name = path.rpartition(".")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def make_queue(settings: Settings) -> JobQueue:
    """RQ when REDIS_URL is set, the in-process queue otherwise. Connects to nothing yet."""
    if settings.redis_url:
        from jobs.redis_queue import RedisJobQueue

        return RedisJobQueue.from_url(settings.redis_url)
    from jobs.inprocess import InProcessJobQueue

    return InProcessJobQueue()
