"""The in-process queue behaves like RQ: priority order, retries with backoff, a failed registry, drain."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.run import wait_for_work
from jobs import context
from jobs.handlers import MEMORY
from jobs.inprocess import InProcessJobQueue
from jobs.queue import DECISIONS, HOUSEKEEPING, NO_RETRY, SIGNALS, RetryPolicy, UnknownPriority
from jobs.relay import relay_outbox
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import RecordingSubscriber, app_for, lead

# Module-level job functions (jobs are stored by dotted path, as RQ stores them).
ran: list[tuple[str, float]] = []
failures_left: dict[str, int] = {}
gate = threading.Event()


def record(tag: str) -> None:
    ran.append((tag, time.monotonic()))


def wait_for_gate() -> None:
    gate.wait(10)


def flaky(tag: str) -> None:
    ran.append((tag, time.monotonic()))
    if failures_left.get(tag, 0) > 0:
        failures_left[tag] -= 1
        raise ConnectionError(f"transient failure of {tag}")


@pytest.fixture
def queue() -> Iterator[InProcessJobQueue]:
    ran.clear()
    failures_left.clear()
    gate.clear()
    q = InProcessJobQueue()
    yield q
    gate.set()
    q.stop(timeout=5)


def test_jobs_run_highest_priority_first_and_fifo_within_a_priority(queue: InProcessJobQueue) -> None:
    queue.enqueue(wait_for_gate, priority=SIGNALS)  # occupies the single worker thread
    time.sleep(0.1)
    queue.enqueue(record, "house-1", priority=HOUSEKEEPING)
    queue.enqueue(record, "signal-1", priority=SIGNALS)
    queue.enqueue(record, "decision-1", priority=DECISIONS)
    queue.enqueue(record, "signal-2", priority=SIGNALS)
    queue.enqueue(record, "decision-2", priority=DECISIONS)
    assert queue.depth() == {DECISIONS: 2, SIGNALS: 2, HOUSEKEEPING: 1}
    gate.set()
    assert queue.join(10)
    assert [tag for tag, _ in ran] == ["decision-1", "decision-2", "signal-1", "signal-2", "house-1"]


def test_a_failing_job_is_retried_after_its_backoff(queue: InProcessJobQueue) -> None:
    failures_left["a"] = 2
    queue.enqueue(flaky, "a", priority=SIGNALS, retry=RetryPolicy(max=3, intervals=(0, 1)))
    assert queue.join(10)
    times = [at for tag, at in ran if tag == "a"]
    assert len(times) == 3
    assert times[1] - times[0] < 0.5  # first retry: no wait
    assert times[2] - times[1] >= 0.95  # second retry: one second later
    assert queue.failed_jobs() == []


def test_a_job_out_of_retries_is_parked_in_the_failed_registry_and_can_be_retried(
    queue: InProcessJobQueue,
) -> None:
    failures_left["b"] = 2
    job_id = queue.enqueue(flaky, "b", priority=DECISIONS, job_id="execute-p1", retry=RetryPolicy(max=1))
    assert queue.join(10)
    [failed] = queue.failed_jobs()
    assert (failed.id, failed.status, failed.priority) == ("execute-p1", "failed", DECISIONS)
    assert failed.error is not None and "transient failure of b" in failed.error
    # Known under its id while failed: queueing it again does not run it again.
    assert queue.enqueue(flaky, "b", priority=DECISIONS, job_id="execute-p1") == job_id
    assert queue.join(5)
    assert len(ran) == 2

    assert queue.retry_failed("execute-p1")
    assert queue.join(10)
    assert queue.failed_jobs() == []
    assert len(ran) == 3
    info = queue.job("execute-p1")
    assert info is not None and info.status == "finished"
    assert not queue.retry_failed("execute-p1")
    assert not queue.retry_failed("no-such-job")


def test_a_job_id_already_known_is_not_queued_twice(queue: InProcessJobQueue) -> None:
    for _ in range(3):
        assert queue.enqueue(record, "once", priority=SIGNALS, job_id="once") == "once"
    assert queue.join(5)
    assert queue.enqueue(record, "once", priority=SIGNALS, job_id="once") == "once"
    assert queue.join(5)
    assert [tag for tag, _ in ran] == ["once"]


def test_join_times_out_while_work_is_running_and_returns_true_when_drained(
    queue: InProcessJobQueue,
) -> None:
    queue.enqueue(wait_for_gate, priority=SIGNALS)
    assert queue.join(0.2) is False
    gate.set()
    assert queue.drain(5) is True


def test_an_unknown_priority_is_refused(queue: InProcessJobQueue) -> None:
    with pytest.raises(UnknownPriority, match="decisions, signals, housekeeping"):
        queue.enqueue(record, "x", priority="urgent", retry=NO_RETRY)


def test_events_flow_through_the_in_process_queue_and_the_relay(
    store: EventStore, make_settings: type[Settings]
) -> None:
    queue = InProcessJobQueue()
    recorder = RecordingSubscriber()
    ctx = app_for(store, make_settings(), queue, {MEMORY: recorder})
    context.install(ctx)
    try:
        events = [lead(store, n) for n in range(5)]
        for event in events[:3]:  # the other two "lost" between commit and enqueue
            assert queue.enqueue_event(event.id)
        assert queue.join(10)
        assert relay_outbox(ctx, older_than=_zero()) == 2
        assert queue.join(10)
        assert relay_outbox(ctx, older_than=_zero()) == 0
        assert sorted(recorder.calls) == sorted(e.id for e in events)
    finally:
        queue.stop(5)
        context.uninstall()


def _zero() -> timedelta:
    return timedelta(0)


def test_a_job_is_waiting_until_a_thread_takes_it(queue: InProcessJobQueue) -> None:
    busy = queue.enqueue(wait_for_gate, priority=SIGNALS)  # occupies the single worker thread
    time.sleep(0.1)
    later = queue.enqueue(record, "later", priority=DECISIONS)
    assert busy is not None and later is not None
    assert queue.waiting(later, priority=DECISIONS)
    assert not queue.waiting(busy, priority=SIGNALS), "taken by the thread"
    assert not queue.waiting(later, priority=SIGNALS) and not queue.waiting("no-such-job", priority=DECISIONS)
    gate.set()
    assert queue.join(10)
    assert not queue.waiting(later, priority=DECISIONS), "finished"


def test_join_for_retries_waits_for_a_failed_jobs_retry_but_not_for_a_job_queued_for_later(
    queue: InProcessJobQueue,
) -> None:
    """`crm run` at end of input waits for work the operator is owed (a retry), not for work scheduled
    for later by design (a snoozed proposal's wake-up in an hour, which the minute sweep brings back)."""
    queue.enqueue(record, "in-an-hour", priority=SIGNALS, not_before=datetime.now(UTC) + timedelta(hours=1))
    assert queue.join(0.2) is False  # every delayed job: still waiting
    assert queue.join(5, delayed="retries") is True
    failures_left["flaky"] = 1
    queue.enqueue(flaky, "flaky", priority=SIGNALS, retry=RetryPolicy(max=2, intervals=(1,)))
    assert queue.join(10, delayed="retries") is True
    assert [tag for tag, _ in ran] == ["flaky", "flaky"]  # returned only after the retry ran


def test_crm_runs_wait_at_end_of_input_skips_later_work_and_ends_when_interrupted(
    queue: InProcessJobQueue, store: EventStore, make_settings: type[Settings]
) -> None:
    container = app_for(store, make_settings(), queue)
    queue.enqueue(record, "wake-up", priority=SIGNALS, not_before=datetime.now(UTC) + timedelta(hours=1))
    said: list[str] = []
    assert wait_for_work(container, limit=3, say=said.append) is True
    assert said == []
    queue.enqueue(wait_for_gate, priority=SIGNALS)  # work that does not end by itself
    interrupted = threading.Event()
    threading.Timer(0.3, interrupted.set).start()
    assert wait_for_work(container, limit=600, interrupted=interrupted, say=said.append) is False
    assert said == [
        "waiting for queued work to finish before stopping (Ctrl-C to stop now; it resumes on the next start)"
    ]
