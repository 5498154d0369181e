"""Sequencing a batch set-based (store.batch) ends in the same log and tables as one signal at a time.

The same staged rows go into two fresh databases of one backend; one is sequenced a row per transaction
(`batch=1`, Transaction.record_signal), the other in one batch (BatchTransaction). The batch mixes new
customers, known ones, keys added, merges (of customers on record and of customers the batch created),
possible duplicates (by name; by a company domain, new or with more customers than a new one is
compared with, before and after one of its oldest is merged away), invoices and subscriptions, a key
the log already holds, and rows that cannot be recorded. Customer ids are made deterministic in both
runs (they sort by creation time, and which of two customers absorbs the other depends on it); ids of
derived events are random and left out.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, select, update

from store import events as ev
from store import tables as t
from store.db import make_engine, migrate
from store.intake import sequence, stage_all, staging_row
from store.state import TABLES, primary_key
from store.uow import EventStore
from tests.conftest import PG_ADMIN_DSN

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def twin_url(db_url: str, tmp_path: Path, pg_template: str) -> Iterator[str]:
    """A second fresh database on the same backend as db_url."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'twin.sqlite3'}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return
    name = f"crm_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield db_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def signal(kind: str, data: dict[str, Any] | None = None, **customer: str) -> ev.Signal:
    return ev.SIGNAL_TYPES[kind](customer=ev.CustomerRef(**customer), text=f"{kind} text", data=data or {})


ON_RECORD = [  # recorded before the batch: (key, type, signal)
    ("rec:ann", "lead.created", signal("lead.created", name="Ann Lee", email="ann@acme.com")),
    ("rec:bob", "message.received", signal("message.received", name="Bob", phone="+1 415 555 0100")),
    ("rec:cat", "lead.created", signal("lead.created", name="Cat", email="cat@beta.io")),
    # A company domain with more customers than a new one is compared with (identity.DOMAIN_MATCHES).
    ("rec:b1", "lead.created", signal("lead.created", name="B1", email="b1@busy.io", phone="4155550111")),
    ("rec:b2", "lead.created", signal("lead.created", name="B2", email="b2@busy.io")),
    ("rec:b3", "lead.created", signal("lead.created", name="B3", email="b3@busy.io")),
    ("rec:b4", "lead.created", signal("lead.created", name="B4", email="b4@busy.io")),
]
INVOICE = {"invoice_id": "inv_1", "amount": "100.00"}
PLAN = {"subscription_id": "sub_1", "plan": "pro", "amount": "50"}
BATCH = [
    ("b:known", "message.received", signal("message.received", email="ANN@acme.com")),
    ("b:dan", "lead.created", signal("lead.created", name="Dan", email="dan@acme.com")),
    ("b:merge", "message.received", signal("message.received", email="ann@acme.com", phone="4155550100")),
    ("b:eve", "lead.created", signal("lead.created", name="Eve", email="eve@gamma.io")),
    ("b:eve-phone", "message.received", signal("message.received", email="eve@gamma.io", phone="4155550199")),
    ("b:bad", "lead.created", signal("lead.created", name="Unreadable once staged")),
    ("b:cents", "invoice.paid", signal("invoice.paid", {"invoice_id": "i", "amount": "1.001"}, name="Cat")),
    ("b:paid", "invoice.paid", signal("invoice.paid", INVOICE, email="cat@beta.io")),
    ("b:fay", "subscription.created", signal("subscription.created", PLAN, name="Fay", email="fay@acme.com")),
    ("b:twice", "lead.created", signal("lead.created", name="Gus", email="gus@delta.io")),
    ("b:ann-again", "lead.created", signal("lead.created", name="ann  lee", email="ann.lee@other.org")),
    ("b:join", "message.received", signal("message.received", email="dan@acme.com", phone="4155550199")),
    ("b:merged-key", "message.received", signal("message.received", phone="+14155550100")),
    ("b:not-email", "lead.created", signal("lead.created", email="not-an-email")),
    ("b:cancel", "subscription.cancelled", signal("subscription.cancelled", PLAN, email="fay@acme.com")),
    # Compared with the busy domain's oldest three; then one of them is merged away, and the next new
    # customer there is compared with the oldest three left.
    ("b:kim", "lead.created", signal("lead.created", name="Kim", email="kim@busy.io")),
    ("b:busy-join", "message.received", signal("message.received", email="b2@busy.io", phone="4155550111")),
    ("b:lou", "lead.created", signal("lead.created", name="Lou", email="lou@busy.io")),
    # Two new customers at a domain new to the log; one new email twice in a batch.
    ("b:max", "lead.created", signal("lead.created", name="Max Müller", email="max@newco.io")),
    ("b:ned", "lead.created", signal("lead.created", name="Ned", email="ned@newco.io")),
    ("b:ola", "message.received", signal("message.received", name="Ola", email="ola@solo.io")),
    ("b:ola-again", "message.received", signal("message.received", email="OLA@solo.io", phone="4155550177")),
]


def run(url: str, rows: list[dict[str, Any]], batch: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record ON_RECORD, stage rows, sequence them `batch` at a time; what the tables then hold."""
    ids = itertools.count(1)
    monkeypatch.setattr("store.uow.new_customer_id", lambda: f"cus_{next(ids):04d}")
    engine = make_engine(url)
    store = EventStore(engine)
    try:
        for n, (key, kind, payload) in enumerate(ON_RECORD):
            at = AT + timedelta(minutes=n)
            store.record_signal(kind, payload, key, source="test", occurred_at=at, event_id=f"evt-{key}")
        with engine.begin() as connection:
            stage_all(connection, [dict(row) for row in rows])
        with engine.begin() as connection:  # a row no signal model reads (e.g. written by a bug)
            connection.execute(
                update(t.intake).where(t.intake.c.idempotency_key == "b:bad").values(signal={"customer": 5})
            )
        # Recorded another way after it was staged: the log keeps this first event.
        twice = signal("lead.created", name="Gus", email="gus@delta.io")
        store.record_signal(
            "lead.created", twice, "b:twice", source="test", occurred_at=AT, event_id="evt-gus"
        )
        statements = [0]
        event.listen(engine, "before_cursor_execute", lambda *_: statements.__setitem__(0, statements[0] + 1))
        moved = sequence(store, batch=batch)
        return {"moved": moved, "statements": statements[0], **snapshot(engine)}
    finally:
        engine.dispose()


def snapshot(engine: Engine) -> dict[str, Any]:
    signal_ids = {f"evt-{key}" for key, _, _ in ON_RECORD} | {"evt-gus"}
    with engine.connect() as connection:
        events = [
            dict(row) for row in connection.execute(select(t.events).order_by(t.events.c.position)).mappings()
        ]
        signal_ids |= {row["event_id"] for row in connection.execute(select(t.intake)).mappings()}

        def same_id(event_id: str) -> str | None:
            return event_id if event_id in signal_ids else None  # a derived event's id is random

        tables: dict[str, Any] = {
            "events": [{**row, "id": same_id(row["id"]), "recorded_at": None} for row in events],
            "outbox": [
                (row.position, same_id(row.event_id), row.attempts)
                for row in connection.execute(select(t.outbox).order_by(t.outbox.c.position))
            ],
            "intake": [
                (row.idempotency_key, row.event_id, row.position, row.attempts, row.error, row.signal)
                for row in connection.execute(select(t.intake).order_by(t.intake.c.id))
            ],
            "positions": connection.execute(select(t.projection_positions)).all(),
        }
        for name, table in TABLES.items():
            order = [table.c[column] for column in primary_key(name)]
            tables[name] = [
                dict(row) for row in connection.execute(select(table).order_by(*order)).mappings()
            ]
    return tables


def test_a_mixed_batch_recorded_set_based_equals_one_signal_at_a_time(
    db_url: str, twin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = [
        staging_row(kind, payload, key, source="signals") | {"staged_at": AT + timedelta(hours=1, seconds=n)}
        for n, (key, kind, payload) in enumerate(BATCH)
    ]
    one_by_one = run(db_url, staged, 1, monkeypatch)
    as_a_batch = run(twin_url, staged, 200, monkeypatch)

    assert one_by_one["moved"] == as_a_batch["moved"] == len(BATCH) - 3, "all but the three unrecordable"
    assert as_a_batch["statements"] * 3 < one_by_one["statements"], "set-based: a few statements per batch"
    for name in one_by_one.keys() - {"moved", "statements"}:
        assert as_a_batch[name] == one_by_one[name], name
    # The batch did what it says on the tin: merges, keys added, duplicates flagged, money projected.
    customers = {row["id"]: row for row in as_a_batch["customers"]}
    assert sum(row["merged_into"] is not None for row in customers.values()) == 3
    named = {row["name"]: row["id"] for row in customers.values()}
    flagged = {
        (row["customer_id"], row["other_id"])
        for row in as_a_batch["possible_duplicates"]
        if row["status"] == "open"
    }
    for new, others in [("Kim", {"B1", "B2", "B3"}), ("Lou", {"B1", "B3", "B4"}), ("Ned", {"Max Müller"})]:
        assert {other for customer, other in flagged if customer == named[new]} == {
            named[other] for other in others
        }, new
    assert "ola@solo.io" not in named, "a new email's second signal found the customer its first made"
    assert {row["status"] for row in as_a_batch["possible_duplicates"]} >= {"open"}
    assert [row["status"] for row in as_a_batch["invoices"]] == ["paid"]
    assert [row["status"] for row in as_a_batch["subscriptions"]] == ["cancelled"]
    errors = [row[4] for row in as_a_batch["intake"] if row[2] is None]
    assert [error.split(":")[0] for error in errors] == ["ValidationError", "Unstorable", "IdentityError"]


def test_a_derived_key_the_log_already_holds_sends_the_batch_one_at_a_time(store: EventStore) -> None:
    """A batch takes `…#customer` keys as new; when the log holds one, the rows are recorded one by one."""
    early = ev.NewEvent("customer.created", ev.CustomerCreated(name="Early"), "cus_early", "b:hal#customer")
    store.append(early, dispatch=False)
    rows = [
        staging_row(
            "lead.created",
            signal("lead.created", name=name, email=f"{name}@{name}.io"),
            f"b:{name}",
            source="s",
        )
        for name in ("ida", "hal", "jo")
    ]
    with store.engine.begin() as connection:
        stage_all(connection, rows)
    assert sequence(store) == 3
    with store.engine.connect() as connection:
        keys = connection.execute(select(t.events.c.idempotency_key).order_by(t.events.c.position)).scalars()
        assert list(keys) == ["b:hal#customer", "b:ida#customer", "b:ida", "b:hal", "b:jo#customer", "b:jo"]
        query = select(t.events.c.stream).where(t.events.c.idempotency_key == "b:hal#customer")
        assert list(connection.execute(query).scalars()) == ["cus_early"], "the log's event is kept"
