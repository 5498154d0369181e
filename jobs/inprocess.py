"""The in-process backend of JobQueue: worker threads in this process, with RQ's semantics.

The embedded default (no REDIS_URL) behaves like production: jobs are taken highest priority first,
FIFO within a priority; a failing job is retried with the same backoff policy and, when out of
retries, parked in a failed registry that can be listed and retried; a job id already known is not
queued again. `join(timeout)` waits until everything started (retries included) has finished, which
is how `crm run` fed from a pipe knows it may exit. Jobs run the same module-level functions RQ runs.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from jobs.queue import (
    DEFAULT_RETRY,
    PRIORITIES,
    JobInfo,
    JobQueue,
    RetryPolicy,
    check_priority,
    func_path,
    resolve_func,
)
from store.events import utcnow

log = logging.getLogger(__name__)

# One thread keeps the priority order strict and SQLite writes uncontended; a deployment that wants
# parallel jobs runs Redis and several `crm worker` processes.
DEFAULT_THREADS = 1
# Finished job ids remembered (so a repeated deterministic id is not run twice); the oldest are forgotten.
FINISHED_MEMORY = 10_000


@dataclass
class _Job:
    id: str
    func: str
    args: tuple[Any, ...]
    priority: str
    retry: RetryPolicy
    enqueued_at: datetime
    attempts: int = 0
    status: str = "queued"
    error: str | None = None
    ended_at: datetime | None = None

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            func=self.func,
            args=self.args,
            priority=self.priority,
            status=self.status,
            error=self.error,
            enqueued_at=self.enqueued_at,
            ended_at=self.ended_at,
            retries_left=max(self.retry.max - max(self.attempts - 1, 0), 0),
        )


@dataclass(order=True)
class _Ready:
    rank: int
    seq: int
    job: _Job = field(compare=False)


@dataclass(order=True)
class _Delayed:
    due: float
    seq: int
    job: _Job = field(compare=False)


class InProcessJobQueue(JobQueue):
    """JobQueue on threads of this process. Threads start with the first job (or `start()`)."""

    def __init__(self, threads: int = DEFAULT_THREADS, clock: Callable[[], float] = time.monotonic) -> None:
        self.threads = threads
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: list[_Ready] = []
        self._delayed: list[_Delayed] = []
        self._known: dict[str, _Job] = {}  # queued, delayed, running and failed jobs by id
        self._finished: dict[str, _Job] = {}
        self._failed: dict[str, _Job] = {}
        self._running = 0
        self._seq = itertools.count()
        self._workers: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        with self._cond:
            if self._workers:
                return
            self._stopping = False
            for n in range(self.threads):
                thread = threading.Thread(target=self._work, name=f"crm-job-worker-{n}", daemon=True)
                self._workers.append(thread)
                thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the threads after their current job; queued jobs stay queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            workers, self._workers = self._workers, []
        for thread in workers:
            thread.join(timeout)

    def enqueue(
        self,
        func: str | Callable[..., Any],
        *args: Any,
        priority: str,
        job_id: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        not_before: datetime | None = None,
    ) -> str | None:
        """Queue func(*args); a job id already known (queued, running, done, failed) is not queued again.

        With not_before the job waits in the delayed heap until then (lost if this process stops: the
        callers' sweeps, e.g. jobs.proposal_service.recover_stalled, queue such work again on the next start).
        """
        rank = PRIORITIES.index(check_priority(priority))
        seq = next(self._seq)
        with self._cond:
            if job_id is not None and (job_id in self._known or job_id in self._finished):
                return job_id
            job = _Job(
                id=job_id or f"job-{seq}",
                func=func_path(func),
                args=args,
                priority=priority,
                retry=retry,
                enqueued_at=utcnow(),
            )
            self._known[job.id] = job
            delay = (not_before - utcnow()).total_seconds() if not_before is not None else 0.0
            if delay > 0:
                job.status = "scheduled"
                heapq.heappush(self._delayed, _Delayed(self._clock() + delay, seq, job))
            else:
                heapq.heappush(self._ready, _Ready(rank, seq, job))
            self._cond.notify()
        self.start()
        return job.id

    def join(self, timeout: float | None = None, *, delayed: bool | Literal["retries"] = True) -> bool:
        """Wait until no job is queued, waiting for a retry or running; False on timeout.

        With delayed=False, jobs waiting for a later time (an undo window, a retry) are not waited for;
        with delayed="retries", only the retries of jobs that failed are (not a job queued to run later,
        such as a snoozed proposal's wake-up an hour from now).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def later() -> bool:
            if delayed == "retries":
                return any(entry.job.attempts for entry in self._delayed)
            return bool(delayed and self._delayed)

        with self._cond:
            while self._ready or self._running or later():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    drain = join

    def failed_jobs(self) -> list[JobInfo]:
        """Jobs out of retries, newest first."""
        with self._cond:
            jobs = sorted(self._failed.values(), key=lambda j: j.ended_at or j.enqueued_at, reverse=True)
            return [job.info() for job in jobs]

    def job(self, job_id: str) -> JobInfo | None:
        """One job by id (finished ones while remembered)."""
        with self._cond:
            job = self._known.get(job_id) or self._finished.get(job_id)
            return job.info() if job is not None else None

    def retry_failed(self, job_id: str) -> bool:
        """Queue a failed job again with fresh retries."""
        with self._cond:
            job = self._failed.pop(job_id, None)
            if job is None:
                return False
            fresh = replace(job, attempts=0, status="queued", error=None, ended_at=None)
            self._known[job_id] = fresh
            rank = PRIORITIES.index(job.priority)
            heapq.heappush(self._ready, _Ready(rank, next(self._seq), fresh))
            self._cond.notify()
        self.start()
        return True

    def depth(self) -> dict[str, int]:
        """Jobs waiting (or waiting for a retry) per priority."""
        with self._cond:
            counts = dict.fromkeys(PRIORITIES, 0)
            for job in [entry.job for entry in self._ready] + [entry.job for entry in self._delayed]:
                counts[job.priority] += 1
            return counts

    def waiting(self, job_id: str, *, priority: str) -> bool:
        """Whether job_id is queued and no thread has taken it yet."""
        with self._cond:
            job = self._known.get(job_id)
            return job is not None and job.priority == priority and job.status == "queued"

    def ping(self) -> bool:
        """Always reachable."""
        return True

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                resolve_func(job.func)(*job.args)
            except Exception:
                self._failed_attempt(job, traceback.format_exc())
            else:
                self._finish(job)

    def _next(self) -> _Job | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = self._clock()
                while self._delayed and self._delayed[0].due <= now:
                    delayed = heapq.heappop(self._delayed)
                    rank = PRIORITIES.index(delayed.job.priority)
                    heapq.heappush(self._ready, _Ready(rank, delayed.seq, delayed.job))
                if self._ready:
                    job = heapq.heappop(self._ready).job
                    job.attempts += 1
                    job.status = "started"
                    self._running += 1
                    return job
                wait = self._delayed[0].due - now if self._delayed else None
                self._cond.wait(wait)

    def _finish(self, job: _Job) -> None:
        with self._cond:
            job.status, job.ended_at = "finished", utcnow()
            self._known.pop(job.id, None)
            self._finished[job.id] = job
            if len(self._finished) > FINISHED_MEMORY:
                self._finished.pop(next(iter(self._finished)))
            self._running -= 1
            self._cond.notify_all()

    def _failed_attempt(self, job: _Job, error: str) -> None:
        with self._cond:
            job.error, job.ended_at = error, utcnow()
            retry_number = job.attempts  # attempts so far; the next run is retry number `attempts`
            if retry_number <= job.retry.max:
                delay = job.retry.delay(retry_number)
                job.status = "scheduled"
                heapq.heappush(self._delayed, _Delayed(self._clock() + delay, next(self._seq), job))
                log.warning("job %s failed (attempt %d); retry in %ss", job.id, job.attempts, delay)
            else:
                job.status = "failed"
                self._failed[job.id] = job
                log.error("job %s failed for good after %d attempts", job.id, job.attempts)
            self._running -= 1
            self._cond.notify_all()
