"""Which commits wait for the disk: all of them, except the executor's start of an attempt, which the next
durable commit (the handover or the result) flushes with it before anything irreversible happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from jobs.connectors.base import ActionRequest, ActionResult, Handover
from jobs.execute import Executor, default_connectors
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
def test_only_the_start_of_an_attempt_commits_without_waiting(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, UNDO_WINDOW_SECONDS=0)
    cmds, _, _ = commands(store, settings)
    pid = record(store, email_proposal(make_customer(store)))
    assert cmds.approve(OPERATOR, pid).ok
    seen: list[str] = []
    connectors = default_connectors(store, settings, lambda name: None)
    connectors["send_email"] = Recording(seen)

    @event.listens_for(store.engine, "before_cursor_execute")
    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        if "synchronous_commit" in text:
            seen.append("NO-WAIT")
        elif text.startswith("INSERT INTO events"):
            seen.append("EVENT")

    @event.listens_for(store.engine, "commit")
    def commit(conn: Any) -> None:
        seen.append("COMMIT")

    try:
        assert Executor(store, connectors).execute(pid).status == "executed"
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)
        event.remove(store.engine, "commit", commit)
    # started (not waited for), handover (waited for, before the act), executed (waited for)
    assert seen == ["NO-WAIT", "EVENT", "COMMIT", "EVENT", "COMMIT", "ACT", "EVENT", "COMMIT"]
    assert row(store, pid)["state"] == "executed"
