"""Helpers for the job pipeline tests, and a worker process entry point with test handlers.

`python -m tests.integration.jobs_harness DIR [--fork]` runs the real `crm worker` code
(jobs.worker.run_worker) built by the real composition root from the environment (DATABASE_URL,
REDIS_URL), with a FileRecordingSubscriber as the memory handler (it sees every event type the handler
table gives it) writing to DIR, so a test can watch and kill it from outside.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis as redis_lib

from bot.bootstrap import App
from jobs.context import JobContext
from jobs.handlers import MEMORY
from jobs.inprocess import InProcessJobQueue
from jobs.queue import JobQueue
from store.events import CustomerRef, Event, LeadCreated
from store.settings import Settings
from store.uow import EventStore


class RecordingSubscriber:
    """A handler that records every event it handles; `effects` is the idempotent result.

    Put it in an App's handlers under a name of the handler table (jobs.handlers): it then sees the
    event types the table gives that name ("memory" sees almost every type).
    """

    def __init__(self, name: str = MEMORY, journal: list[str] | None = None) -> None:
        self.name = name
        self.calls: list[str] = []
        self.effects: set[str] = set()
        self.journal = journal if journal is not None else []

    def __call__(self, event: Event, ctx: JobContext) -> None:
        self.handle(event, ctx)

    def handle(self, event: Event, ctx: JobContext) -> None:
        self.calls.append(event.id)
        self.effects.add(event.id)
        self.journal.append(f"{self.name}:{event.id}")


class FileRecordingSubscriber:
    """Across processes: appends `event_id pid` to DIR/handled after each run.

    While DIR/hold exists, the first attempt on an event writes DIR/started-<pid> and blocks, so a
    test can kill the process mid-job; later attempts (after the kill) run straight through.
    """

    name = MEMORY

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, event: Event, ctx: JobContext) -> None:
        self.handle(event, ctx)

    def handle(self, event: Event, ctx: JobContext) -> None:
        attempts = self.directory / f"attempts-{event.id}"
        with attempts.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        first = len(attempts.read_text().split()) == 1
        if first and (self.directory / "hold").exists():
            (self.directory / f"started-{os.getpid()}").write_text(event.id)
            while (self.directory / "hold").exists():
                time.sleep(0.05)
        with (self.directory / "handled").open("a") as handle:
            handle.write(f"{event.id} {os.getpid()}\n")


def app_for(
    store: EventStore,
    settings: Settings,
    queue: JobQueue | None = None,
    handlers: dict[str, Any] | None = None,
) -> App:
    """An App over a test's store and queue whose handlers are the test's own (none by default)."""
    return App(
        settings=settings,
        engine=store.engine,
        store=store,
        queue=queue if queue is not None else InProcessJobQueue(),
        handlers=handlers if handlers is not None else {},
    )


def lead(store: EventStore, n: int, source: str = "test") -> Event:
    """Record one lead.created signal for customer n and return its event."""
    signal = LeadCreated(customer=CustomerRef(email=f"lead@c{n}.example.com", name=f"Lead {n}"), text="hi")
    return store.record_signal("lead.created", signal, f"{source}:lead:{n}", source=source).event


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free loopback port, with no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing its clients' connections."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll predicate until true; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    from bot.bootstrap import bootstrap
    from jobs.worker import run_worker
    from store.settings import load_settings

    directory = Path(sys.argv[1])
    container = bootstrap(
        load_settings(_env_file=None), handlers={MEMORY: FileRecordingSubscriber(directory)}
    )
    assert container.settings.redis_url
    run_worker(
        container,
        container.settings.redis_url,
        fork="--fork" in sys.argv,
        relay=False,
        logging_level="WARNING",
    )


if __name__ == "__main__":
    main()
