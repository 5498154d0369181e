"""Per-kind rights in OPERATORS, on Slack and Telegram (both stand-ins), and the decision audit.

`slack:U0ALICE=*,slack:U0BOB=send_email,telegram:4242=send_email|create_task`: Bob and Olga may approve
emails; a refund needs Alice. A refused tap is told in words ("not allowed to approve refunds"), changes
nothing, and is logged as `decision.refused`; `/audit` lists it with the decisions. SQLite and Postgres.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.bootstrap import App, bootstrap
from bot.commands import Actor
from store import lifecycle as lc
from store import tables as t
from store.settings import SettingsError
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as h
from tests.integration.both_harness import both_surfaces

RIGHTS = (
    f"slack:{sh.OPERATOR}=*,slack:{sh.OPERATOR_2}=send_email,telegram:{h.OPERATOR_ID}=send_email|create_task"
)


@pytest.fixture
def both(db_url: str, make_settings: Any) -> Iterator[dict[str, Any]]:
    with both_surfaces(make_settings, db_url, RIGHTS) as running:
        yield running


def refund(container: App, customer_id: str) -> str:
    return h.propose(
        container,
        customer_id,
        key="refund",
        kind="issue_refund",
        params={"invoice_id": "inv_1", "amount_cents": 4900, "reason": "double charge"},
        draft=None,
        rationale="Charged twice for March.",
    )


def state_of(container: App, pid: str) -> str:
    with container.engine.connect() as connection:
        row = lc.get_proposal(connection, pid)
    assert row is not None
    return str(row["state"])


def refusals(container: App) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        rows = connection.execute(
            select(t.events.c.payload, t.events.c.stream).where(t.events.c.type == "decision.refused")
        ).all()
    return [{**payload, "stream": stream} for payload, stream in rows]


def test_telegram_operator_without_the_refund_right_is_told_in_words_and_it_is_logged(
    both: dict[str, Any],
) -> None:
    api, container = both["api"], both["container"]
    customer = h.add_customer(container)
    pid = refund(container, customer)
    message_id = h.post(container, pid)
    before = dict(h.message(api, h.OPS_CHAT, message_id))

    api.press(h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(before)["Approve"])
    answer = api.wait_call("answerCallbackQuery")
    assert answer.params["text"].endswith(
        "Sorry, you are not allowed to approve refunds. This attempt was logged."
    )
    time.sleep(0.3)
    assert h.message(api, h.OPS_CHAT, message_id) == before
    assert state_of(container, pid) == "pending"
    [logged] = refusals(container)
    assert logged["by"] == f"telegram:{h.OPERATOR_ID}" and logged["stream"] == pid
    assert logged["reason"] == "not allowed to approve refunds" and logged["action"] == "approve issue_refund"

    # An email is within Olga's rights.
    email = h.propose(container, customer, key="email")
    email_message = h.post(container, email)
    api.press(h.OPERATOR, h.OPS_CHAT, email_message, f"approve:{email}")
    both["smtp"].wait_for(1)
    assert state_of(container, email) in {"approved", "executing", "executed"}


def test_slack_operator_limited_to_emails_cannot_approve_or_reject_a_refund_but_a_full_operator_can(
    both: dict[str, Any],
) -> None:
    slack, client, container = both["slack"], both["client"], both["container"]
    pid = refund(container, h.add_customer(container))
    container.notifier.post(pid)
    slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))

    assert client.click(f"approve:{pid}", user=sh.OPERATOR_2, response="bob").status_code == 200
    told = slack.wait_for("response_url", lambda c: "bob" in c.path)[-1]
    assert "not allowed to approve refunds" in json.dumps(told.body)
    assert client.command("/pending", "", user=sh.OPERATOR_2, response="bob-reads").status_code == 200
    reads = slack.wait_for("response_url", lambda c: "bob-reads" in c.path)[-1]
    # reading is not deciding: Bob still sees what waits, listed with its Show button
    assert f'"value": "show {number_of(container, pid)}"' in json.dumps(reads.body)
    assert state_of(container, pid) == "pending"
    assert [r["reason"] for r in refusals(container)] == ["not allowed to approve refunds"]

    assert client.click(f"approve:{pid}", user=sh.OPERATOR, response="alice").status_code == 200
    slack.wait_for("chat.update", lambda c: pid in json.dumps(c.body) and "Approved by" in json.dumps(c.body))
    assert state_of(container, pid) != "pending"


def test_audit_lists_who_decided_what_when_and_the_refused_attempts(both: dict[str, Any]) -> None:
    api, container = both["api"], both["container"]
    commands = container.commands
    customer = h.add_customer(container)
    pid = refund(container, customer)
    olga = Actor("telegram", str(h.OPERATOR_ID), "@olga")
    alice = Actor("slack", sh.OPERATOR, "alice")
    assert not commands.approve(olga, pid).ok
    assert commands.reject(alice, pid, "already refunded").ok

    api.message_update(h.OPERATOR, "/audit")
    text = api.wait_call("sendMessage", lambda p: "decision(s)" in p.get("text", "")).params["text"]
    assert "1 decision(s) in the last 7 day(s) · cost $0.0000 · 1 refused attempt(s)" in text
    assert "rejected by alice (slack) · #1 Issue refund · Ada Lovelace" in text
    assert "REFUSED @olga: approve issue_refund (not allowed to approve refunds)" in text

    assert commands.audit(alice, "ada", 1).lines[0].startswith("1 decision(s) on Ada Lovelace")
    assert commands.run(alice, "audit nobody-here 3").code == "not_found"
    assert commands.run(alice, "audit 0").code == "invalid"
    assert commands.run(alice, "audit -4").code == "invalid"
    assert not commands.run(Actor("slack", sh.STRANGER), "audit").ok


@pytest.mark.parametrize(
    ("operators", "named"),
    [
        ("slack:U1=send_emails", "send_emails, which is no action kind"),
        ("slack:U1=send_email|", "after = list the action kinds"),
        ("slack:U1=", "after = list the action kinds"),
        ("slack=*", "is not surface:id[=rights]"),
    ],
)
def test_malformed_rights_stop_at_start_naming_the_fix(
    operators: str, named: str, make_settings: Any, tmp_path: Any
) -> None:
    with pytest.raises(SettingsError, match="OPERATORS") as raised:
        bootstrap(make_settings(OPERATORS=operators, DATABASE_URL=f"sqlite:///{tmp_path}/x.db"))
    assert named in str(raised.value) and "\n" not in str(raised.value)


def number_of(container: Any, pid: str) -> int:
    """The proposal's short handle (the number on its card)."""
    with container.store.engine.connect() as connection:
        row = lc.get_proposal(connection, pid)
    assert row is not None
    return int(row["number"])
