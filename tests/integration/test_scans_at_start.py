"""Scans run when the scheduler starts (catching up on what came due while it was down), then on schedule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from bot.bootstrap import App, bootstrap
from bot.demo.dataset import seed
from bot.schedule import build_scheduler
from jobs.scheduler import FileLeaderLock, Scheduler, Task

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def container(db_url: str, make_settings: Any) -> Iterator[App]:
    built = bootstrap(make_settings(DATABASE_URL=db_url))
    yield built
    built.close()


def count(container: App, event_type: str) -> int:
    return sum(1 for event in container.store.read_all() if event.type == event_type)


def test_starting_the_scheduler_scans_at_once_and_a_restart_adds_nothing(container: App) -> None:
    seed(container.store, now=datetime.now(UTC) - timedelta(hours=1))
    assert count(container, "subscription.renewal_due") == 0

    ran = build_scheduler(container).fire_missed()

    assert "scans" in ran
    renewals, overdue = count(container, "subscription.renewal_due"), count(container, "invoice.overdue")
    assert renewals > 0 and overdue == 5, "the demo's renewals within 30 days and its five unpaid invoices"
    build_scheduler(container).fire_missed()
    assert (count(container, "subscription.renewal_due"), count(container, "invoice.overdue")) == (
        renewals,
        overdue,
    ), "each window is emitted once"


def test_an_at_start_task_runs_for_now_and_a_plain_interval_task_waits(tmp_path: Any) -> None:
    runs: dict[str, list[datetime]] = {"scans": [], "relay": []}
    hourly = IntervalTrigger(hours=1, timezone=ZoneInfo("UTC"))
    scheduler = Scheduler(
        [
            Task("scans", hourly, runs["scans"].append, catch_up=False, at_start=True),
            Task("relay", hourly, runs["relay"].append, catch_up=False),
        ],
        FileLeaderLock(tmp_path / "lock"),
        ZoneInfo("UTC"),
        clock=lambda: NOW,
    )

    assert scheduler.fire_missed() == ["scans"]
    assert runs == {"scans": [NOW], "relay": []}


def test_a_follower_does_not_scan_at_start(tmp_path: Any) -> None:
    lock = FileLeaderLock(tmp_path / "lock")
    assert lock.try_acquire()
    runs: list[datetime] = []
    hourly = IntervalTrigger(hours=1, timezone=ZoneInfo("UTC"))
    follower = Scheduler(
        [Task("scans", hourly, runs.append, catch_up=False, at_start=True)],
        FileLeaderLock(tmp_path / "lock"),
        ZoneInfo("UTC"),
        clock=lambda: NOW,
    )
    try:
        assert follower.fire_missed() == []
        assert runs == []
    finally:
        lock.release()
