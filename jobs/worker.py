"""`crm worker`: an RQ worker on the project's queues, highest priority first, plus the outbox relay.

Worker class. The default runs jobs in the worker process itself (RQ's SimpleWorker) with a thread
that heartbeats the running job; `--fork` runs RQ's forking Worker (a work horse per job). Measured
in bench/pipeline_bench.py (docs/benchmarks.md), forking cost 4-6x in latency and throughput on
this machine: every job pays a fork plus a new database connection, because a horse must not use the
parent's pooled connections (it disposes the pool with `engine.dispose(close=False)`, the SQLAlchemy
recipe for forks). Forking also fights the memory layer: an embedded Chroma (SQLite) and an ONNX
embedding model must not be shared across fork, and loading them per job takes seconds. What forking
buys, isolation from a crashing job, is covered here by RQ's retries and by recovery: the heartbeat
thread keeps `last_heartbeat` fresh while a job runs, so when the whole worker dies the job's
heartbeat goes stale, and the relay (jobs.redis_queue.ABANDONED_AFTER) or RQ's own started-registry
cleanup queues it again. With `--fork`, a killed work horse is noticed by its parent at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.worker.base import BaseWorker

from jobs.context import JobContext, current, install
from jobs.queue import PRIORITIES
from jobs.redis_queue import connect, queue_name
from jobs.relay import RELAY_GRACE, RELAY_INTERVAL_S, RelayThread

log = logging.getLogger(__name__)

# The parent heartbeats a running job this often; ABANDONED_AFTER (jobs.redis_queue) is several beats.
JOB_MONITORING_INTERVAL_S = 10
# Waits between attempts to reach Redis again after losing it: quick for a restart, then every 5 s.
REDIS_BACKOFF_S = (1, 2, 5)
# RQ's own wait between attempts to reach Redis while dequeuing grows to a minute by default; capped
# here so a worker is back within seconds of Redis.
MAX_REDIS_WAIT_S = 5.0
# How often a worker cleans RQ's registries (moves jobs of dead workers to retry or failed); RQ's
# default of 10 minutes is long for a solo operator waiting on a reply.
MAINTENANCE_INTERVAL_S = 60


class HeartbeatSimpleWorker(SimpleWorker):
    """SimpleWorker plus a thread that heartbeats the running job, so a dead worker is detectable."""

    # Heartbeats arrive every job_monitoring_interval, so the registry may expire a job soon after
    # they stop (RQ's forking Worker rule) rather than a whole job timeout later (SimpleWorker's).
    get_heartbeat_ttl = BaseWorker.get_heartbeat_ttl
    max_connection_wait_time = MAX_REDIS_WAIT_S

    def execute_job(self, job: Job, queue: Queue) -> None:
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, done), name="job-heartbeat", daemon=True)
        beat.start()
        try:
            super().execute_job(job, queue)
        finally:
            done.set()
            beat.join()

    def _beat(self, job: Job, done: threading.Event) -> None:
        while not done.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job)
            except Exception:  # a missed beat is harmless; a dead thread would look like a dead worker
                log.exception("heartbeat for job %s failed", job.id)


class ForkSafeWorker(Worker):
    """RQ's forking Worker whose work horse drops the inherited database pool before running a job."""

    max_connection_wait_time = MAX_REDIS_WAIT_S

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        current().store.engine.dispose(close=False)
        super().main_work_horse(job, queue)


def project_queues(connection: Redis) -> list[Queue]:
    """The project's RQ queues on connection, highest priority first (the order a worker takes jobs)."""
    return [Queue(queue_name(p), connection=connection) for p in PRIORITIES]


def build_worker(
    ctx: JobContext, redis_url: str, *, fork: bool = False, name: str | None = None
) -> BaseWorker:
    """A worker on the project's queues with ctx installed as this process's job context."""
    install(ctx)
    connection = connect(redis_url, producer=False)
    worker_class: type[BaseWorker] = ForkSafeWorker if fork else HeartbeatSimpleWorker
    return worker_class(
        project_queues(connection),
        connection=connection,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL_S,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
    )


def run_worker(
    ctx: JobContext,
    redis_url: str,
    *,
    burst: bool = False,
    fork: bool = False,
    relay: bool = True,
    relay_interval: float = RELAY_INTERVAL_S,
    name: str | None = None,
    logging_level: str = "INFO",
) -> bool:
    """Work until stopped (or, with burst, until the queues are empty); returns whether any job ran.

    With relay, a background thread re-queues lost outbox rows every relay_interval seconds, so a lone
    worker recovers work a dead web process or a Redis outage left behind. When Redis goes away (a
    restart, a network blip), the worker waits for it with backoff, one log line per attempt, and
    carries on with a fresh connection: a job interrupted by the outage is recovered like one whose
    worker died (RQ's registries, the relay).
    """
    thread = RelayThread(ctx, interval=relay_interval, older_than=RELAY_GRACE) if relay else None
    if thread is not None:
        thread.start()
    stop = threading.Event()
    outages = 0
    try:
        while True:
            worker = build_worker(ctx, redis_url, fork=fork, name=name)
            try:
                kwargs: dict[str, Any] = {
                    "burst": burst,
                    "with_scheduler": True,
                    "logging_level": logging_level,
                }
                return bool(worker.work(**kwargs))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                outages += 1
                log.warning("lost Redis at %s (%s); waiting for it to come back", redis_url, exc)
            _stop_on_signals(stop)
            if not wait_for_redis(redis_url, stop) or burst:
                return False
            with contextlib.suppress(RedisError):
                worker.register_death()  # the old registration, so the name can be used again
            log.info("Redis is back; worker resumes (outage %d)", outages)
    finally:
        if thread is not None:
            thread.stop()


def wait_for_redis(redis_url: str, stop: threading.Event) -> bool:
    """Ping Redis with backoff until it answers (True) or `stop` is set (False); a line per attempt."""
    for attempt in itertools.count(1):
        delay = REDIS_BACKOFF_S[min(attempt, len(REDIS_BACKOFF_S)) - 1]
        log.warning("Redis at %s unreachable; retrying in %ss (attempt %d)", redis_url, delay, attempt)
        if stop.wait(delay):
            return False
        client = connect(redis_url)
        try:
            if client.ping():
                return True
        except RedisError:
            continue
        finally:
            client.close()
    return False  # pragma: no cover - the loop only ends by returning


def _stop_on_signals(stop: threading.Event) -> None:
    """While waiting for Redis, SIGINT/SIGTERM end the wait (RQ's own handlers belong to a dead worker)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
