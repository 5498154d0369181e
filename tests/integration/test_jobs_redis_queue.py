"""The RQ backend against a real Redis: priority order, one job per event, retries, the failed registry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis as redis_lib
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from jobs import context
from jobs.intake import IntakeKicker
from jobs.queue import DECISIONS, HOUSEKEEPING, SIGNALS, RetryPolicy, event_job_id
from jobs.redis_queue import RedisJobQueue, queue_name
from jobs.worker import project_queues
from tests.integration.jobs_harness import free_port

ran: list[str] = []
failures_left: dict[str, int] = {}


def record(tag: str) -> None:
    ran.append(tag)


def flaky(tag: str) -> None:
    ran.append(tag)
    if failures_left.get(tag, 0) > 0:
        failures_left[tag] -= 1
        raise ConnectionError(f"transient failure of {tag}")


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisJobQueue]:
    ran.clear()
    failures_left.clear()
    q = RedisJobQueue.from_url(redis_url)
    yield q
    q.connection.close()


def _burst(queue: RedisJobQueue) -> None:
    SimpleWorker(project_queues(queue.connection), connection=queue.connection).work(
        burst=True, logging_level="WARNING"
    )


def test_the_worker_takes_decisions_before_signals_before_housekeeping(queue: RedisJobQueue) -> None:
    queue.enqueue(record, "house", priority=HOUSEKEEPING)
    queue.enqueue(record, "signal-1", priority=SIGNALS)
    queue.enqueue(record, "decision-1", priority=DECISIONS)
    queue.enqueue(record, "signal-2", priority=SIGNALS)
    queue.enqueue(record, "decision-2", priority=DECISIONS)
    assert queue.depth() == {DECISIONS: 2, SIGNALS: 2, HOUSEKEEPING: 1}
    _burst(queue)
    assert ran == ["decision-1", "decision-2", "signal-1", "signal-2", "house"]


def test_an_event_is_queued_once_whatever_the_number_of_enqueues(queue: RedisJobQueue) -> None:
    event_id = "6f1c1f43-5d1c-4a59-9a57-2a3f2a0e8f11"
    assert all(queue.enqueue_event(event_id) for _ in range(5))
    assert queue.depth()[SIGNALS] == 1
    job = Job.fetch(event_job_id(event_id), connection=queue.connection)
    assert (job.func_name, tuple(job.args), job.origin) == (
        "jobs.process.process_event",
        (event_id,),
        "crm-signals",
    )


def test_an_unreachable_redis_answers_false_quickly_never_raises() -> None:
    dead = RedisJobQueue.from_url(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    assert dead.enqueue_event("e1") is False
    assert dead.enqueue(record, "x", priority=DECISIONS, job_id="execute-1") is None
    assert all(dead.enqueue_event(f"e{n}") is False for n in range(200))
    assert time.monotonic() - started < 2.0
    assert dead.ping() is False


def test_a_failing_job_is_retried_then_parked_in_the_failed_registry_and_retried_from_there(
    queue: RedisJobQueue,
) -> None:
    failures_left["x"] = 3
    queue.enqueue(flaky, "x", priority=DECISIONS, job_id="execute-p9", retry=RetryPolicy(max=1))
    _burst(queue)
    assert ran == ["x", "x"]  # the first run and one retry
    [failed] = queue.failed_jobs()
    assert (failed.id, failed.priority, failed.status) == ("execute-p9", DECISIONS, "failed")
    assert failed.error is not None and "transient failure of x" in failed.error
    # A deterministic id still failed is not queued again behind the operator's back.
    assert queue.enqueue(flaky, "x", priority=DECISIONS, job_id="execute-p9") == "execute-p9"
    assert queue.depth()[DECISIONS] == 0

    assert queue.retry_failed("execute-p9")
    info = queue.job("execute-p9")
    assert info is not None and info.status == "queued" and info.retries_left == 1
    _burst(queue)  # fails once more (3rd failure), its restored retry succeeds
    assert ran == ["x", "x", "x", "x"]
    assert queue.failed_jobs() == []
    assert not queue.retry_failed("execute-p9")
    assert not queue.retry_failed("never-existed")


def test_a_retry_with_backoff_is_scheduled_for_later(queue: RedisJobQueue) -> None:
    failures_left["y"] = 1
    queue.enqueue(flaky, "y", priority=SIGNALS, job_id="backoff", retry=RetryPolicy(max=2, intervals=(30,)))
    before = datetime.now(UTC)
    _burst(queue)
    registry = ScheduledJobRegistry(queue_name(SIGNALS), connection=queue.connection)
    assert registry.get_job_ids() == ["backoff"]
    due = registry.get_scheduled_time("backoff")
    assert 25 <= (due - before).total_seconds() <= 35
    assert queue.job("backoff") is not None


def test_job_functions_find_their_context_in_the_worker_process(queue: RedisJobQueue) -> None:
    context.uninstall()
    queue.enqueue("jobs.process.process_event", "missing", priority=SIGNALS, retry=RetryPolicy(max=0))
    _burst(queue)
    [failed] = queue.failed_jobs()
    assert failed.error is not None and "NoJobContext" in failed.error


def test_queues_live_under_the_project_prefix(queue: RedisJobQueue, redis_url: str) -> None:
    queue.enqueue(record, "x", priority=HOUSEKEEPING)
    client = redis_lib.Redis.from_url(redis_url)
    assert client.llen("rq:queue:crm-housekeeping") == 1


def test_a_job_is_waiting_until_a_worker_takes_it_off_its_queue(queue: RedisJobQueue) -> None:
    job_id = queue.enqueue(record, "x", priority=DECISIONS)
    assert job_id is not None
    assert queue.waiting(job_id, priority=DECISIONS)
    assert not queue.waiting(job_id, priority=SIGNALS), "another priority's queue"
    assert not queue.waiting("no-such-job", priority=DECISIONS)
    _burst(queue)
    assert ran == ["x"] and not queue.waiting(job_id, priority=DECISIONS)


def test_the_intake_kicker_queues_no_second_job_while_its_first_still_waits(queue: RedisJobQueue) -> None:
    decisions = queue.queues[DECISIONS]
    kicker = IntakeKicker(queue, window=0.01)
    try:
        kicker.kick()
        _wait(lambda: decisions.count == 1)
        for _ in range(5):  # each after the window: five more chances to queue a job
            kicker.kick()
            time.sleep(0.05)
        assert decisions.count == 1, "the first job, not begun yet, covers these rows"

        first = queue.connection.lpop(decisions.key)  # a worker takes it: rows staged now need a job
        kicker.kick()
        _wait(lambda: decisions.count == 1)
        assert decisions.get_job_ids()[0] != first.decode()
    finally:
        kicker.stop()


def _wait(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
