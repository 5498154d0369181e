"""Short handles: every proposal has a number (#12) shown on its card, and typed commands take the
number or any unique piece of the id; an ambiguous piece says so."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import select

from bot.commands import Commands
from store import lifecycle as lc
from store import tables as t
from store.db import alembic_config
from store.replay import replay, verify
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    email_proposal,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)


def _three(store: EventStore) -> list[str]:
    customer = make_customer(store)
    return [
        record(store, email_proposal(customer)),
        record(store, proposal(customer, "create_task", {"title": "Call Ada"})),
        record(store, proposal(customer, "add_note", {"text": "likes mornings"})),
    ]


def test_proposals_are_numbered_in_order_and_the_number_is_on_the_card(
    store: EventStore, tmp_path: Path
) -> None:
    pids = _three(store)
    assert [row(store, pid)["number"] for pid in pids] == [1, 2, 3]
    commands = Commands(store, settings_for(tmp_path))
    shown = commands.run(OPERATOR, "pending")
    assert "#2 · create_task · Ada Lovelace · “Call Ada” · 0s" in shown.lines
    card = commands.run(OPERATOR, "show 2")
    assert card.ok and card.proposals[0].id == pids[1]
    assert card.proposals[0].title.startswith("#2 ")
    assert card.proposals[0].handle == "2"


def test_approve_by_number_hash_number_and_id_pieces(store: EventStore, tmp_path: Path) -> None:
    pids = _three(store)
    commands = Commands(store, settings_for(tmp_path))
    assert commands.run(OPERATOR, "approve 2").proposal_id == pids[1]
    assert commands.run(OPERATOR, "reject #3 not now").proposal_id == pids[2]
    tail = pids[0][-6:]  # the random end of the id, as read off a card
    answer = commands.run(OPERATOR, f"why {tail}")
    assert answer.ok and answer.proposal_id == pids[0]
    assert row(store, pids[1])["state"] == "approved"
    assert row(store, pids[2])["state"] == "rejected"


def test_an_ambiguous_piece_says_so_and_changes_nothing(store: EventStore, tmp_path: Path) -> None:
    pids = _three(store)
    commands = Commands(store, settings_for(tmp_path))
    shared = pids[0][4:8]  # the start of the time part, the same for ids made in one test
    assert all(pid.startswith(f"prp_{shared}") for pid in pids)
    answer = commands.run(OPERATOR, f"approve {shared}")  # typed without "prp_"
    assert not answer.ok and answer.code == "invalid"
    assert "matches several proposals" in answer.text and "#1" in answer.text and "#3" in answer.text
    assert all(row(store, pid)["state"] == "pending" for pid in pids)


def test_unknown_and_too_short_handles_are_not_found(store: EventStore, tmp_path: Path) -> None:
    _three(store)
    commands = Commands(store, settings_for(tmp_path))
    for typed in ("99", "#0", "ab", "zzzz", "50%", "prp_"):
        answer = commands.run(OPERATOR, f"approve {typed}")
        assert not answer.ok and answer.code == "not_found", typed
        assert "`pending` lists them" in answer.text
    with store.engine.connect() as connection:
        assert lc.proposals_matching(connection, "") == []


def test_replay_gives_every_proposal_the_same_number(store: EventStore) -> None:
    pids = _three(store)
    replay(store.engine)
    assert [row(store, pid)["number"] for pid in pids] == [1, 2, 3]
    assert verify(store.engine).ok
    customer = row(store, pids[0])["customer_id"]
    assert row(store, record(store, email_proposal(customer)))["number"] == 4


def test_the_migration_numbers_existing_proposals_from_the_log(store: EventStore) -> None:
    pids = _three(store)
    config = alembic_config(store.engine.url.render_as_string(hide_password=False))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert [row(store, pid)["number"] for pid in pids] == [1, 2, 3]
    with store.engine.connect() as connection:
        counter = connection.execute(select(t.counters.c.value)).scalar_one()
    assert counter == 3
    assert verify(store.engine).ok
