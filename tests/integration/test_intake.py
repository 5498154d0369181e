"""The intake inbox (store.intake) on SQLite and Postgres: staging, sequencing, receipts, bad rows, races."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from store import events as ev
from store import tables as t
from store.db import make_engine
from store.intake import MAX_ATTEMPTS, backlog, sequence, stage, stage_all, staging_row
from store.intake_async import AsyncStager
from store.uow import EventStore
from tests.integration.web_harness import DEAD_PORT


def lead(email: str = "ada@example.com", text: str = "hello") -> ev.Signal:
    return ev.SIGNAL_TYPES["lead.created"](customer=ev.CustomerRef(name="Ada", email=email), text=text)


def staged_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(t.intake).order_by(t.intake.c.id)).mappings()]


def events_keyed(engine: Engine, key: str) -> list[dict[str, Any]]:
    query = select(t.events).where(t.events.c.idempotency_key == key)
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(query).mappings()]


def test_a_staged_signal_reaches_the_log_under_the_promised_id(store: EventStore) -> None:
    staged = stage(store.engine, "lead.created", lead(), "signals:msg_1", source="signals")
    assert not staged.duplicate and staged.row_id is not None
    assert events_keyed(store.engine, "signals:msg_1") == [], "staging writes no event"
    assert backlog(store.engine) == {"waiting": 1, "failed": 0}

    assert sequence(store) == 1
    (event,) = events_keyed(store.engine, "signals:msg_1")
    assert event["id"] == staged.event_id and event["type"] == "lead.created"
    assert event["payload"]["text"] == "hello" and event["stream"].startswith("cus_")
    (row,) = staged_rows(store.engine)
    assert row["position"] == event["position"] and row["signal"] is None, "a receipt, its copy cleared"
    with store.engine.connect() as connection:
        outbox = connection.execute(select(t.outbox.c.event_id)).scalars().all()
        customers = connection.execute(select(t.customers.c.name)).scalars().all()
    assert backlog(store.engine) == {"waiting": 0, "failed": 0}
    assert outbox == [staged.event_id] and customers == ["Ada"]
    assert sequence(store) == 0, "sequencing again moves nothing"


def test_a_batch_stages_in_the_callers_transaction_in_order_and_knows_repeats(store: EventStore) -> None:
    known = stage(store.engine, "lead.created", lead(), "signals:known", source="signals")
    sequence(store)
    keys = ["signals:b1", "signals:known", "signals:b2", "signals:b1"]
    rows = [staging_row("lead.created", lead(text=key), key, source="signals") for key in keys]
    with pytest.raises(RuntimeError), store.engine.begin() as connection:
        stage_all(connection, rows)
        raise RuntimeError("the rest of the transaction failed")
    assert backlog(store.engine)["waiting"] == 0, "nothing is staged unless the transaction commits"

    rows = [staging_row("lead.created", lead(text=key), key, source="signals") for key in keys]
    with store.engine.begin() as connection:
        staged = stage_all(connection, rows)
    assert [one.duplicate for one in staged] == [False, True, False, True]
    assert staged[1].event_id == known.event_id and staged[3].event_id == staged[0].event_id
    assert sequence(store) == 2
    moved = [row["idempotency_key"] for row in staged_rows(store.engine)]
    assert moved == ["signals:known", "signals:b1", "signals:b2"]


def test_a_redelivery_answers_the_first_id_before_and_after_sequencing(store: EventStore) -> None:
    first = stage(store.engine, "lead.created", lead(), "signals:dup", source="signals")
    again = stage(store.engine, "lead.created", lead(text="changed"), "signals:dup", source="signals")
    assert (again.event_id, again.duplicate, again.row_id) == (first.event_id, True, None)
    sequence(store)
    later = stage(store.engine, "lead.created", lead(), "signals:dup", source="signals")
    assert (later.event_id, later.duplicate) == (first.event_id, True)
    (event,) = events_keyed(store.engine, "signals:dup")
    assert event["payload"]["text"] == "hello", "the first delivery is the one recorded"
    assert len(staged_rows(store.engine)) == 1


def test_a_key_the_log_already_holds_is_a_duplicate_of_that_event(store: EventStore) -> None:
    original = store.record_signal("lead.created", lead(), "signals:old", source="signals").event
    staged = stage(store.engine, "lead.created", lead(), "signals:old", source="signals")
    assert (staged.event_id, staged.duplicate) == (original.id, True)
    assert staged_rows(store.engine) == []


def test_an_overlong_key_is_staged_and_recorded_as_its_hash(store: EventStore) -> None:
    key = "signals:" + "k" * 400
    first = stage(store.engine, "lead.created", lead(), key, source="signals")
    assert stage(store.engine, "lead.created", lead(), key, source="signals").event_id == first.event_id
    sequence(store)
    (row,) = staged_rows(store.engine)
    assert row["idempotency_key"].startswith("sha256:")
    assert [e["id"] for e in events_keyed(store.engine, row["idempotency_key"])] == [first.event_id]


def test_a_signal_sequenced_late_keeps_the_time_it_arrived(store: EventStore) -> None:
    stage(store.engine, "lead.created", lead(), "signals:late", source="signals")
    arrived = datetime.now(UTC) - timedelta(hours=2)
    with store.engine.begin() as connection:
        connection.execute(update(t.intake).values(staged_at=arrived))
    sequence(store)
    (event,) = events_keyed(store.engine, "signals:late")
    occurred = event["occurred_at"].astimezone(UTC)
    assert abs((occurred - arrived).total_seconds()) < 1
    assert event["recorded_at"].astimezone(UTC) - occurred > timedelta(hours=1)


def test_a_row_the_log_refuses_is_set_aside_and_the_rest_go_through(store: EventStore) -> None:
    for n in range(5):
        stage(store.engine, "lead.created", lead(f"p{n}@example.com"), f"signals:p{n}", source="signals")
    bad = staged_rows(store.engine)[2]["id"]
    with store.engine.begin() as connection:  # a row no signal model reads (e.g. written by a bug)
        connection.execute(update(t.intake).where(t.intake.c.id == bad).values(signal={"customer": 5}))

    assert sequence(store) == 4
    rows = {row["id"]: row for row in staged_rows(store.engine)}
    assert rows[bad]["position"] is None and rows[bad]["attempts"] == 1
    assert "ValidationError" in rows[bad]["error"]
    assert all(row["position"] is not None for rid, row in rows.items() if rid != bad)

    for _ in range(MAX_ATTEMPTS):
        sequence(store)
    (row,) = [r for r in staged_rows(store.engine) if r["id"] == bad]
    assert row["attempts"] == MAX_ATTEMPTS, "given up on after MAX_ATTEMPTS, not retried for ever"
    assert backlog(store.engine) == {"waiting": 0, "failed": 1}


def test_concurrent_deliveries_of_one_key_stage_one_row(store: EventStore) -> None:
    answers: list[Any] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        answers.append(stage(store.engine, "lead.created", lead(), "signals:race", source="signals"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({a.event_id for a in answers}) == 1
    assert sum(not a.duplicate for a in answers) == 1
    assert len(staged_rows(store.engine)) == 1


def test_concurrent_sequencers_record_every_row_exactly_once(store: EventStore) -> None:
    promised = [
        stage(store.engine, "message.received", lead(f"c{n % 7}@example.com"), f"signals:s{n}", source="x")
        for n in range(120)
    ]
    moved: list[int] = []

    def sequencer() -> None:
        moved.append(sequence(store, batch=25))

    threads = [threading.Thread(target=sequencer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(moved) == 120
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(t.events.c.id, t.events.c.position).where(t.events.c.type == "message.received")
        ).all()
        customers = connection.execute(select(t.customers.c.id)).scalars().all()
    assert Counter(event_id for event_id, _ in rows) == Counter(p.event_id for p in promised)
    assert len(customers) == 7, "one customer per address, however the batches interleaved"
    assert all(row["position"] is not None for row in staged_rows(store.engine))


def test_under_a_burst_the_sequencer_waits_between_partial_batches(store: EventStore) -> None:
    def stage_n(first: int, n: int) -> list[str]:
        signals = [(f"signals:b{i}", lead(f"b{i}@example.com")) for i in range(first, first + n)]
        return [stage(store.engine, "message.received", s, key, source="x").event_id for key, s in signals]

    promised = stage_n(0, 3)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # signals keep arriving while the sequencer waits
        waits.append(seconds)
        if len(waits) == 1:
            promised.extend(stage_n(3, 4))

    assert sequence(store, batch=10, linger=0.02, sleep=sleep) == 7
    assert waits == [0.02, 0.02], "a wait after the batch of 3 and after the batch of 4 it gathered"
    with store.engine.connect() as connection:
        ids = connection.execute(select(t.events.c.id).where(t.events.c.type == "message.received"))
        assert sorted(ids.scalars()) == sorted(promised)
    assert backlog(store.engine) == {"waiting": 0, "failed": 0}


def test_the_sequencer_does_not_wait_for_a_lone_signal_a_full_batch_or_given_rows(store: EventStore) -> None:
    waits: list[float] = []
    one = stage(store.engine, "lead.created", lead("one@example.com"), "signals:one", source="x")
    assert sequence(store, linger=0.02, sleep=waits.append) == 1
    for n in range(5):
        stage(store.engine, "lead.created", lead(f"f{n}@example.com"), f"signals:f{n}", source="x")
    assert sequence(store, batch=5, linger=0.02, sleep=waits.append) == 5, "one full batch"
    picked = [
        stage(store.engine, "lead.created", lead(f"p{n}@example.com"), f"signals:p{n}", source="x").row_id
        for n in range(3)
    ]
    assert sequence(store, rows=[r for r in picked if r], linger=0.02, sleep=waits.append) == 3
    for n in range(3):
        stage(store.engine, "lead.created", lead(f"s{n}@example.com"), f"signals:s{n}", source="x")
    assert sequence(store, staged_before=datetime.now(UTC), linger=0.02, sleep=waits.append) == 3
    assert waits == [], "nothing more is coming for a lone signal, a full backlog or a chosen set"
    assert events_keyed(store.engine, "signals:one")[0]["id"] == one.event_id


def test_sequencing_only_rows_staged_before_a_time(store: EventStore) -> None:
    stage(store.engine, "lead.created", lead(), "signals:old-row", source="signals")
    cutoff = datetime.now(UTC)
    time.sleep(0.01)
    stage(store.engine, "lead.created", lead(), "signals:new-row", source="signals")
    assert sequence(store, staged_before=cutoff) == 1
    assert events_keyed(store.engine, "signals:old-row") and not events_keyed(store.engine, "signals:new-row")


def test_the_web_intake_engine_rides_out_a_dropped_connection(make_settings: Any, pg_url: str) -> None:
    from bot.bootstrap import bootstrap

    container = bootstrap(make_settings(DATABASE_URL=pg_url), migrate_schema=False, handlers={})
    try:
        engine = container.intake_engine
        assert engine is not container.engine and not engine.pool._pre_ping  # type: ignore[attr-defined]
        stage(engine, "lead.created", lead(), "signals:before", source="signals")
        with container.engine.connect() as connection:  # the server drops the pooled connection
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        after = stage(engine, "lead.created", lead(), "signals:after", source="signals")
        assert not after.duplicate and len(staged_rows(engine)) == 2
    finally:
        container.close()


# -- the web app's async stager (Postgres) -----------------------------------------------------------


def stage_async(stager: AsyncStager, key: str, signal: ev.Signal | None = None) -> Any:
    return stager.stage("lead.created", signal or lead(), key, source="signals")


def run_with_stager(url: str, body: Callable[[AsyncStager], Awaitable[Any]], **options: Any) -> Any:
    async def run() -> Any:
        stager = AsyncStager(url, max_size=options.pop("max_size", 4), timeout=options.pop("timeout", 5.0))
        await stager.open()
        try:
            return await body(stager)
        finally:
            await stager.close()

    return asyncio.run(run())


def test_the_async_stager_stages_a_key_once_whoever_asks_and_whenever(pg_url: str) -> None:
    store = EventStore(make_engine(pg_url))
    odd = lead(email="zoë@exämple.com", text="naïve café 🚀 \u202e reversed \u200b zero-width")

    async def scenario(stager: AsyncStager) -> dict[str, Any]:
        first = await stage_async(stager, "signals:a1", odd)
        racing = await asyncio.gather(*(stage_async(stager, "signals:race") for _ in range(8)))
        again = await stage_async(stager, "signals:a1")
        sequence(store)
        after = await stage_async(stager, "signals:a1")
        return {"first": first, "racing": racing, "again": again, "after": after}

    try:
        got = run_with_stager(pg_url, scenario)
        first = got["first"]
        assert not first.duplicate and first.row_id is not None
        assert (got["again"].event_id, got["again"].duplicate) == (first.event_id, True)
        assert (got["after"].event_id, got["after"].duplicate) == (first.event_id, True), "known from the log"
        new = [s for s in got["racing"] if not s.duplicate]
        assert len(new) == 1 and {s.event_id for s in got["racing"]} == {new[0].event_id}
        (event,) = events_keyed(store.engine, "signals:a1")
        assert event["id"] == first.event_id
        assert event["payload"]["text"] == odd.text, "the JSON text the async path writes reads back the same"
        assert event["payload"]["customer"]["email"] == "zoë@exämple.com"
        # Same row as the thread path would write for the same signal.
        sync = stage(store.engine, "lead.created", odd, "signals:sync", source="signals")
        rows = {row["idempotency_key"]: row for row in staged_rows(store.engine)}
        assert rows["signals:sync"]["signal"] == odd.model_dump(mode="json")
        assert rows["signals:sync"]["event_id"] == sync.event_id and len(rows) == 3
    finally:
        store.engine.dispose()


def test_the_async_stager_rides_out_a_server_that_dropped_its_connections(pg_url: str) -> None:
    engine = make_engine(pg_url)

    async def scenario(stager: AsyncStager) -> list[Any]:
        before = await asyncio.gather(*(stage_async(stager, f"signals:b{n}") for n in range(4)))
        with engine.connect() as connection:  # as a server restart does to every pooled connection
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        after = [await stage_async(stager, f"signals:c{n}") for n in range(4)]
        return before + after

    try:
        staged = run_with_stager(pg_url, scenario)
        assert not any(s.duplicate for s in staged)
        assert len(staged_rows(engine)) == 8
    finally:
        engine.dispose()


def test_the_async_stager_gives_up_within_its_timeout_when_the_database_is_down() -> None:
    from psycopg_pool import PoolTimeout

    url = f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/crm"

    async def scenario(stager: AsyncStager) -> float:
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await stage_async(stager, "signals:lost")
        return time.monotonic() - started

    waited = run_with_stager(url, scenario, timeout=0.3)
    assert waited < 5, "a request is answered (503), not left hanging"


def test_a_refused_signal_is_told_to_the_operator_once_and_can_be_retried(
    store: EventStore, make_settings: Any
) -> None:
    from jobs.intake import report_refusals
    from store.intake import refused, retry_refused
    from tests.integration.jobs_harness import app_for
    from tests.integration.proposal_helpers import RecordingSurface

    stage(store.engine, "lead.created", lead("ok@example.com"), "signals:ok", source="signals")
    stage(store.engine, "lead.created", lead("bad@example.com"), "signals:bad", source="signals")
    bad = staged_rows(store.engine)[1]["id"]
    with store.engine.begin() as connection:
        connection.execute(update(t.intake).where(t.intake.c.id == bad).values(signal={"customer": 5}))
    app = app_for(store, make_settings())
    surface = RecordingSurface()
    app.notifier.add(surface)
    for _ in range(MAX_ATTEMPTS):
        sequence(store)
        report_refusals(app)
    assert report_refusals(app) == 0, "told once"

    [notice] = surface.notices
    assert "1 accepted signal(s) could not be recorded" in notice[0]
    assert "signals:bad" in notice[1] and "ValidationError" in notice[1]
    assert [row["idempotency_key"] for row in refused(store.engine)] == ["signals:bad"]

    with store.engine.begin() as connection:  # the cause is fixed
        connection.execute(
            update(t.intake)
            .where(t.intake.c.id == bad)
            .values(signal=lead("bad@example.com").model_dump(mode="json"))
        )
    assert retry_refused(store.engine) == 1
    assert sequence(store) == 1 and refused(store.engine) == []


class CountingStager(AsyncStager):
    """The stager, noting how many rows each statement staged (to see the batch path was taken)."""

    batches: list[int]
    singles: int  # statements of one row: a lone request's, or a refused batch's rows one by one

    async def _stage_batch(self, connection: Any, batch: Any) -> Any:
        self.batches.append(len(batch))
        return await super()._stage_batch(connection, batch)

    async def _stage_one(self, connection: Any, values: Any) -> Any:
        self.singles += 1
        return await super()._stage_one(connection, values)


def test_a_batch_stages_what_one_statement_per_row_stages(pg_url: str) -> None:
    """The batch statement is a shortcut for `stage` row by row: same rows, same answers, same order."""
    store = EventStore(make_engine(pg_url))
    odd = lead(email="zoë@exämple.com", text="naïve café 🚀 \u202e reversed \u200b zero-width")
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    # JSON's own characters in the text, and a time in another zone to the microsecond: the batch
    # carries both through its JSON and must land them as one statement per row does.
    quoting = lead("quote@example.com", text='say "hi" \\ back\\slash \n\t\u2028 </script> {"a": [1]} \x7f')
    elsewhere = datetime(2026, 3, 1, 15, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    stage(store.engine, "lead.created", lead("known@example.com"), "signals:staged", source="signals")
    stage(store.engine, "lead.created", lead("logged@example.com"), "signals:logged", source="signals")
    sequence(store)
    asks: list[tuple[str, ev.Signal, str, datetime | None]] = [
        ("lead.created", lead("first@example.com"), "signals:first", None),
        ("lead.created", odd, "signals:odd", when),
        ("lead.created", lead("twice@example.com"), "signals:twice", None),
        ("lead.created", lead("twice@example.com"), "signals:twice", None),  # repeated within the batch
        ("lead.created", lead("again@example.com"), "signals:staged", None),  # staged before
        ("lead.created", lead("again@example.com"), "signals:logged", None),  # in the log
        ("lead.created", quoting, "signals:quoting", elsewhere),
        ("message.received", lead("last@example.com"), "signals:last", None),
    ]

    async def scenario(stager: AsyncStager) -> tuple[list[Any], list[Any]]:
        assert isinstance(stager, CountingStager)
        stager.batches, stager.singles = [], 0
        answers = await asyncio.gather(
            *(
                stager.stage(kind, signal, key, source="signals", occurred_at=at)
                for kind, signal, key, at in asks
            ),
            return_exceptions=True,
        )
        assert sum(stager.batches) == len(asks) and max(stager.batches) >= len(asks) - 1, "batched"
        assert stager.singles == stager.batches.count(1), "the batch statement staged its rows itself"
        # A batch with a row no column holds (its source) is staged row by row: only that one is refused.
        refusing = await asyncio.gather(
            stager.stage("lead.created", lead("fine@example.com"), "signals:fine", source="signals"),
            stager.stage("lead.created", lead("bad@example.com"), "signals:bad", source="x" * 65),
            return_exceptions=True,
        )
        return answers, refusing

    async def run() -> tuple[list[Any], list[Any]]:
        stager = CountingStager(pg_url, max_size=1, timeout=5.0)
        await stager.open()
        try:
            return await scenario(stager)
        finally:
            await stager.close()

    try:
        before = {row["idempotency_key"]: row for row in staged_rows(store.engine)}
        answers, (fine, bad) = asyncio.run(run())
        first, odd_one, twice, twice_again, staged_before, logged, quoted, last = answers
        assert isinstance(bad, Exception) and "value too long" in str(bad), "only the bad row is refused"
        assert not fine.duplicate and fine.row_id is not None
        fresh = [first, odd_one, twice, quoted, last]
        assert all(not s.duplicate and s.row_id is not None for s in fresh)
        assert [s.row_id for s in fresh] == sorted(s.row_id for s in fresh), "staged in the order asked"
        assert (twice_again.event_id, twice_again.duplicate) == (twice.event_id, True)
        assert (staged_before.event_id, staged_before.duplicate) == (
            before["signals:staged"]["event_id"],
            True,
        )
        assert (logged.event_id, logged.duplicate) == (before["signals:logged"]["event_id"], True)

        # The same signals staged one statement each (the thread path) give the same rows.
        rows = {row["idempotency_key"]: row for row in staged_rows(store.engine)}
        for (kind, signal, key, at), answer in zip(asks, answers, strict=True):
            if (
                key
                not in {"signals:first", "signals:odd", "signals:twice", "signals:quoting", "signals:last"}
                or answer.duplicate
            ):
                continue
            stage(store.engine, kind, signal, f"slow:{key}", source="signals", occurred_at=at)
            slow = {row["idempotency_key"]: row for row in staged_rows(store.engine)}[f"slow:{key}"]
            batched = rows[key]
            assert batched["event_id"] == answer.event_id and batched["id"] == answer.row_id
            for column in ("type", "source", "occurred_at", "signal", "position", "attempts", "error"):
                assert batched[column] == slow[column], column
        assert rows["signals:quoting"]["occurred_at"] == elsewhere
        assert rows["signals:quoting"]["signal"]["text"] == quoting.text
        assert sequence(store) == 11, "every staged row reaches the log"
    finally:
        store.engine.dispose()
