"""Replay, verify and time travel on SQLite and Postgres; merges and unmerges survive a rebuild."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, delete, insert, select, text, update

from store import events as ev
from store import log, replay
from store import tables as t
from store.slice import build_slice
from store.state import read_tables
from store.uow import EventStore

T0 = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)


def signal(
    store: EventStore, kind: str, key: str, at: datetime, data: dict[str, Any] | None = None, **ref: str
) -> str:
    payload = ev.SIGNAL_TYPES[kind](customer=ev.CustomerRef(**ref), data=data or {})
    return store.record_signal(kind, payload, key, source="test", occurred_at=at).event.stream


def snapshot(engine: Engine) -> dict[str, dict[Any, Any]]:
    with engine.connect() as connection:
        return read_tables(connection).rows


def owners(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(t.contact_points.c.value, t.contact_points.c.customer_id))
        return dict(rows.all())


def busy_history(store: EventStore) -> tuple[str, str]:
    """Two customers, money, a merge through a shared key, then an unmerge; returns (ann, bob)."""
    ann = signal(store, "lead.created", "a1", T0, name="Ann Lee", email="ann@acme.com")
    bob = signal(store, "lead.created", "b1", T0 + timedelta(hours=1), name="Bob", phone="(415) 555-2671")
    signal(
        store,
        "invoice.created",
        "i1",
        T0 + timedelta(days=1),
        {"invoice_id": "in_1", "amount": "120"},
        email="ann@acme.com",
    )
    signal(
        store,
        "subscription.created",
        "s1",
        T0 + timedelta(days=2),
        {"plan": "pro", "amount": "49", "renews_on": "2026-01-01"},
        phone="+14155552671",
    )
    signal(
        store,
        "message.received",
        "m1",
        T0 + timedelta(days=3),
        email="ann@acme.com",
        phone="+1 415 555 2671",
        slack="U42",
    )
    with store.transaction() as tx:
        tx.append(
            ev.NewEvent(
                type="customer.unmerged",
                payload=ev.CustomerUnmerged(merged=bob, reason="two people sharing a phone"),
                stream=ann,
                idempotency_key="unmerge:1",
                occurred_at=T0 + timedelta(days=4),
            )
        )
    signal(store, "invoice.paid", "i2", T0 + timedelta(days=5), {"invoice_id": "in_1"}, email="ann@acme.com")
    return ann, bob


def test_replay_of_an_empty_log_is_fine(engine: Engine) -> None:
    assert replay.replay(engine) == 0
    verification = replay.verify(engine)
    assert verification.ok
    assert verification.position == 0


def test_merge_and_unmerge_survive_replay_and_unmerge_restores_contact_points(
    store: EventStore, engine: Engine
) -> None:
    ann, bob = busy_history(store)
    # after the unmerge each key is back with the customer it came from; the key the merged signal
    # brought (slack) stays with the survivor, who received it
    assert owners(engine) == {"ann@acme.com": ann, "+14155552671": bob, "U42": ann}
    with engine.connect() as connection:
        merged_into = connection.execute(
            select(t.customers.c.merged_into).where(t.customers.c.id == bob)
        ).scalar()
    assert merged_into is None
    before = snapshot(engine)
    assert replay.replay(engine) > 0
    assert snapshot(engine) == before
    assert replay.verify(engine).ok
    # after the rebuild, identity resolution still sees two people
    assert signal(store, "message.received", "m2", T0 + timedelta(days=6), phone="415.555.2671") == bob


def test_merged_customers_stay_merged_after_replay(store: EventStore, engine: Engine) -> None:
    ann = signal(store, "lead.created", "a", T0, email="ann@acme.com")
    bob = signal(store, "lead.created", "b", T0, phone="+14155552671", name="Bob")
    signal(store, "message.received", "m", T0, email="ann@acme.com", phone="+14155552671")
    replay.replay(engine)
    with engine.connect() as connection:
        merged_into = connection.execute(
            select(t.customers.c.merged_into).where(t.customers.c.id == bob)
        ).scalar()
    assert merged_into == ann
    assert set(owners(engine).values()) == {ann}


def test_replay_rebuilds_projections_that_were_lost(store: EventStore, engine: Engine) -> None:
    busy_history(store)
    before = snapshot(engine)
    with engine.begin() as connection:
        for table in t.PROJECTION_TABLES:
            connection.execute(delete(table))
    assert not replay.verify(engine).ok
    replay.replay(engine)
    assert snapshot(engine) == before


def test_replay_twice_is_the_same_as_once(store: EventStore, engine: Engine) -> None:
    busy_history(store)
    first = replay.replay(engine)
    once = snapshot(engine)
    assert replay.replay(engine) == first
    assert snapshot(engine) == once


def test_appends_after_a_replay_still_project(store: EventStore, engine: Engine) -> None:
    ann, _ = busy_history(store)
    replay.replay(engine)
    signal(
        store,
        "invoice.created",
        "i9",
        T0 + timedelta(days=9),
        {"invoice_id": "in_9", "amount": "5"},
        email="ann@acme.com",
    )
    with engine.connect() as connection:
        owner = connection.execute(select(t.invoices.c.customer_id).where(t.invoices.c.id == "in_9")).scalar()
    assert owner == ann
    assert replay.verify(engine).ok


def test_replay_reports_progress_up_to_the_head(store: EventStore, engine: Engine) -> None:
    busy_history(store)
    seen: list[tuple[int, int]] = []
    last = replay.replay(engine, lambda done, total: seen.append((done, total)))
    assert seen[-1] == (last, last)


TAMPERING = [
    pytest.param(
        update(t.customers).values(mrr_cents=999_99),
        "customers {ann}: mrr_cents live=99999 replayed=4900",
        id="changed-column",
    ),
    pytest.param(
        insert(t.notes).values(id="forged", customer_id="cus_x", text="x", author="me", created_at=T0),
        "notes forged: in the live projection but not in the log",
        id="extra-row",
    ),
    pytest.param(
        delete(t.invoices),
        "invoices in_1: missing from the live projection",
        id="missing-row",
    ),
    pytest.param(
        update(t.contact_points).where(t.contact_points.c.kind == "phone").values(customer_id="cus_nobody"),
        "contact_points phone/+14155552671: customer_id live='cus_nobody' replayed='{bob}'",
        id="moved-contact",
    ),
]


@pytest.mark.parametrize(("tamper", "expected"), TAMPERING)
def test_verify_names_every_difference_readably(
    store: EventStore, engine: Engine, tamper: Any, expected: str
) -> None:
    ann, bob = busy_history(store)
    if "customers" in expected:
        tamper = tamper.where(t.customers.c.id == bob)
        expected = expected.replace("{ann}", bob)
    with engine.begin() as connection:
        connection.execute(tamper)
    verification = replay.verify(engine)
    assert not verification.ok
    described = [difference.describe() for difference in verification.differences]
    assert expected.format(ann=ann, bob=bob) in described
    replay.replay(engine)
    assert replay.verify(engine).ok


def test_time_travel_shows_a_past_state(store: EventStore, engine: Engine) -> None:
    ann, bob = busy_history(store)
    with engine.connect() as connection:
        before_invoice = build_slice(connection, ann, as_of=date(2025, 1, 10))
        unpaid = build_slice(connection, ann, as_of=date(2025, 1, 12))
        while_merged = build_slice(connection, ann, as_of=date(2025, 1, 13))
        now = build_slice(connection, ann)
        before_anyone = build_slice(connection, ann, as_of=date(2024, 12, 31))
    assert before_anyone is None
    assert before_invoice is not None and unpaid is not None and while_merged is not None and now is not None
    assert before_invoice.open_invoices == []
    assert [(i["id"], i["status"], i["amount_cents"]) for i in unpaid.open_invoices] == [
        ("in_1", "open", 12000)
    ]
    assert (unpaid.lifetime_value_cents, now.lifetime_value_cents) == (0, 12000)
    assert now.open_invoices == []
    assert while_merged.merged_ids == [bob]
    assert {"kind": "phone", "value": "+14155552671"} in while_merged.contacts
    assert now.merged_ids == []
    assert {"kind": "phone", "value": "+14155552671"} not in now.contacts


def test_verify_reads_rows_as_the_database_returns_them(store: EventStore, engine: Engine) -> None:
    """Dates and timestamps compare equal across the live tables and the in-memory rebuild."""
    busy_history(store)
    with engine.connect() as connection:
        renewal = connection.execute(text("SELECT renews_on FROM subscriptions")).scalar()
    assert str(renewal) == "2026-01-01"
    assert replay.verify(engine).ok


def _history_up_to_head(store: EventStore, engine: Engine) -> int:
    busy_history(store)
    with engine.connect() as connection:
        return log.head(connection)


def _fetchers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "crm-replay-fetch"]


def test_the_replay_stream_reads_every_event_in_order_across_its_batches(
    store: EventStore, engine: Engine
) -> None:
    head = _history_up_to_head(store, engine)
    streamed = list(log.stream_all(engine, until=head, batch=2))
    assert [event.position for event in streamed] == list(range(1, head + 1))
    assert streamed == list(log.read_all(engine))
    assert list(log.stream_all(engine, until=head - 2, batch=2)) == streamed[:-2]
    assert not _fetchers()


def test_a_replay_stream_closed_early_stops_its_fetching_and_gives_its_connection_back(
    store: EventStore, engine: Engine
) -> None:
    head = _history_up_to_head(store, engine)
    stream = log.stream_all(engine, until=head, batch=1)  # the fetcher fills its queue and waits
    assert next(stream).position == 1
    stream.close()
    assert not _fetchers()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_an_error_while_fetching_the_stream_is_raised_to_its_reader(
    store: EventStore, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_history(store)
    monkeypatch.setattr(log, "_STREAM", "SELECT * FROM no_such_table WHERE %s < %s")
    if engine.dialect.name == "postgresql":
        with pytest.raises(psycopg.errors.UndefinedTable):
            list(log.stream_all(engine, until=3))
    else:  # SQLite streams through read_all, which does not use that statement
        assert len(list(log.stream_all(engine, until=3))) == 3
    assert not _fetchers()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
