"""`crm jobs` (list, show, retry, relay) and `crm worker --burst` as real processes on a real Redis db."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import SimpleWorker
from sqlalchemy import select

from jobs import context
from jobs.queue import NO_RETRY, SIGNALS
from jobs.redis_queue import RedisJobQueue
from jobs.worker import project_queues
from store import tables as t
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import app_for, lead

ROOT = Path(__file__).resolve().parents[2]
CRM = [sys.executable, "-c", "from bot.cli import main; main()"]


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisJobQueue]:
    q = RedisJobQueue.from_url(redis_url)
    yield q
    q.connection.close()


def crm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT), **env}
    if "REDIS_URL" not in env:
        full_env.pop("REDIS_URL", None)
    return subprocess.run(
        [*CRM, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def _fail_jobs(queue: RedisJobQueue, store: EventStore, settings: Settings, *ids: str) -> None:
    """Park jobs in the failed registry: process_event of events the log does not hold."""
    ctx = app_for(store, settings, queue)
    context.install(ctx)
    try:
        for job_id in ids:
            queue.enqueue(
                "jobs.process.process_event",
                f"no-such-{job_id}",
                priority=SIGNALS,
                job_id=job_id,
                retry=NO_RETRY,
            )
        SimpleWorker(project_queues(queue.connection), connection=queue.connection).work(
            burst=True, logging_level="CRITICAL"
        )
    finally:
        context.uninstall()


# The registry lives in Redis; the database only counts the outbox, so one backend keeps this short.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_crm_jobs_lists_shows_and_retries_failed_jobs(
    store: EventStore,
    db_url: str,
    redis_url: str,
    queue: RedisJobQueue,
    make_settings: type[Settings],
    tmp_path: Path,
) -> None:
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "CRM_DATA_DIR": str(tmp_path / "data")}
    assert "no failed jobs" in crm("jobs", env=env).stdout
    _fail_jobs(queue, store, make_settings(), "bad-1", "bad-2", "bad-3")
    lead(store, 1)  # one event waiting in the outbox

    listed = crm("jobs", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    for job_id in ("bad-1", "bad-2", "bad-3"):
        assert job_id in listed.stdout
    assert "EventMissing" in listed.stdout
    assert "outbox: 1 event(s) not yet processed" in listed.stdout

    shown = crm("jobs", "show", "bad-2", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "status:       failed" in shown.stdout
    assert "jobs.process.process_event('no-such-bad-2')" in shown.stdout
    assert "Traceback" in shown.stdout and "event no-such-bad-2 is not in the log" in shown.stdout

    missing = crm("jobs", "show", "nope", env=env)
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr
    assert crm("jobs", "retry", env=env).returncode == 2
    assert crm("jobs", "retry", "bad-1", "--all", env=env).returncode == 2

    retried = crm("jobs", "retry", "bad-1", env=env)
    assert retried.returncode == 0 and "1 job(s) queued again" in retried.stdout
    assert queue.depth()[SIGNALS] == 1
    assert {info.id for info in queue.failed_jobs()} == {"bad-2", "bad-3"}

    everything = crm("jobs", "retry", "--all", env=env)
    assert everything.returncode == 0 and "2 job(s) queued again" in everything.stdout
    assert queue.failed_jobs() == [] and queue.depth()[SIGNALS] == 3
    again = crm("jobs", "retry", "bad-2", env=env)
    assert again.returncode == 1 and "not in the failed registry: bad-2" in again.stderr


def test_crm_worker_burst_processes_what_the_relay_finds_in_the_outbox(
    store: EventStore, db_url: str, redis_url: str, queue: RedisJobQueue, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "CRM_DATA_DIR": str(tmp_path / "data")}
    events = [lead(store, n) for n in range(3)]  # committed, never enqueued (the web process died)

    relayed = crm("jobs", "relay", "--older-than", "0", env=env)
    assert relayed.returncode == 0 and "3 outbox row(s) handed to the queue" in relayed.stdout
    worked = crm("worker", "--burst", "--no-relay", env=env)
    assert worked.returncode == 0, worked.stderr

    with store.engine.connect() as connection:
        done = set(connection.execute(select(t.processed_events.c.event_id)).scalars())
        waiting = set(connection.execute(select(t.outbox.c.event_id)).scalars())
    ids = {event.id for event in events}
    assert ids <= done
    assert not ids & waiting  # (subscribers may have dispatched new events of their own)


def test_crm_jobs_and_worker_without_redis_say_what_to_set(tmp_path: Path) -> None:
    env = {"CRM_DATA_DIR": str(tmp_path / "data")}
    for args in (("jobs",), ("worker", "--burst")):
        result = crm(*args, env=env)
        assert result.returncode == 2
        assert "REDIS_URL" in result.stderr
