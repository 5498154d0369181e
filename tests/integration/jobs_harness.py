"""Helpers for the job pipeline tests, and a worker process entry point with test subscribers.

`python -m tests.integration.jobs_harness DIR [--fork]` runs the real `crm worker` code
(jobs.worker.run_worker) built by the real composition root from the environment (DATABASE_URL,
REDIS_URL), with a FileRecordingSubscriber writing to DIR, so a test can watch and kill it from outside.
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

from jobs.context import JobContext
from store.events import CustomerRef, Event, LeadCreated
from store.uow import EventStore


class RecordingSubscriber:
    """Records every event it handles; `effects` is the idempotent result (one entry per event)."""

    def __init__(self, name: str, types: set[str] | None = None, journal: list[str] | None = None) -> None:
        self.name = name
        self.types = types
        self.calls: list[str] = []
        self.effects: set[str] = set()
        self.journal = journal if journal is not None else []

    def wants(self, event: Event) -> bool:
        return self.types is None or event.type in self.types

    def handle(self, event: Event, ctx: JobContext) -> None:
        self.calls.append(event.id)
        self.effects.add(event.id)
        self.journal.append(f"{self.name}:{event.id}")


class FileRecordingSubscriber:
    """Across processes: appends `event_id pid` to DIR/handled after each run.

    While DIR/hold exists, the first attempt on an event writes DIR/started-<pid> and blocks, so a
    test can kill the process mid-job; later attempts (after the kill) run straight through.
    """

    name = "file-recorder"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def wants(self, event: Event) -> bool:
        return True

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
    container = bootstrap(load_settings(_env_file=None))
    container.subscribers.append(FileRecordingSubscriber(directory))
    assert container.settings.redis_url
    run_worker(
        container.job_context(),
        container.settings.redis_url,
        fork="--fork" in sys.argv,
        relay=False,
        logging_level="WARNING",
    )


if __name__ == "__main__":
    main()
