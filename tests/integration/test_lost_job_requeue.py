"""A job whose worker died is queued again by the relay, however the worker died.

Found by bench/fault_run.py (scenario 2, kill -9 of a worker; scenario 4, Postgres connections cut).

An execution record gone: RQ keeps an execution in the job's execution registry 60 s longer than the
execution record itself, so for about a minute after a killed worker's heartbeat TTL ran out,
`Job.get_executions()` names a record that is gone and raises ValueError: every relay run in that minute
failed on the first such outbox row, so nothing behind it was re-queued.

A job taken but not started: a worker moves the job from its queue to RQ's intermediate queue, then marks
it started. Killed in between, it leaves the job "queued" on no queue with no heartbeat; the relay counts
it as queued and does not queue it again, and RQ itself looks at the intermediate queue only in its
10-minute maintenance. In the run an approval waited almost 4 minutes, and was sent only because Redis
was then restarted empty.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus

from jobs.queue import DECISIONS, NO_RETRY, event_job_id
from jobs.redis_queue import RedisJobQueue
from jobs.worker import project_queues


@pytest.mark.xfail(strict=True, raises=ValueError, reason="RedisJobQueue._enqueue lets RQ's ValueError out")
def test_a_lost_job_whose_execution_record_expired_is_queued_again(redis_url: str) -> None:
    queue = RedisJobQueue.from_url(redis_url, abandoned_after=timedelta(seconds=1))
    try:
        assert queue.enqueue_event("evt-1")
        job = Job.fetch(event_job_id("evt-1"), connection=queue.connection)
        # A worker takes the job, beats once, and is killed; then its execution record's TTL runs out.
        with queue.connection.pipeline() as pipe:
            execution = Execution.create(job, ttl=60, pipeline=pipe, worker_name="killed")
            job.set_status(JobStatus.STARTED, pipeline=pipe)
            job.heartbeat(datetime.now(UTC) - timedelta(seconds=30), ttl=60, pipeline=pipe)
            pipe.execute()
        queue.connection.delete(execution.key)

        assert queue.enqueue_event("evt-1")
    finally:
        queue.connection.close()


@pytest.mark.xfail(
    strict=True, reason="RedisJobQueue counts a job stranded in RQ's intermediate queue as queued"
)
def test_a_job_taken_by_a_worker_killed_before_it_started_is_queued_again(redis_url: str) -> None:
    queue = RedisJobQueue.from_url(redis_url, abandoned_after=timedelta(seconds=1))
    try:
        assert queue.enqueue_event("evt-2")
        job = Job.fetch(event_job_id("evt-2"), connection=queue.connection)
        rq_queue = next(q for q in queue.ordered_queues() if job.id in q.job_ids)
        # What a worker's dequeue does (BLMOVE to the intermediate queue); then kill -9.
        queue.connection.lmove(rq_queue.key, rq_queue.intermediate_queue_key)
        time.sleep(1.5)  # past the queue's abandoned_after

        assert queue.enqueue_event("evt-2")  # the relay's call for the event's outbox row
        assert sum(queue.depth().values()) == 1, "the job is on a queue again"
    finally:
        queue.connection.close()


def fails() -> None:
    raise ConnectionError("the database connection was cut")


@pytest.mark.xfail(
    strict=True, reason="RedisJobQueue counts a failed job as queued: the same id is never run"
)
def test_an_execution_whose_job_failed_before_it_started_is_queued_again(redis_url: str) -> None:
    # In the run, Postgres connections were cut under a worker's first execute() of an approval: the job
    # (no RQ retries) went to the failed registry, and the sweep's schedule_execution, asking for the same
    # job id, was told it is known; the proposal stayed approved with no attempt, and no notice.
    queue = RedisJobQueue.from_url(redis_url)
    try:
        job_id = "execute-prp_fault-0"
        queue.enqueue(fails, priority=DECISIONS, job_id=job_id, retry=NO_RETRY)
        SimpleWorker(project_queues(queue.connection), connection=queue.connection).work(
            burst=True, logging_level="CRITICAL"
        )
        assert [info.id for info in queue.failed_jobs()] == [job_id]

        queue.enqueue(fails, priority=DECISIONS, job_id=job_id, retry=NO_RETRY)  # the sweep's call
        assert sum(queue.depth().values()) == 1, "the approval's execution is on a queue again"
    finally:
        queue.connection.close()
