"""Replies and the Sent folder against a real Dovecot and a real SMTP server on loopback: an approved reply
is threaded and filed in Sent (and not mistaken for the operator's own), and a reply the operator files
in Sent by hand is an outbound touch that withdraws the pending proposal for that thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from agents.context import build_context
from bot.bootstrap import App
from bot.replies import Actor
from jobs import handlers as handler_table
from store import lifecycle as lc
from store import tables as t
from store.log import to_event
from tests.integration.mailbox_harness import append, count, mailbox_app, wait_for, watching
from tests.standins.dovecot import Dovecot, message
from tests.standins.smtp import SmtpStandin

HANDLERS = {
    name: handler_table.HANDLERS[name]
    for name in (handler_table.INBOX_TRIAGE, handler_table.EXECUTOR, handler_table.ANSWERED)
}
OPERATOR = Actor("terminal", "local", "Olga")
CUSTOMER = "Ada Lovelace <ada@customer.example>"


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as server:
        yield server


@pytest.fixture
def mailbox(
    dovecot: Dovecot, db_url: str, make_settings: Any, smtp: SmtpStandin
) -> Iterator[tuple[App, str]]:
    user = dovecot.new_user()
    app = mailbox_app(
        make_settings,
        db_url,
        dovecot.url(user),
        handlers=HANDLERS,
        SMTP_URL=smtp.url,
        UNDO_WINDOW_SECONDS="0",
        OPERATORS="terminal:local",
    )
    app.start_jobs()
    yield app, user
    app.close()


def reply_proposal(app: App) -> dict[str, Any]:
    """The send_email proposal the triage made, once there is one."""
    found: list[dict[str, Any]] = []

    def made() -> bool:
        with app.engine.connect() as connection:
            found[:] = [row for row in lc.in_state(connection, "pending") if row["kind"] == "send_email"]
        return bool(found)

    wait_for(made, 60, "a reply proposal")
    return found[0]


def proposal_state(app: App, proposal_id: str) -> str:
    with app.engine.connect() as connection:
        row = lc.get_proposal(connection, proposal_id)
    assert row is not None
    return str(row["state"])


def in_sent(dovecot: Dovecot, user: str, message_id: str) -> bool:
    client = dovecot.client(user)
    try:
        client.select_folder("Sent", readonly=True)
        return bool(client.search(["HEADER", "Message-ID", message_id]))
    finally:
        client.logout()


def test_an_approved_reply_is_threaded_sent_and_filed_in_sent_once(
    dovecot: Dovecot, mailbox: tuple[App, str], smtp: SmtpStandin
) -> None:
    app, user = mailbox
    with watching(app) as run:
        run.wait_until("watching")
        run.wait_until("watching", folder="Sent")
        customer_mail = message(
            sender=CUSTOMER,
            subject="Re: Pricing",
            body="Thanks. And how much is the team plan per seat?",
            message_id="<q1@customer.example>",
            in_reply_to="<q0@op.example>",
        )
        append(dovecot, user, "INBOX", customer_mail)
        proposal = reply_proposal(app)
        assert app.commands.approve(OPERATOR, proposal["id"]).ok
        wait_for(lambda: len(smtp.messages) == 1, 30, "the reply at the SMTP server")
        sent = smtp.messages[0]
        assert sent["In-Reply-To"] == "<q1@customer.example>"
        assert str(sent["References"]).split() == ["<q0@op.example>", "<q1@customer.example>"]
        assert sent["Subject"] == "Re: Pricing"  # "Re:" once, not "Re: Re:"
        assert sent["To"] == "ada@customer.example"
        wait_for(lambda: in_sent(dovecot, user, str(sent["Message-ID"])), 10, "the copy in Sent")
        sent_watcher = run.mailbox.watchers[1]
        wait_for(lambda: sent_watcher.taken.get("ours") == 1, 10, "the Sent watcher to see the copy")
    assert count(app, "message.sent") == 0, (
        "the bot's own reply is the proposal's execution, not the operator's"
    )
    assert proposal_state(app, proposal["id"]) == "executed"
    client = dovecot.client(user)
    client.select_folder("Sent", readonly=True)
    assert len(client.search(["ALL"])) == 1
    client.logout()


def test_a_reply_the_operator_files_in_sent_withdraws_the_pending_proposal_and_counts_as_a_touch(
    dovecot: Dovecot, mailbox: tuple[App, str]
) -> None:
    app, user = mailbox
    with watching(app) as run:
        run.wait_until("watching")
        run.wait_until("watching", folder="Sent")
        append(dovecot, user, "INBOX", message(sender=CUSTOMER, message_id="<q2@customer.example>"))
        proposal = reply_proposal(app)
        own_reply = message(
            sender="Olga <op@example.com>",
            to=CUSTOMER,
            subject="Re: Question about pricing",
            body="Hi Ada, the team plan is 12 EUR per seat.",
            message_id="<own-1@example.com>",
            in_reply_to="<q2@customer.example>",
        )
        append(dovecot, user, "Sent", own_reply)
        wait_for(lambda: proposal_state(app, proposal["id"]) == "withdrawn", 10, "the proposal withdrawn")
    assert count(app, "message.sent") == 1
    assert app.commands.approve(OPERATOR, proposal["id"]).ok is False  # too late: it was answered
    with app.engine.connect() as connection:
        row = lc.get_proposal(connection, proposal["id"])
        assert row is not None and "answered outside" in row["reason"]
        received = connection.execute(select(t.events).where(t.events.c.type == "message.received")).first()
        assert received is not None
        event = to_event(received._mapping)
        context = build_context(connection, event, row["customer_id"])
    assert context is not None
    assert context.last_outbound_at is not None, "the frequency cap counts the operator's own reply"
    assert any(e.type == "message.sent" for e in context.recent_events), "agents see it was answered"


def test_sent_mail_to_someone_who_is_not_a_customer_is_not_recorded(
    dovecot: Dovecot, mailbox: tuple[App, str]
) -> None:
    app, user = mailbox
    with watching(app) as run:
        run.wait_until("watching", folder="Sent")
        append(dovecot, user, "Sent", message(sender="op@example.com", to="mum@family.example"))
        sent_watcher: Any = run.mailbox.watchers[1]
        wait_for(lambda: sent_watcher.taken.get("not_a_customer") == 1, 10, "the Sent watcher to skip it")
    assert count(app, "message.sent") == 0
    assert count(app, "customer.created") == 0
