"""Duplicates reconciled in one tap, on Slack and Telegram at once (both stand-ins, one store).

A possible duplicate (same name) reaches the curator through the handler table and comes
back as a proposal with Merge / Not the same on both surfaces; a merge through a shared strong key is
announced with Undo; `/merge` and `/unmerge` are typed commands; after a merge the old name finds the
merged customer. The curator, the merge announcer and the executor run as they do in production (the
in-process queue); the other handlers are left out. On SQLite and Postgres.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.bootstrap import App
from jobs.handlers import EXECUTOR, HANDLERS, IDENTITY, MEMORY_CURATOR
from store import events as ev
from store import lifecycle as lc
from store import tables as t
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as h
from tests.integration.both_harness import both_surfaces
from tests.standins.telegram_api import TelegramStandIn

# The handlers that turn a flagged pair or a shared key into a card, and carry out the decision.
RECONCILING = {name: HANDLERS[name] for name in (MEMORY_CURATOR, IDENTITY, EXECUTOR)}
OPERATORS = f"slack:{sh.OPERATOR},telegram:{h.OPERATOR_ID}"


@pytest.fixture
def both(db_url: str, make_settings: Any) -> Iterator[dict[str, Any]]:
    with both_surfaces(make_settings, db_url, OPERATORS, RECONCILING) as running:
        yield running


def lead(container: App, name: str, email: str, phone: str | None = None, key: str | None = None) -> str:
    """A customer as a lead.created signal makes one; returns the customer the signal landed on."""
    ref = ev.CustomerRef(name=name, email=email, phone=phone)
    signal = ev.LeadCreated(customer=ref, text="hello")
    return container.store.record_signal(
        "lead.created", signal, key or f"test:{email}", source="test"
    ).event.stream


def proposal_for(container: App, kind: str, customer_id: str, agent: str | None = None) -> str:
    """The id of the (first) proposal of this kind on the customer, once the handlers recorded it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with container.engine.connect() as connection:
            p = t.proposals.c
            query = select(p.id).where(p.kind == kind, p.customer_id == customer_id)
            if agent:
                query = query.where(p.agent == agent)
            found = connection.execute(query).scalars().first()
        if found:
            return str(found)
        time.sleep(0.05)
    raise AssertionError(f"no {kind} proposal for {customer_id}")


def posted_on_both(container: App, pid: str) -> None:
    """Wait until both copies of the proposal are recorded (a tap before that refreshes only one)."""
    wait_until(
        lambda: {m["surface"] for m in lc.messages_of(container.engine, pid)} == {"slack", "telegram"},
        f"{pid} posted on Slack and Telegram",
    )


def telegram_message_of(api: TelegramStandIn, pid: str) -> int:
    """The Telegram message showing the proposal (its buttons carry the id)."""

    def find() -> int | None:
        for (chat, message_id), message in list(api.messages.items()):
            if chat == h.OPS_CHAT and pid in json.dumps(message.get("reply_markup") or {}):
                return message_id
        return None

    return int(api.wait_for(find, what=f"the Telegram message of {pid}"))


def merged_into(container: App, customer_id: str) -> str | None:
    with container.engine.connect() as connection:
        return connection.execute(
            select(t.customers.c.merged_into).where(t.customers.c.id == customer_id)
        ).scalar_one()


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def count(container: App, event_type: str) -> int:
    with container.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.type == event_type)
        return int(connection.execute(query).scalar_one())


def test_a_possible_duplicate_is_asked_on_both_surfaces_and_merge_on_telegram_merges_and_offers_undo(
    both: dict[str, Any],
) -> None:
    api, slack, container = both["api"], both["slack"], both["container"]
    ada = lead(container, "Ada Lovelace", "ada@acme.example")
    # The same name from a personal address: a possible duplicate (a colleague at the same domain is not)
    bea = lead(container, "Ada Lovelace", "ada.lovelace@fastmail.example")
    pid = proposal_for(container, "merge_customers", bea)
    posted_on_both(container, pid)

    posted = slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))[-1]
    labels = [
        element["text"]["text"]
        for block in posted.body["blocks"]
        for element in block.get("elements", [])
        if element.get("type") == "button"
    ]
    assert labels[:2] == ["Merge", "Not the same"] and "Edit" not in labels and "Approve" not in labels
    message_id = telegram_message_of(api, pid)
    buttons = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))
    assert buttons["Merge"] == f"approve:{pid}" and buttons["Not the same"] == f"distinct:{pid}"
    assert "same name 'Ada Lovelace'" in h.message(api, h.OPS_CHAT, message_id)["text"]

    api.press(h.OPERATOR, h.OPS_CHAT, message_id, buttons["Merge"])
    wait_until(lambda: merged_into(container, bea) == ada, "Bea merged into Ada (the older record)")
    api.wait_for(
        lambda: "Undo" in h.buttons_of(h.message(api, h.OPS_CHAT, message_id)), what="Undo on Telegram"
    )
    slack.wait_for("chat.update", lambda c: pid in json.dumps(c.body) and "Undo" in json.dumps(c.body))
    assert count(container, "proposal.recorded") == 1, "the executor's own merge is not announced again"

    # The merged record's own address finds the customer it is part of now.
    api.message_update(h.OPERATOR, "/customer ada.lovelace@fastmail.example")
    answer = api.wait_call("sendMessage", lambda p: "Ada Lovelace" in p.get("text", ""))
    assert bea in answer.params["text"], "the slice lists the merged record"

    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Undo"]
    )
    wait_until(lambda: merged_into(container, bea) is None, "Bea a customer of her own again")


def test_not_the_same_on_slack_rejects_the_merge_dismisses_the_pair_and_updates_telegram(
    both: dict[str, Any],
) -> None:
    api, slack, container = both["api"], both["slack"], both["container"]
    lead(container, "Ada Lovelace", "ada@acme.example")
    bea = lead(container, "Ada Lovelace", "ada@lovelace-consulting.example")  # same name, someone else
    pid = proposal_for(container, "merge_customers", bea)
    posted_on_both(container, pid)
    message_id = telegram_message_of(api, pid)
    slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))

    assert both["client"].click(f"distinct:{pid}", user=sh.OPERATOR).status_code == 200
    api.wait_for(
        lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="Telegram buttons gone"
    )
    assert "not the same customer" in h.message(api, h.OPS_CHAT, message_id)["text"]
    with container.engine.connect() as connection:
        status = connection.execute(
            select(t.possible_duplicates.c.status).where(t.possible_duplicates.c.customer_id == bea)
        ).scalar_one()
        row = lc.get_proposal(connection, pid)
    assert status == "dismissed" and row is not None and row["state"] == "rejected"
    assert merged_into(container, bea) is None


def test_a_merge_through_a_shared_phone_number_is_announced_with_undo_on_both_surfaces(
    both: dict[str, Any],
) -> None:
    api, slack, container = both["api"], both["slack"], both["container"]
    first = lead(container, "Cleo", "cleo@example.org")
    second = lead(container, "Cleo M.", "c.m@example.net", phone="+14155550100")
    # One signal carrying both strong keys: the two records are one person.
    survivor = lead(container, "Cleo", "cleo@example.org", phone="+14155550100", key="test:both")
    assert survivor == first and merged_into(container, second) == first

    pid = proposal_for(container, "merge_customers", first, agent="identity")
    posted_on_both(container, pid)
    update = slack.wait_for(
        "chat.update", lambda c: pid in json.dumps(c.body) and "Undo" in json.dumps(c.body)
    )[-1]
    assert "shared phone +14155550100" in json.dumps(update.body)
    message_id = telegram_message_of(api, pid)
    api.wait_for(
        lambda: "Undo" in h.buttons_of(h.message(api, h.OPS_CHAT, message_id)), what="Undo on Telegram"
    )
    assert count(container, "customer.merged") == 1, "announcing the merge does not merge again"

    assert both["client"].click(f"undo:{pid}", user=sh.OPERATOR).status_code == 200
    wait_until(lambda: merged_into(container, second) is None, "the merge undone")


def test_merge_and_unmerge_typed_on_slack_and_telegram(both: dict[str, Any]) -> None:
    api, slack, container = both["api"], both["slack"], both["container"]
    ada = lead(container, "Ada Lovelace", "ada@acme.example")
    dora = lead(container, "Dora", "dora@gmail.com")  # free mail, different name: nobody flags them

    assert both["client"].command("/merge", "dora ada@acme.example", response="merge").status_code == 200
    merged = slack.wait_for("response_url", lambda c: "merge" in c.path)[-1]
    assert "Merging Dora into Ada Lovelace" in json.dumps(merged.body)
    wait_until(lambda: merged_into(container, dora) == ada, "Dora merged into Ada")
    # The old name finds the customer Dora is part of now.
    api.message_update(h.OPERATOR, "/customer dora")
    answer = api.wait_call("sendMessage", lambda p: "Ada Lovelace" in p.get("text", ""))
    assert dora in answer.params["text"], "the slice lists the merged record"

    api.message_update(h.OPERATOR, "/unmerge dora")
    api.wait_call("sendMessage", lambda p: "Unmerged: Dora" in p.get("text", ""))
    assert merged_into(container, dora) is None

    api.message_update(h.OPERATOR, "/merge dora")
    api.wait_call("sendMessage", lambda p: "Usage: merge" in p.get("text", ""))
    api.message_update(h.OPERATOR, "/merge dora nobody-like-this")
    api.wait_call("sendMessage", lambda p: "No customer matches 'nobody-like-this'" in p.get("text", ""))
    api.message_update(h.OPERATOR, "/unmerge")
    api.wait_call("sendMessage", lambda p: "Nothing is merged." in p.get("text", ""))
