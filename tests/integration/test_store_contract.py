"""The store's contract, one suite run against SQLite and Postgres (the `store`/`engine` fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from store import events as ev
from store import log, replay
from store import tables as t
from store.identity import IdentityError
from store.uow import EventStore

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def note(stream: str, key: str, body: str = "hello", **kwargs: Any) -> ev.NewEvent:
    return ev.NewEvent(
        type="note.added",
        payload=ev.NoteAdded(text=body, author="ops"),
        stream=stream,
        idempotency_key=key,
        **kwargs,
    )


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def lead(**customer: str) -> ev.LeadCreated:
    return ev.LeadCreated(customer=ev.CustomerRef(**customer))


def canonical_customers(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(t.customers).where(t.customers.c.merged_into.is_(None)).order_by(t.customers.c.id)
        )
        return [dict(row._mapping) for row in rows]


# --- append ---------------------------------------------------------------------------------------


def test_append_records_every_field_and_reads_it_back(store: EventStore) -> None:
    new = note(
        "cus_a",
        "test:1",
        actor="slack:U1",
        source="slack",
        confidence=0.75,
        correlation_id="corr-1",
        causation_id="cause-1",
        occurred_at=T0,
    )
    appended = store.append(new)
    assert not appended.duplicate
    event = store.get(new.id)
    assert event is not None
    assert event == appended.event
    assert (event.id, event.stream, event.type, event.version) == (new.id, "cus_a", "note.added", 2)
    assert event.payload == ev.NoteAdded(text="hello", author="ops")
    assert (event.actor, event.source, event.confidence) == ("slack:U1", "slack", 0.75)
    assert (event.correlation_id, event.causation_id) == ("corr-1", "cause-1")
    assert event.occurred_at == T0
    assert event.occurred_at.tzinfo is not None
    assert event.recorded_at.tzinfo is not None
    assert event.position >= 1
    assert event.idempotency_key == "test:1"


def test_occurred_at_in_another_zone_is_stored_as_the_same_instant(store: EventStore) -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    appended = store.append(note("cus_a", "tz", occurred_at=plus_two))
    stored = store.get(appended.event.id)
    assert stored is not None
    assert stored.occurred_at == T0
    assert stored.occurred_at.utcoffset() == timedelta(0)


def test_occurred_at_defaults_to_the_recording_time(store: EventStore) -> None:
    appended = store.append(note("cus_a", "now"))
    stored = store.get(appended.event.id)
    assert stored is not None
    assert stored.occurred_at == stored.recorded_at


def test_append_refuses_a_payload_of_the_wrong_model(store: EventStore, engine: Engine) -> None:
    wrong = ev.NewEvent(
        type="note.added",
        payload=ev.TaskCompleted(task_id="t1"),
        stream="cus_a",
        idempotency_key="wrong",
    )
    with pytest.raises(ValidationError):
        store.append(wrong)
    unknown = ev.NewEvent(
        type="nobody.knows", payload=ev.TaskCompleted(task_id="t1"), stream="s", idempotency_key="k"
    )
    with pytest.raises(ev.UnknownEventType):
        store.append(unknown)
    assert count(engine, t.events) == 0


def test_dispatched_events_get_an_outbox_row_and_internal_ones_do_not(
    store: EventStore, engine: Engine
) -> None:
    dispatched = store.append(note("cus_a", "out:1"))
    store.append(note("cus_a", "out:2"), dispatch=False)
    with engine.connect() as connection:
        rows = connection.execute(select(t.outbox.c.event_id, t.outbox.c.position)).all()
    assert [tuple(row) for row in rows] == [(dispatched.event.id, dispatched.event.position)]


def test_a_failed_transaction_leaves_no_event_no_projection_and_no_outbox_row(
    store: EventStore, engine: Engine
) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.record_signal("lead.created", lead(name="Ann", email="ann@acme.com"), "lead:1", source="test")
        raise RuntimeError("crash before commit")
    for table in (t.events, t.outbox, t.customers, t.contact_points, t.projection_positions):
        assert count(engine, table) == 0


# --- idempotency ---------------------------------------------------------------------------------


def test_appending_a_known_key_returns_the_original_and_writes_nothing(
    store: EventStore, engine: Engine
) -> None:
    first = store.append(note("cus_a", "webhook:abc", body="first"))
    again = store.append(note("cus_b", "webhook:abc", body="a different body"))
    assert again.duplicate
    assert again.event.id == first.event.id
    assert again.event.payload == ev.NoteAdded(text="first", author="ops")
    assert count(engine, t.events) == 1
    assert count(engine, t.outbox) == 1
    assert count(engine, t.notes) == 1


def test_a_repeated_signal_returns_the_original_event_and_creates_no_customer(
    store: EventStore, engine: Engine
) -> None:
    first = store.record_signal("lead.created", lead(email="ann@acme.com"), "form:42", source="form")
    events_before = count(engine, t.events)
    again = store.record_signal("lead.created", lead(email="other@else.io"), "form:42", source="form")
    assert again.duplicate
    assert again.event.id == first.event.id
    assert count(engine, t.events) == events_before
    assert count(engine, t.customers) == 1


def test_a_known_key_draws_no_position_so_positions_stay_gap_free(store: EventStore) -> None:
    # The append writes unless known in one statement; on Postgres a sequence value drawn for a row
    # that is then not written would leave a hole in the positions.
    first = store.append(note("cus_a", "k:1"))
    for _ in range(3):
        assert store.append(note("cus_a", "k:1", body="again")).duplicate
    second = store.append(note("cus_a", "k:2"))
    assert second.event.position == first.event.position + 1


def test_appending_several_at_once_writes_what_appending_one_by_one_does(store: EventStore) -> None:
    # append_all inserts its events in one statement on Postgres (a batch of actions' checkpoints):
    # positions in the given order and gap-free, a known key drawing none, every column as append()'s.
    known = store.append(note("cus_a", "all:known")).event
    odd = "zero\u200bwidth, RTL \u202e, emoji 🧾, NUL-free \\x00 text " * 40
    news = [
        note("cus_a", "all:1", body=odd, confidence=0.25, correlation_id="corr-1", causation_id=known.id),
        note("cus_b", "all:known", body="again"),
        note("cus_b", "all:2", actor="agent:x", source="lifecycle"),  # NULL confidence and ids
        note("cus_c", "a" * 300),  # a key longer than the column is stored as its hash
    ]
    with store.transaction() as tx:
        appended = tx.append_all([(new, n % 2 == 0) for n, new in enumerate(news)])
    assert [a.duplicate for a in appended] == [False, True, False, False]
    assert appended[1].event.id == known.id
    positions = [a.event.position for n, a in enumerate(appended) if n != 1]
    assert positions == [known.position + 1, known.position + 2, known.position + 3]
    stored = {event.position: event for event in store.read_all()}
    for n, a in enumerate(appended):
        assert stored[a.event.position] == a.event, n
    assert stored[positions[0]].payload.text == odd  # type: ignore[attr-defined]
    assert stored[positions[-1]].idempotency_key == log.storable_key("a" * 300)
    assert count(store.engine, t.outbox) == 3  # the known one, and the first and third here
    assert store.append(note("cus_a", "all:after")).event.position == known.position + 4


def test_held_writes_are_seen_by_the_states_reads_and_reach_the_tables_at_commit(
    store: EventStore, engine: Engine
) -> None:
    with store.transaction() as tx:
        tx.state.defer()
        tx.append(note("cus_a", "held:1", body="first"))
        tx.append(note("cus_a", "held:2", body="second"))
        if engine.dialect.name == "postgresql":  # SQLite's writer lock keeps other connections out
            assert count(engine, t.notes) == 0  # nothing written yet
        assert sorted(row["text"] for row in tx.state.scan("notes", customer_id="cus_a")) == [
            "first",
            "second",
        ]
    assert count(engine, t.notes) == 2 and count(engine, t.outbox) == 2
    with engine.connect() as connection:
        applied = connection.execute(
            select(t.projection_positions.c.position).where(t.projection_positions.c.name == "core")
        ).scalar_one()
    assert applied == max(event.position for event in store.read_all())


def test_a_held_write_that_fails_raises_at_commit_and_leaves_nothing(
    store: EventStore, engine: Engine
) -> None:
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.state.defer()
        tx.append(note("cus_a", "held:bad"))
        tx.state.write(insert(t.counters), {"name": "twice", "value": 1})
        tx.state.write(insert(t.counters), {"name": "twice", "value": 2})
    assert count(engine, t.events) == 0 and count(engine, t.notes) == 0 and count(engine, t.counters) == 0


def test_a_key_appended_earlier_in_the_same_transaction_is_a_duplicate(store: EventStore) -> None:
    with store.transaction() as tx:
        a = tx.append(note("cus_a", "same"))
        b = tx.append(note("cus_a", "same", body="again"))
    assert (a.duplicate, b.duplicate) == (False, True)
    assert b.event.id == a.event.id


# --- ordering and reads --------------------------------------------------------------------------


def test_positions_are_a_strictly_increasing_total_order_across_streams(store: EventStore) -> None:
    appended = []
    for i in range(12):
        with store.transaction() as tx:
            for j in range(i % 3 + 1):
                appended.append(tx.append(note(f"cus_{i % 4}", f"o:{i}:{j}")).event)
    positions = [event.position for event in appended]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    read = list(store.read_all())
    assert [event.id for event in read] == [event.id for event in appended]
    assert [e.position for e in read] == sorted(e.position for e in read)


@pytest.mark.parametrize("batch", [1, 3, 5_000])
def test_read_from_a_position_returns_only_later_events_in_order(store: EventStore, batch: int) -> None:
    events = [store.append(note("cus_a", f"p:{i}")).event for i in range(7)]
    middle = events[3].position
    later = list(store.read_all(after=middle, batch=batch))
    assert [e.id for e in later] == [e.id for e in events[4:]]
    assert list(store.read_all(after=events[-1].position, batch=batch)) == []


def test_read_until_a_position_stops_there(store: EventStore, engine: Engine) -> None:
    events = [store.append(note("cus_a", f"u:{i}")).event for i in range(5)]
    upto = list(log.read_all(engine, after=events[0].position, until=events[2].position, batch=1))
    assert [e.id for e in upto] == [events[1].id, events[2].id]


def test_read_by_stream_returns_that_streams_events_in_log_order(store: EventStore, engine: Engine) -> None:
    for i in range(9):
        store.append(note(["cus_a", "cus_b", "cus_c"][i % 3], f"s:{i}", occurred_at=T0 + timedelta(days=i)))
    with engine.connect() as connection:
        a = log.read_streams(connection, ["cus_a"])
        ab = log.read_streams(connection, ["cus_a", "cus_b"])
        early_a = log.read_streams(connection, ["cus_a"], until=T0 + timedelta(days=3))
        none = log.read_streams(connection, ["cus_nobody"])
    assert [e.idempotency_key for e in a] == ["s:0", "s:3", "s:6"]
    assert [e.idempotency_key for e in ab] == ["s:0", "s:1", "s:3", "s:4", "s:6", "s:7"]
    assert [e.idempotency_key for e in early_a] == ["s:0", "s:3"]
    assert none == []


def test_head_is_the_highest_position(store: EventStore, engine: Engine) -> None:
    with engine.connect() as connection:
        assert log.head(connection) == 0
    last = [store.append(note("cus_a", f"h:{i}")).event for i in range(3)][-1]
    with engine.connect() as connection:
        assert log.head(connection) == last.position


# --- insert-only ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = '{}'",
        "UPDATE events SET stream = 'cus_other' WHERE position = :position",
        "DELETE FROM events",
        "DELETE FROM events WHERE position = :position",
    ],
)
def test_the_database_refuses_update_and_delete_on_the_log(
    store: EventStore, engine: Engine, statement: str
) -> None:
    event = store.append(note("cus_a", "immutable")).event
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as connection:
        connection.execute(text(statement), {"position": event.position})
    assert store.get(event.id) == event


def test_postgres_refuses_truncate_on_the_log(store: EventStore, engine: Engine, db_url: str) -> None:
    if engine.dialect.name != "postgresql":
        assert db_url.startswith("sqlite")  # SQLite has no TRUNCATE statement at all
        return
    store.append(note("cus_a", "keep"))
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as connection:
        connection.execute(text("TRUNCATE events"))
    assert count(engine, t.events) == 1


# --- upcasting -----------------------------------------------------------------------------------


def _insert_v1_note(engine: Engine, stream: str, body: str) -> int:
    """A note as an old release wrote it: version 1, `body` and no author."""
    with engine.begin() as connection:
        log.lock_for_append(connection)
        return connection.execute(
            insert(t.events)
            .values(
                id=ev.new_id(),
                stream=stream,
                type="note.added",
                version=1,
                payload={"body": body},
                actor="system",
                source="legacy",
                occurred_at=T0,
                recorded_at=T0,
                idempotency_key=f"legacy:{body}",
            )
            .returning(t.events.c.position)
        ).scalar_one()


def test_an_old_payload_version_is_upcast_on_read_and_the_row_is_left_alone(
    store: EventStore, engine: Engine
) -> None:
    position = _insert_v1_note(engine, "cus_a", "from the old days")
    (event,) = list(store.read_all())
    assert event.position == position
    assert event.version == 1  # what was stored, not rewritten
    assert event.payload == ev.NoteAdded(text="from the old days", author="unknown")
    with engine.connect() as connection:
        stored = connection.execute(select(t.events.c.payload, t.events.c.version)).one()
    assert (stored.payload, stored.version) == ({"body": "from the old days"}, 1)


def test_replay_projects_an_upcast_note(store: EventStore, engine: Engine) -> None:
    _insert_v1_note(engine, "cus_a", "legacy note")
    replay.replay(engine)
    with engine.connect() as connection:
        row = connection.execute(select(t.notes.c.text, t.notes.c.author, t.notes.c.customer_id)).one()
    assert tuple(row) == ("legacy note", "unknown", "cus_a")


# --- projections ---------------------------------------------------------------------------------


def test_projecting_an_event_twice_changes_nothing(store: EventStore, engine: Engine) -> None:
    with store.transaction() as tx:
        tx.record_signal("lead.created", lead(name="Ann", email="ann@acme.com"), "l:1", source="test")
        customer_id = tx.appended[-1].stream
        paid = tx.record_signal(
            "invoice.paid",
            ev.InvoiceSignal(
                customer=ev.CustomerRef(email="ann@acme.com"), data={"invoice_id": "in_1", "amount": "10"}
            ),
            "inv:1",
            source="test",
        ).event
    with engine.connect() as connection:
        before = connection.execute(select(t.customers).where(t.customers.c.id == customer_id)).one()
    with store.transaction() as tx:
        tx.project(paid)  # a redelivery of an already-applied event
    with engine.connect() as connection:
        after = connection.execute(select(t.customers).where(t.customers.c.id == customer_id)).one()
    assert after.lifetime_value_cents == before.lifetime_value_cents == 1000
    assert after == before


# --- record_signal resolves to customers (identity rules through the real store) ------------------

# Each case: earlier signals (customer refs), then one more; what should be on record afterwards.
IDENTITY_CASES = [
    pytest.param(
        [{"email": "acme@example.com", "name": "Ann"}],
        {"email": "ACME@Example.com "},
        1,
        [],
        id="email-case-and-whitespace",
    ),
    pytest.param(
        [{"phone": "(415) 555-2671", "name": "Ann"}],
        {"phone": "+1 415 555 2671"},
        1,
        [],
        id="phone-formats",
    ),
    pytest.param(
        [{"email": "ann.lee@gmail.com", "company": "Acme"}],
        {"email": "bob.stone@gmail.com", "company": "Globex"},
        2,
        [],
        id="gmail-at-different-companies",
    ),
    pytest.param(
        [{"email": "ann@acme.com", "name": "Ann Lee"}],
        {"email": "bob@acme.com", "name": "Bob"},
        2,
        ["same company domain acme.com"],
        id="same-company-domain-is-a-possible-duplicate",
    ),
    pytest.param(
        [{"email": "ann@acme.com", "name": "Ann Lee"}],
        {"email": "ann.lee@gmail.com", "name": "ANN  LEE"},
        2,
        ["same name 'ANN  LEE'"],
        id="same-name-is-a-possible-duplicate",
    ),
    pytest.param(
        [{"email": "ann@acme.com"}, {"phone": "415-555-2671"}],
        {"email": "ann@acme.com", "phone": "4155552671"},
        1,
        [],
        id="strong-keys-of-two-customers-merge",
    ),
]


@pytest.mark.parametrize(("earlier", "incoming", "customers", "duplicates"), IDENTITY_CASES)
def test_record_signal_resolves_to_customers(
    store: EventStore,
    engine: Engine,
    earlier: list[dict[str, str]],
    incoming: dict[str, str],
    customers: int,
    duplicates: list[str],
) -> None:
    streams = [
        store.record_signal("lead.created", lead(**ref), f"e:{i}", source="test").event.stream
        for i, ref in enumerate(earlier)
    ]
    last = store.record_signal("message.received", lead(**incoming), "incoming", source="test").event
    assert len(canonical_customers(engine)) == customers
    if customers == 1:
        assert last.stream == streams[0]
    with engine.connect() as connection:
        reasons = connection.execute(select(t.possible_duplicates.c.reason)).scalars().all()
    assert sorted(reasons) == sorted(duplicates)
    assert replay.verify(engine).ok


def test_a_signal_carrying_keys_of_two_customers_merges_them_with_all_their_contacts(
    store: EventStore, engine: Engine
) -> None:
    ann = store.record_signal("lead.created", lead(email="ann@acme.com"), "a", source="t").event.stream
    bob = store.record_signal("lead.created", lead(phone="(415) 555-2671"), "b", source="t").event.stream
    assert ann < bob  # ids sort by creation time, so the older one survives
    both = store.record_signal(
        "message.received", lead(email="ann@acme.com", phone="+14155552671", slack="U9"), "c", source="t"
    )
    assert both.event.stream == ann
    with engine.connect() as connection:
        merged = connection.execute(select(t.customers.c.merged_into).where(t.customers.c.id == bob)).scalar()
        owners = dict(
            connection.execute(select(t.contact_points.c.value, t.contact_points.c.customer_id)).all()
        )
        types = connection.execute(select(t.events.c.type).order_by(t.events.c.position)).scalars().all()
    assert merged == ann
    assert owners == {"ann@acme.com": ann, "+14155552671": ann, "U9": ann}
    assert "customer.merged" in types
    again = store.record_signal("message.received", lead(phone="415 555 2671"), "d", source="t")
    assert again.event.stream == ann


def test_the_merge_group_query_finds_what_group_of_finds_through_a_chain(
    store: EventStore, engine: Engine
) -> None:
    from store.slice import group_of, group_query

    ann = store.record_signal("lead.created", lead(email="ann@acme.com"), "a", source="t").event.stream
    bob = store.record_signal("lead.created", lead(phone="(415) 555-2671"), "b", source="t").event.stream
    cy = store.record_signal("lead.created", lead(slack="U7"), "c", source="t").event.stream
    store.record_signal("message.received", lead(phone="+14155552671", slack="U7"), "bc", source="t")
    store.record_signal("message.received", lead(email="ann@acme.com", slack="U7"), "ac", source="t")
    with engine.connect() as connection:
        for customer in (ann, bob, cy):
            found = connection.execute(group_query(), {"customer_id": customer}).scalars().all()
            assert sorted(found) == sorted(group_of(connection, customer))
        assert sorted(connection.execute(group_query(), {"customer_id": ann}).scalars()) == sorted(
            [ann, bob, cy]
        )


def test_a_retried_signal_that_merged_writes_no_second_merge(store: EventStore, engine: Engine) -> None:
    store.record_signal("lead.created", lead(email="ann@acme.com"), "a", source="t")
    store.record_signal("lead.created", lead(phone="(415) 555-2671"), "b", source="t")
    signal = lead(email="ann@acme.com", phone="+14155552671")
    store.record_signal("message.received", signal, "c", source="t")
    events = count(engine, t.events)
    again = store.record_signal("message.received", signal, "c", source="t")
    assert again.duplicate
    assert count(engine, t.events) == events


def test_first_stage_follows_the_signal_type(store: EventStore, engine: Engine) -> None:
    paid = ev.InvoiceSignal(customer=ev.CustomerRef(email="pay@co.io"), data={"invoice_id": "i", "amount": 5})
    store.record_signal("invoice.paid", paid, "p", source="stripe")
    store.record_signal("lead.created", lead(email="new@co2.io"), "n", source="form")
    stages = {row["domain"]: row["stage"] for row in canonical_customers(engine)}
    assert stages == {"co.io": "customer", "co2.io": "lead"}


def test_a_signal_with_a_bad_email_is_refused_and_writes_nothing(store: EventStore, engine: Engine) -> None:
    with pytest.raises(IdentityError):
        store.record_signal("lead.created", lead(email="not-an-email"), "bad", source="t")
    assert count(engine, t.events) == 0


def test_an_idempotency_key_longer_than_its_column_is_kept_as_its_hash(store: EventStore) -> None:
    from store.log import MAX_KEY_LENGTH, storable_key

    key = "signals:" + "k" * 400
    note = ev.NoteAdded(text="long key", author="test")
    first = store.append(ev.NewEvent(type="note.added", payload=note, stream="cus_long", idempotency_key=key))
    again = store.append(ev.NewEvent(type="note.added", payload=note, stream="cus_long", idempotency_key=key))
    assert not first.duplicate and again.duplicate
    assert again.event.id == first.event.id
    assert first.event.idempotency_key == storable_key(key)
    assert len(first.event.idempotency_key) <= MAX_KEY_LENGTH
    assert storable_key("short") == "short"


@pytest.mark.parametrize("query", ["%", "_", "%%", "\\", "_nn"])
def test_search_treats_like_wildcards_as_literal_characters(
    store: EventStore, engine: Engine, query: str
) -> None:
    from store.slice import find_customers

    store.record_signal("lead.created", lead(name="Ann Lee", email="ann@lee.example"), "w1", source="test")
    store.record_signal("lead.created", lead(name="Bob Stone"), "w2", source="test")
    with engine.connect() as connection:
        assert find_customers(connection, query) == []


def test_search_finds_a_name_that_holds_a_wildcard_character(store: EventStore, engine: Engine) -> None:
    from store.slice import find_customers

    store.record_signal("lead.created", lead(name="100% Juice_Bar"), "w1", source="test")
    store.record_signal("lead.created", lead(name="1000 Juice Bars"), "w2", source="test")
    with engine.connect() as connection:
        assert [row["name"] for row in find_customers(connection, "100%")] == ["100% Juice_Bar"]
        assert [row["name"] for row in find_customers(connection, "juice_bar")] == ["100% Juice_Bar"]


def test_a_signal_the_projections_cannot_hold_is_refused_alike_on_both_databases(
    store: EventStore, engine: Engine
) -> None:
    from store.storable import Unstorable

    grown = ev.LeadCreated(customer=ev.CustomerRef(email="İ" * 200 + "@grow.example"))
    with pytest.raises(Unstorable, match=r"customer\.email"):
        store.record_signal("lead.created", grown, "grown", source="test")
    fraction = ev.InvoiceSignal(
        customer=ev.CustomerRef(email="ann@lee.example"), data={"invoice_id": "in_1", "amount": "1.001"}
    )
    with pytest.raises(Unstorable, match=r"data\.amount"):
        store.record_signal("invoice.created", fraction, "fraction", source="test")
    assert count(engine, t.events) == 0 and count(engine, t.customers) == 0


def test_a_name_whose_key_grows_past_its_column_is_recorded_alike_on_both_databases(
    store: EventStore, engine: Engine
) -> None:
    for key, email in (("n1", "a@grow.example"), ("n2", "b@grow.example")):
        store.record_signal("lead.created", lead(name="ß" * 255, email=email), key, source="test")
    with engine.connect() as connection:
        keys = connection.execute(select(t.customers.c.name_key)).scalars().all()
        reasons = connection.execute(select(t.possible_duplicates.c.reason)).scalars().all()
    assert keys == ["ss" * 127 + "s"] * 2
    assert len(reasons) == 1 and len(reasons[0]) == 255
