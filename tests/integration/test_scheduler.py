"""Scheduler: DST-correct digest slots, one leader, missed runs fired once, scans keyed by window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select

from jobs import scans
from jobs.scheduler import FileLeaderLock, PostgresLeaderLock, Scheduler, Task, latest_slot, leader_lock_for
from store import events as ev
from store import tables as t
from store.uow import EventStore
from tests.integration.jobs_harness import wait_for

BERLIN = ZoneInfo("Europe/Berlin")


def digest_trigger() -> CronTrigger:
    return CronTrigger(hour=8, minute=0, timezone=BERLIN)


@pytest.mark.parametrize(
    ("now_utc", "expected_utc"),
    [
        # Winter (CET, UTC+1): 08:00 local is 07:00 UTC.
        (datetime(2026, 3, 28, 7, 30, tzinfo=UTC), datetime(2026, 3, 28, 7, 0, tzinfo=UTC)),
        # The morning after the spring-forward night (CEST, UTC+2): 08:00 local is 06:00 UTC.
        (datetime(2026, 3, 29, 6, 30, tzinfo=UTC), datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        # The morning after the fall-back night: back to 07:00 UTC.
        (datetime(2026, 10, 25, 7, 30, tzinfo=UTC), datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
    ],
)
def test_digest_slot_follows_local_time_across_dst(now_utc: datetime, expected_utc: datetime) -> None:
    slot = latest_slot(digest_trigger(), now_utc, timedelta(hours=2))
    assert slot is not None
    assert slot.astimezone(UTC) == expected_utc
    assert slot.astimezone(BERLIN).hour == 8


def test_no_slot_when_the_last_one_is_outside_grace() -> None:
    assert latest_slot(digest_trigger(), datetime(2026, 3, 28, 12, 0, tzinfo=UTC), timedelta(hours=2)) is None


def _slot_recorder(store: EventStore, runs: list[datetime]):
    """An action keyed by its slot, as the digest is: a second run for the same slot writes nothing."""

    def action(slot: datetime) -> None:
        appended = store.append(
            ev.NewEvent(
                type="note.added",
                payload=ev.NoteAdded(text=f"digest for {slot.isoformat()}", author="scheduler"),
                stream="digest",
                idempotency_key=f"digest:{slot.isoformat()}",
            ),
            dispatch=False,
        )
        if not appended.duplicate:
            runs.append(slot)

    return action


def _digests(store: EventStore) -> int:
    with store.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.idempotency_key.like("digest:%"))
        return connection.execute(query).scalar_one()


def test_missed_run_fires_once_on_start_never_twice(store: EventStore, tmp_path: Path) -> None:
    runs: list[datetime] = []
    now = datetime(2026, 3, 29, 7, 15, tzinfo=UTC)  # 09:15 Berlin: the 08:00 run was missed
    task = Task("digest", digest_trigger(), _slot_recorder(store, runs))
    first = Scheduler([task], leader_lock_for(store.engine, tmp_path), BERLIN, clock=lambda: now)
    assert first.fire_missed() == ["digest"]
    first.stop()
    restarted = Scheduler([task], leader_lock_for(store.engine, tmp_path), BERLIN, clock=lambda: now)
    restarted.fire_missed()
    restarted.stop()
    assert len(runs) == 1
    assert runs[0].astimezone(BERLIN).hour == 8
    assert _digests(store) == 1


def test_two_schedulers_one_digest(store: EventStore, tmp_path: Path) -> None:
    runs: list[datetime] = []
    now = datetime(2026, 3, 29, 6, 0, 30, tzinfo=UTC)
    task = Task("digest", digest_trigger(), _slot_recorder(store, runs))
    a = Scheduler([task], leader_lock_for(store.engine, tmp_path), BERLIN, clock=lambda: now)
    b = Scheduler([task], leader_lock_for(store.engine, tmp_path), BERLIN, clock=lambda: now)
    try:
        assert a.run_due(task) is not None
        assert b.run_due(task) is None, "the second scheduler must not act while the first leads"
    finally:
        a.stop()
        b.stop()
    assert _digests(store) == 1


def test_leadership_passes_on_when_the_leader_stops(store: EventStore, tmp_path: Path) -> None:
    a, b = leader_lock_for(store.engine, tmp_path), leader_lock_for(store.engine, tmp_path)
    assert isinstance(a, PostgresLeaderLock | FileLeaderLock)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()


def _customer_with_subscription(store: EventStore, renews_on: date, email: str = "ops@acme.test") -> str:
    appended = store.record_signal(
        "subscription.created",
        ev.SubscriptionSignal(
            customer=ev.CustomerRef(name="Acme", email=email),
            data={
                "subscription_id": f"sub_{email}",
                "plan": "Team",
                "amount": "149",
                "renews_on": renews_on.isoformat(),
            },
        ),
        f"test:sub:{email}",
        source="test",
    )
    return appended.event.stream


def _count(store: EventStore, event_type: str) -> int:
    with store.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.type == event_type)
        return connection.execute(query).scalar_one()


def test_renewal_scan_emits_once_per_window(store: EventStore) -> None:
    today = date(2026, 11, 1)
    now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    _customer_with_subscription(store, today + timedelta(days=20))
    assert scans.scan_renewals(store, today, now) == 1  # the 30-day window
    assert scans.scan_renewals(store, today, now) == 0  # same window again: nothing
    assert scans.scan_renewals(store, today + timedelta(days=7), now) == 1  # 13 days left: the 14-day window
    assert scans.scan_renewals(store, today + timedelta(days=14), now) == 1  # 6 days left: the 7-day window
    assert scans.scan_renewals(store, today + timedelta(days=15), now) == 0
    assert _count(store, "subscription.renewal_due") == 3


def test_renewal_scan_skips_cancelled_subscriptions(store: EventStore) -> None:
    today = date(2026, 11, 1)
    _customer_with_subscription(store, today + timedelta(days=10), "gone@acme.test")
    store.record_signal(
        "subscription.cancelled",
        ev.SubscriptionSignal(
            customer=ev.CustomerRef(email="gone@acme.test"), data={"subscription_id": "sub_gone@acme.test"}
        ),
        "test:cancel",
        source="test",
    )
    assert scans.scan_renewals(store, today, datetime(2026, 11, 1, tzinfo=UTC)) == 0


def test_overdue_scan_climbs_the_dunning_ladder_and_stops_when_paid(store: EventStore) -> None:
    ref = ev.CustomerRef(name="Brisa", email="mateo@brisa.test")
    store.record_signal(
        "invoice.created",
        ev.InvoiceSignal(customer=ref, data={"invoice_id": "in_1", "amount": "49", "due_date": "2026-11-01"}),
        "test:in_1",
        source="test",
    )
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert scans.scan_overdue(store, date(2026, 11, 2), now) == 1  # friendly
    assert scans.scan_overdue(store, date(2026, 11, 3), now) == 0  # still the same step
    assert scans.scan_overdue(store, date(2026, 11, 8), now) == 1  # firm
    store.record_signal(
        "invoice.paid",
        ev.InvoiceSignal(customer=ref, data={"invoice_id": "in_1"}),
        "test:in_1:paid",
        source="test",
    )
    assert scans.scan_overdue(store, date(2026, 11, 20), now) == 0


def test_quiet_lead_scan(store: EventStore) -> None:
    old = datetime(2026, 10, 1, tzinfo=UTC)
    store.record_signal(
        "lead.created",
        ev.LeadCreated(customer=ev.CustomerRef(name="Rosa", email="rosa@finca.test")),
        "test:lead",
        source="test",
        occurred_at=old,
    )
    assert scans.scan_quiet_leads(store, old + timedelta(days=3)) == 0
    assert scans.scan_quiet_leads(store, old + timedelta(days=20)) == 1
    assert scans.scan_quiet_leads(store, old + timedelta(days=25)) == 0


@pytest.mark.parametrize(
    ("days_left", "window"), [(31, None), (30, 30), (15, 30), (14, 14), (8, 14), (7, 7), (0, 7), (-1, None)]
)
def test_renewal_window(days_left: int, window: int | None) -> None:
    assert scans.renewal_window(days_left) == window


def test_a_leader_whose_database_session_died_notices_and_leads_again(pg_url: str) -> None:
    import psycopg

    from store.db import make_engine

    engine = make_engine(pg_url)
    a, b = PostgresLeaderLock(engine), PostgresLeaderLock(engine)
    try:
        assert a.try_acquire() and not b.try_acquire()
        assert a._connection is not None
        pid = a._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        a._connection.commit()
        admin_dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin_dsn, autocommit=True) as admin:  # what a server restart does to it
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # pg_terminate_backend only signals; the session (and its advisory lock) is gone once the
            # backend has exited, which on a busy machine takes a moment.
            query = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
            wait_for(lambda: not admin.execute(query, (pid,)).fetchone(), 10, "the terminated session to end")
        assert b.try_acquire(), "the lock went with the dead session: another scheduler may lead"
        assert not a.try_acquire(), "and the old leader knows it does not lead any more"
        b.release()
        assert a.try_acquire(), "then takes the lock again once it is free"
    finally:
        a.release()
        b.release()
        engine.dispose()
