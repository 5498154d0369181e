"""A worker SIGKILLed in the middle of process_event: the job is retried, the event processed once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from jobs import context
from jobs.handlers import MEMORY
from jobs.redis_queue import RedisJobQueue
from jobs.relay import relay_outbox
from jobs.worker import project_queues
from store import tables as t
from store.db import make_engine, migrate
from store.events import Event
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import FileRecordingSubscriber, RedisServer, app_for, lead, wait_for

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """`jobs.worker.run_worker` in its own process, recording into a directory."""

    def __init__(self, directory: Path, db_url: str, redis_url: str, data_dir: Path, fork: bool) -> None:
        env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CRM_DATA_DIR": str(data_dir)}
        env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.jobs_harness",
                str(directory),
                *(["--fork"] if fork else []),
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,  # its own process group: RQ's scheduler process goes with it
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # A worker killed with SIGKILL leaves RQ's scheduler process behind: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "recording"
    directory.mkdir()
    (directory / "hold").write_text("block the first attempt")
    return directory


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisJobQueue]:
    q = RedisJobQueue.from_url(redis_url, abandoned_after=timedelta(seconds=1))
    yield q
    q.connection.close()


def _processed(store: EventStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(t.processed_events)).scalar_one())


def _handled(directory: Path) -> list[str]:
    path = directory / "handled"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _was_handled(directory: Path, event: Event) -> bool:
    return any(line.split()[0] == event.id for line in _handled(directory))


def _started_pid(directory: Path) -> int:
    wait_for(lambda: list(directory.glob("started-*")), 60, "the job to start")
    [marker] = list(directory.glob("started-*"))
    return int(marker.name.removeprefix("started-"))


def _assert_processed_once(store: EventStore, directory: Path, event: Event) -> None:
    assert _processed(store) == 1
    handled = _handled(directory)
    assert [line.split()[0] for line in handled] == [event.id]
    attempts = (directory / f"attempts-{event.id}").read_text().split()
    assert len(attempts) == 2  # the killed attempt and the retry
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(t.outbox)).scalar_one() == 0


def test_a_forked_work_horse_killed_mid_job_is_retried_by_rq_and_the_event_processed_once(
    store: EventStore, db_url: str, redis_url: str, queue: RedisJobQueue, recording_dir: Path, tmp_path: Path
) -> None:
    event = lead(store, 1)
    worker = WorkerProcess(recording_dir, db_url, redis_url, tmp_path / "data", fork=True)
    try:
        assert queue.enqueue_event(event.id)
        horse = _started_pid(recording_dir)
        assert horse != worker.process.pid  # the job runs in a forked work horse
        os.kill(horse, signal.SIGKILL)
        wait_for(lambda: _processed(store) == 1, 60, "the retried job to finish")
        _assert_processed_once(store, recording_dir, event)
        assert queue.failed_jobs() == []
    finally:
        worker.stop()


def test_a_worker_killed_mid_job_is_recovered_by_the_relay_and_the_event_processed_once(
    store: EventStore,
    db_url: str,
    redis_url: str,
    queue: RedisJobQueue,
    recording_dir: Path,
    tmp_path: Path,
    make_settings: type[Settings],
) -> None:
    event = lead(store, 1)
    worker = WorkerProcess(recording_dir, db_url, redis_url, tmp_path / "data", fork=False)
    try:
        assert queue.enqueue_event(event.id)
        assert _started_pid(recording_dir) == worker.process.pid  # the default worker runs jobs itself
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)
    finally:
        worker.stop()
    info = queue.job(f"event-{event.id}")
    assert info is not None and info.status == "started"  # nobody is left to report the failure
    patient = RedisJobQueue.from_url(redis_url)  # the default heartbeat window
    assert patient.enqueue_event(event.id)
    assert sum(patient.depth().values()) == 0  # within the window it counts as running: not queued twice
    patient.connection.close()
    time.sleep(1.5)  # past the test queue's one-second window

    ctx = app_for(store, make_settings(), queue, {MEMORY: FileRecordingSubscriber(recording_dir)})
    context.install(ctx)
    try:
        assert relay_outbox(ctx, older_than=timedelta(0)) == 1
        assert sum(queue.depth().values()) == 1
        SimpleWorker(project_queues(queue.connection), connection=queue.connection).work(
            burst=True, logging_level="WARNING"
        )
        _assert_processed_once(store, recording_dir, event)
        assert relay_outbox(ctx, older_than=timedelta(0)) == 0
    finally:
        context.uninstall()


def test_crm_worker_rides_out_a_redis_restart_and_handles_what_comes_after(
    tmp_path: Path, make_settings: type[Settings]
) -> None:
    pg_url = f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    store = EventStore(make_engine(pg_url))
    migrate(store.engine)
    redis = RedisServer()
    redis.start()
    directory = tmp_path / "recording"
    directory.mkdir()
    worker = WorkerProcess(directory, pg_url, redis.url, tmp_path / "data", fork=False)
    try:
        queue = RedisJobQueue.from_url(redis.url)
        before = lead(store, 1)
        assert queue.enqueue_event(before.id)
        wait_for(lambda: _was_handled(directory, before), 60, "the first event to be handled")

        redis.kill()  # kill -9: no goodbye to the worker's open connections
        time.sleep(1)
        redis.start()
        time.sleep(3)
        assert worker.process.poll() is None, "the worker is still running"

        after = lead(store, 2)
        queue = RedisJobQueue.from_url(redis.url)
        wait_for(lambda: queue.enqueue_event(after.id), 30, "Redis to take the job")
        wait_for(lambda: _was_handled(directory, after), 60, "the event queued after the restart")
        assert worker.process.poll() is None
    finally:
        worker.stop()
        redis.stop()
        store.engine.dispose()
