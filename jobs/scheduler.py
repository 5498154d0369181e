"""The scheduler: time-based work on APScheduler, acted on by exactly one process.

Two guarantees, from two mechanisms:
- only one scheduler acts, even when several run: a leader lock (a Postgres advisory lock held on a
  dedicated connection, or an exclusive file lock next to the SQLite database);
- a run is never done twice, and a run missed while the process was down fires once on start if it
  is still within its grace time: every task is handed the slot it runs for, and the work it does is
  keyed by that slot (an idempotency key), so a second attempt at the same slot is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Protocol
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

SCHEDULER_LOCK_KEY = 0x63726D736368  # "crmsch": pg advisory lock held by the acting scheduler
DEFAULT_GRACE = timedelta(hours=2)  # a digest two hours late is still worth sending; later is noise
RETRY_AFTER = timedelta(minutes=1)  # a catch-up task that failed (the database restarting) tries again


class LeaderLock(Protocol):
    def try_acquire(self) -> bool:
        """True while this process is the leader (re-entrant, never blocks)."""

    def release(self) -> None: ...


class PostgresLeaderLock:
    """Session-level advisory lock on a connection kept open for as long as we lead."""

    def __init__(self, engine: Engine, key: int = SCHEDULER_LOCK_KEY, what: str = "scheduler") -> None:
        self.engine = engine
        self.key = key
        self.what = what
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        if self._connection is not None:
            if self._alive(self._connection):
                return True
            # The server restarted (or the network dropped us): the lock went with the session.
            log.warning("lost the database connection holding the %s lock; taking it again", self.what)
            self._connection = None
        try:
            connection = self.engine.connect()
            got = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({int(self.key)})").scalar()
            connection.commit()
        except DBAPIError as exc:
            log.warning("database unreachable, the %s waits: %s", self.what, _first_line(exc))
            return False
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    @staticmethod
    def _alive(connection: Connection) -> bool:
        try:
            connection.exec_driver_sql("SELECT 1")
            connection.commit()
            return True
        except DBAPIError:
            with contextlib.suppress(Exception):
                connection.invalidate()
            return False

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):  # a dead session has released it already
                self._connection.exec_driver_sql(f"SELECT pg_advisory_unlock({int(self.key)})")
            self._connection.close()
            self._connection = None


class FileLeaderLock:
    """An exclusive flock on a file in the data directory (the embedded SQLite default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def leader_lock_for(
    engine: Engine, data_dir: Path, key: int = SCHEDULER_LOCK_KEY, what: str = "scheduler"
) -> LeaderLock:
    """The lock that lets one process of many act as `what` (the scheduler, a mailbox's watcher)."""
    if engine.dialect.name == "postgresql":
        return PostgresLeaderLock(engine, key, what)
    return FileLeaderLock(data_dir / f"{what}.lock")


@dataclass(frozen=True)
class Task:
    """Work on a trigger. `action(slot)` must be idempotent per slot (key its writes by it)."""

    name: str
    trigger: BaseTrigger
    action: Callable[[datetime], object]
    grace: timedelta = DEFAULT_GRACE
    catch_up: bool = True
    # Run once when the scheduler starts, then on the trigger: a scan should not wait an interval to
    # find what came due while the process was down (its writes are keyed, so a rerun is a no-op).
    at_start: bool = False


def latest_slot(trigger: BaseTrigger, now: datetime, grace: timedelta) -> datetime | None:
    """The last time the trigger fired in (now - grace, now], or None."""
    slot, candidate = None, trigger.get_next_fire_time(None, now - grace)
    while candidate is not None and candidate <= now:
        slot = candidate
        candidate = trigger.get_next_fire_time(candidate, candidate + timedelta(microseconds=1))
    return slot


class Scheduler:
    """Runs tasks on their triggers when this process holds the leader lock."""

    def __init__(
        self,
        tasks: list[Task],
        lock: LeaderLock,
        timezone: ZoneInfo,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tasks = tasks
        self.lock = lock
        self.timezone = timezone
        self.clock = clock
        self._scheduler: BackgroundScheduler | None = None
        self._running: set[str] = set()
        self._guard = threading.Lock()

    def run_due(self, task: Task, now: datetime | None = None) -> datetime | None:
        """Run the task for its latest slot within grace, if we lead; returns the slot run."""
        now = now or self.clock()
        slot = latest_slot(task.trigger, now, task.grace)
        return None if slot is None else self.run_for(task, slot)

    def run_for(self, task: Task, slot: datetime) -> datetime | None:
        """Run the task for this slot, if we lead and it is not running already; returns the slot run."""
        if not self.lock.try_acquire():
            return None
        with self._guard:  # one run of a task at a time inside this process
            if task.name in self._running:
                return None
            self._running.add(task.name)
        try:
            task.action(slot)
        except DBAPIError as exc:  # an outage, not a bug: one line, and a catch-up task tries again
            log.warning("scheduled task %s waits for the database: %s", task.name, _first_line(exc))
            self._retry_later(task)
            return None
        except Exception:
            log.exception("scheduled task %s failed for slot %s", task.name, slot.isoformat())
            self._retry_later(task)
            return None
        finally:
            with self._guard:
                self._running.discard(task.name)
        return slot

    def _retry_later(self, task: Task) -> None:
        """A catch-up task (the digest) that failed runs again soon for the same slot (keyed: once)."""
        if not task.catch_up or self._scheduler is None:
            return
        self._scheduler.add_job(
            self.run_due,
            "date",
            run_date=self.clock() + RETRY_AFTER,
            args=[task],
            id=f"{task.name}-retry",
            replace_existing=True,
        )

    def fire_missed(self, now: datetime | None = None) -> list[str]:
        """On start: run each catch-up task once for a slot missed while we were down, and each
        at-start task (the scans) for now."""
        now = now or self.clock()
        missed = [task.name for task in self.tasks if task.catch_up and self.run_due(task, now) is not None]
        started = [task.name for task in self.tasks if task.at_start and self.run_for(task, now) is not None]
        return missed + started

    def start(self) -> None:
        self.fire_missed()
        scheduler = BackgroundScheduler(timezone=self.timezone)
        for task in self.tasks:
            scheduler.add_job(
                self.run_due,
                trigger=task.trigger,
                args=[task],
                id=task.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(task.grace.total_seconds()),
            )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.lock.release()


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's error can run to a page)."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
