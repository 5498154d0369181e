"""The RQ backend of JobQueue: one RQ queue per priority on one explicitly passed Redis connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from jobs.queue import (
    DEFAULT_RETRY,
    PRIORITIES,
    JobInfo,
    JobQueue,
    RetryPolicy,
    check_priority,
    func_path,
)

log = logging.getLogger(__name__)

# rq:queue:crm-signals etc.: a Redis shared with other applications keeps our queues apart.
QUEUE_PREFIX = "crm-"
# A producer (an HTTP request) must not hang on a dead Redis: fail fast, the relay catches up later.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0
# After a failure, producers skip Redis for this long and answer False at once, so a burst of signals
# during an outage costs each request nothing (their outbox rows wait for the relay).
OUTAGE_BACKOFF_S = 1.0
# A job that runs longer than this is killed by its worker (and retried): process_event is a few
# database round trips plus subscribers that call models with their own shorter timeouts.
JOB_TIMEOUT_S = 300
# Finished jobs are kept briefly (to answer `crm jobs show`), failed ones for a month.
RESULT_TTL_S = 600
FAILURE_TTL_S = 30 * 24 * 3600
# A started job whose worker has not sent a heartbeat for this long lost its whole worker (a machine
# or container killed); the relay takes it over. A killed work horse alone is handled by RQ at once.
ABANDONED_AFTER = timedelta(seconds=90)


def queue_name(priority: str) -> str:
    """The RQ queue name of a priority."""
    return QUEUE_PREFIX + priority


def connect(url: str, *, producer: bool = True) -> Redis:
    """A Redis client for url; producers get short timeouts and no retries (the outbox is the retry)."""
    if producer:
        return Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=RedisRetry(NoBackoff(), 0),
        )
    return Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)


class RedisJobQueue(JobQueue):
    """JobQueue on RQ 2. Nothing connects until the first call."""

    def __init__(self, connection: Redis, *, abandoned_after: timedelta = ABANDONED_AFTER) -> None:
        self.connection = connection
        self.abandoned_after = abandoned_after
        self.queues = {p: Queue(queue_name(p), connection=connection) for p in PRIORITIES}
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisJobQueue:
        """A queue on a producer connection to url."""
        return cls(connect(url), **kwargs)

    def ordered_queues(self) -> list[Queue]:
        """The RQ queues highest priority first: the order a worker listens in."""
        return [self.queues[p] for p in PRIORITIES]

    def enqueue(
        self,
        func: str | Callable[..., Any],
        *args: Any,
        priority: str,
        job_id: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        not_before: datetime | None = None,
    ) -> str | None:
        """Queue func(*args); a job id already known is not queued again. None when Redis is down.

        With not_before the job waits in RQ's scheduled registry (any worker's scheduler moves it to its
        queue then), so it survives the death of the process that queued it.
        """
        check_priority(priority)
        if time.monotonic() < self._down_until:
            return None
        try:
            return self._enqueue(func_path(func), args, priority, job_id, retry, not_before)
        except RedisError as exc:
            self._down_until = time.monotonic() + OUTAGE_BACKOFF_S
            log.warning("redis unreachable, job %s left to the relay: %s", job_id or func_path(func), exc)
            return None

    def _enqueue(
        self,
        func: str,
        args: tuple[Any, ...],
        priority: str,
        job_id: str | None,
        retry: RetryPolicy,
        not_before: datetime | None = None,
    ) -> str:
        queue = self.queues[priority]
        if job_id is not None:
            existing = self._fetch(job_id)
            if existing is not None and not self._lost(existing):
                return job_id
            if existing is not None:
                log.warning("job %s lost its worker; queueing it again", job_id)
                self._forget(existing, queue)
        options: dict[str, Any] = {
            "args": args,
            "job_id": job_id,
            "timeout": JOB_TIMEOUT_S,
            "result_ttl": RESULT_TTL_S,
            "failure_ttl": FAILURE_TTL_S,
            "retry": Retry(max=retry.max, interval=list(retry.intervals)) if retry.max else None,
            "meta": {"priority": priority, "retry_max": retry.max},
        }
        if not_before is not None and not_before > datetime.now(UTC):
            job = queue.create_job(func, status=JobStatus.SCHEDULED, **options)
            return queue.schedule_job(job, not_before).id
        return queue.enqueue_call(func, **options).id

    def _fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return None

    def _lost(self, job: Job) -> bool:
        """Whether a known job will never run unless queued again: its worker died while running it, or
        died between taking it from its queue and starting it (RQ's intermediate queue)."""
        if self._abandoned(job):
            return True
        if job.get_status(refresh=False) != JobStatus.QUEUED:
            return False
        queue = self.queues.get(_priority_of(job))
        if queue is None or self.connection.lpos(queue.key, job.id) is not None:
            return False
        taken = _aware(job.enqueued_at) or datetime.now(UTC)
        return datetime.now(UTC) - taken > self.abandoned_after

    def _forget(self, job: Job, queue: Queue) -> None:
        """Clear what RQ still holds of a lost job, so it can be queued again under its id."""
        origin = self.queues.get(_priority_of(job), queue)
        try:
            StartedJobRegistry(queue=origin).remove_executions(job)
        except ValueError:  # an execution record already expired: nothing left to remove
            log.info("job %s has no execution record left", job.id)
        self.connection.lrem(origin.intermediate_queue_key, 0, job.id)

    def _abandoned(self, job: Job) -> bool:
        if job.get_status(refresh=False) != JobStatus.STARTED or job.last_heartbeat is None:
            return False
        beat = job.last_heartbeat if job.last_heartbeat.tzinfo else job.last_heartbeat.replace(tzinfo=UTC)
        return datetime.now(UTC) - beat > self.abandoned_after

    def failed_jobs(self) -> list[JobInfo]:
        """Jobs in RQ's failed registries, newest first."""
        found: list[JobInfo] = []
        for queue in self.ordered_queues():
            ids = FailedJobRegistry(queue=queue).get_job_ids()
            found += [_info(job) for job in Job.fetch_many(ids, connection=self.connection) if job]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda info: info.ended_at or epoch, reverse=True)

    def job(self, job_id: str) -> JobInfo | None:
        """One job by id."""
        job = self._fetch(job_id)
        return _info(job) if job is not None else None

    def retry_failed(self, job_id: str) -> bool:
        """Requeue a failed job with its retries restored."""
        job = self._fetch(job_id)
        if job is None:
            return False
        job.retries_left = int(job.meta.get("retry_max", 0)) or None
        queue = self.queues.get(_priority_of(job))
        if queue is None:
            return False
        try:
            FailedJobRegistry(queue=queue).requeue(job)
        except InvalidJobOperation:
            return False
        return True

    def depth(self) -> dict[str, int]:
        """Jobs waiting per priority."""
        return {p: q.count for p, q in self.queues.items()}

    def waiting(self, job_id: str, *, priority: str) -> bool:
        """Whether job_id is still in the priority's RQ queue: a worker takes a job off the queue (into
        its intermediate queue) before it starts it. One round trip; False while Redis is down."""
        if time.monotonic() < self._down_until:
            return False
        try:
            return self.connection.lpos(self.queues[check_priority(priority)].key, job_id) is not None
        except RedisError:
            return False

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.connection.ping())
        except RedisError:
            return False


def _priority_of(job: Job) -> str:
    meta_priority = job.meta.get("priority")
    if isinstance(meta_priority, str):
        return meta_priority
    origin = job.origin or ""
    return origin.removeprefix(QUEUE_PREFIX)


def _info(job: Job) -> JobInfo:
    return JobInfo(
        id=job.id,
        func=job.func_name or "?",
        args=tuple(job.args),
        priority=_priority_of(job),
        status=_status(job),
        error=_last_error(job),
        enqueued_at=_aware(job.enqueued_at),
        ended_at=_aware(job.ended_at),
        retries_left=job.retries_left,
    )


def _status(job: Job) -> str:
    status = job.get_status(refresh=False)
    return status.value if isinstance(status, JobStatus) else str(status or "unknown")


def _last_error(job: Job) -> str | None:
    result = job.latest_result()
    if result is not None and result.exc_string:
        return str(result.exc_string)
    return None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
