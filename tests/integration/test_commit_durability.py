"""Which commits wait for the disk: all of them, except the executor's start of an attempt, which the next
durable commit (the handover or the result) flushes with it before anything irreversible happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from jobs.connectors.base import ActionRequest, ActionResult, Handover
from jobs.execute import Executor, default_connectors
from store import db as store_db
from store import literals
from store.log import APPEND_LOCK_KEY
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    commands,
    email_proposal,
    make_customer,
    record,
    row,
    settings_for,
)
from tests.integration.test_store_contract import note


def sent_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the driver is asked to send from now on, in order, whichever way it goes (one by
    one, pipelined, or several in one query, split at `;`), and "COMMIT" for a commit it sends. A
    prepared statement's EXECUTE is noted as the statement it runs."""
    sent: list[str] = []
    execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit
    simple, send = store_db.simple_query, store_db.send_query
    named: dict[str, str] = {}
    form_of = literals.prepared_form

    def formed(query: str) -> Any:
        form = form_of(query)
        if form is not None:
            named[form.name] = form.statement.split(" AS ", 1)[1]
        return form

    def noted(query: Any) -> None:
        text = query.decode() if isinstance(query, bytes) else str(query)
        for part in filter(None, (part.strip() for part in text.split(";"))):
            running = part.removeprefix("EXECUTE ").split("(", 1)[0] if part.startswith("EXECUTE ") else None
            sent.append(named.get(running, part) if running is not None else part)

    def watched(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        noted(query)
        return execute(cursor, query, *args, **kwargs)

    def sent_simply(driver: Any, query: str) -> Any:  # store.db's own sending, past the cursor
        noted(query)
        return simple(driver, query)

    def sent_ahead(driver: Any, query: str) -> None:  # the same, its results read later
        noted(query)
        send(driver, query)

    def committed(connection: Any) -> None:
        if connection.pgconn.transaction_status != TransactionStatus.IDLE:  # else it sends nothing
            sent.append("COMMIT")
        commit(connection)

    monkeypatch.setattr(psycopg.Cursor, "execute", watched)
    monkeypatch.setattr(psycopg.Connection, "commit", committed)
    monkeypatch.setattr(store_db, "simple_query", sent_simply)
    monkeypatch.setattr(store_db, "send_query", sent_ahead)
    monkeypatch.setattr(literals, "prepared_form", formed)
    return sent


def setting(tx: Any) -> str:
    return str(tx.connection.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def test_a_transaction_waits_for_the_disk_unless_told_not_to(store: EventStore) -> None:
    if store.engine.dialect.name != "postgresql":
        with store.transaction(durable=False) as tx:  # SQLite: the flag changes nothing, and works
            tx.append(note("s", "k-sqlite"))
        assert store.get(tx.appended[0].id) is not None
        return
    with store.transaction() as tx:
        assert setting(tx) == "on"
    with store.transaction(durable=False) as tx:
        assert setting(tx) == "off"
        tx.append(note("s", "k-fast"))
    with store.transaction() as tx:
        assert setting(tx) == "on", "SET LOCAL: the next transaction on the connection waits again"
    assert len([e for e in store.read_all() if e.idempotency_key == "k-fast"]) == 1


class Recording:
    """A connector that cannot deduplicate: it hands over, then acts, noting which commits waited."""

    name = "recording"
    dedupes = False

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        handover()
        self.log.append("ACT")
        return ActionResult(reference="sent")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_only_the_start_of_an_attempt_commits_without_waiting(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, UNDO_WINDOW_SECONDS=0)
    cmds, _, _ = commands(store, settings)
    pid = record(store, email_proposal(make_customer(store)))
    assert cmds.approve(OPERATOR, pid).ok
    connectors = default_connectors(store, settings, lambda name: None)
    sent = sent_statements(monkeypatch)
    connectors["send_email"] = Recording(sent)  # "ACT" joins the statements, in its place
    assert Executor(store, connectors).execute(pid).status == "executed"

    def kind(statement: str) -> str | None:
        if "synchronous_commit" in statement:
            return "NO-WAIT"
        if "INSERT INTO events" in statement:  # alone, or inside a handover's WITH
            return "EVENT"
        return statement if statement in {"COMMIT", "ACT"} else None

    seen = [found for found in map(kind, sent) if found]
    # started (not waited for), handover (waited for, before the act), executed (waited for)
    assert seen == ["NO-WAIT", "EVENT", "COMMIT", "EVENT", "COMMIT", "ACT", "EVENT", "COMMIT"]
    assert row(store, pid)["state"] == "executed"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_log_transaction_opens_with_its_first_query_and_gives_the_connection_back_as_it_was(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(note("s", "k-first"))  # the pool's first connection, and SQLAlchemy's look at the server
    sent = sent_statements(monkeypatch)
    store.append(note("s", "k-one"))
    assert sent[:2] == ["BEGIN", f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"] and sent[-1] == "COMMIT"
    assert store_event_id(store, "k-one") is not None
    with pytest.raises(RuntimeError), store.transaction() as tx:  # a failure inside rolls everything back
        tx.append(note("s", "k-lost"))
        raise RuntimeError("the caller failed")
    assert store_event_id(store, "k-lost") is None
    with store.engine.connect() as connection:  # the pool's connection is back out of autocommit
        driver = connection.connection.driver_connection
        assert driver is not None and driver.autocommit is False
        connection.exec_driver_sql("CREATE TEMPORARY TABLE scratch (n int)")
        connection.rollback()  # … so what it did without a commit is undone
        assert connection.exec_driver_sql("SELECT to_regclass('pg_temp.scratch')").scalar_one() is None


def store_event_id(store: EventStore, key: str) -> str | None:
    return next((e.id for e in store.read_all() if e.idempotency_key == key), None)
