"""The scheduler's tasks (`crm scheduler`, and inside `crm run`): digest, scans, wake-ups, the relay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from jobs import digest as digests
from jobs import scans
from jobs.scheduler import Scheduler, Task, leader_lock_for

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# Scans are cheap reads of projections; hourly keeps a renewal or overdue notice within the hour.
SCAN_INTERVAL = timedelta(hours=1)
# Expiry, snooze wake-ups and stalled executions: a snoozed proposal comes back within a minute.
WAKEUP_INTERVAL = timedelta(minutes=1)
RELAY_INTERVAL = timedelta(seconds=30)


def post_digest(container: App, slot: datetime | None = None, *, post: bool = True) -> digests.Digest:
    """Build today's digest; post it to each surface that has not had its slot (failures are retried)."""
    if post:
        return digests.deliver(container, slot)
    settings = container.settings
    now = slot or digests.ev.utcnow()
    return digests.prepare(container.store, now, settings.timezone, settings.crm_data_dir / "charts")


def run_scans(container: App, slot: datetime) -> int:
    """The renewal, overdue and quiet-lead scans for this slot; queues what they emitted. Keyed per
    window, so running them again (at start, on schedule, from the demo) emits nothing twice."""
    from jobs.relay import relay_outbox

    store, today = container.store, slot.astimezone(container.settings.timezone).date()
    emitted = scans.scan_renewals(store, today, slot) + scans.scan_overdue(store, today, slot)
    emitted += scans.scan_quiet_leads(store, slot)
    if emitted:
        log.info("scans emitted %d signal(s)", emitted)
        relay_outbox(container, older_than=timedelta(0))
    return emitted


def standard_tasks(container: App) -> list[Task]:
    """Every periodic task with its trigger."""
    from jobs.proposal_service import run_periodic
    from jobs.relay import relay_outbox

    settings = container.settings
    tz = settings.timezone
    hour, minute = (int(part) for part in settings.digest_at.split(":"))

    return [
        Task(
            "digest",
            CronTrigger(hour=hour, minute=minute, timezone=tz),
            lambda slot: post_digest(container, slot),
        ),
        Task(
            "scans",
            IntervalTrigger(seconds=int(SCAN_INTERVAL.total_seconds()), timezone=tz),
            lambda slot: run_scans(container, slot),
            catch_up=False,
            at_start=True,  # what came due while the process was down shows at once, not in an hour
        ),
        Task(
            "wakeups",
            IntervalTrigger(seconds=int(WAKEUP_INTERVAL.total_seconds()), timezone=tz),
            lambda slot: run_periodic(container, slot),
            catch_up=False,
        ),
        Task(
            "relay",
            IntervalTrigger(seconds=int(RELAY_INTERVAL.total_seconds()), timezone=tz),
            lambda slot: relay_outbox(container),
            catch_up=False,
        ),
    ]


def build_scheduler(container: App) -> Scheduler:
    settings = container.settings
    return Scheduler(
        standard_tasks(container),
        leader_lock_for(container.engine, settings.crm_data_dir),
        settings.timezone,
    )
