"""The Slack surface over Socket Mode: the stand-in's WebSocket sends envelopes, the app acks them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.bootstrap import App, bootstrap
from bot.slack import start_slack
from store import lifecycle as lc
from store import tables as t
from tests.integration import slack_harness as h
from tests.standins import slack_requests as sr
from tests.standins.slack_api import SlackStandIn


@pytest.fixture
def socket_env(db_url: str, make_settings: Any) -> Iterator[tuple[App, SlackStandIn, list[str]]]:
    with SlackStandIn(bot_token=h.BOT_TOKEN, app_token=h.APP_TOKEN) as slack:
        settings = make_settings(**h.slack_settings(slack.api_url, db_url, SLACK_APP_TOKEN=h.APP_TOKEN))
        container = bootstrap(settings, handlers={})
        scheduled = h.install_recording_commands(container)
        handler = start_slack(container)
        slack.wait_for_socket()
        try:
            yield container, slack, scheduled
        finally:
            handler.close()
            container.close()


def _state(container: App, pid: str) -> str:
    with container.engine.connect() as connection:
        row = lc.get_proposal(connection, pid)
    assert row is not None
    return str(row["state"])


def test_socket_mode_connects_with_the_app_token_and_checks_the_bot_token(socket_env: Any) -> None:
    _, slack, _ = socket_env
    opened = slack.of("apps.connections.open")
    assert opened and opened[0].headers["Authorization"] == f"Bearer {h.APP_TOKEN}"
    assert slack.of("auth.test")[0].headers["Authorization"] == f"Bearer {h.BOT_TOKEN}"


def test_slash_command_over_socket_mode_is_acked_and_answered(socket_env: Any) -> None:
    container, slack, _ = socket_env
    h.add_customer(container)
    payload = sr.slash_payload("/customer", "acme", user=h.OPERATOR, response_url=slack.response_url("sm"))
    envelope = slack.send_envelope("slash_commands", payload)
    assert slack.wait_ack(envelope)["envelope_id"] == envelope
    assert "Ada Lovelace" in json.dumps(slack.wait_for("response_url")[-1].body)


def test_approve_edit_and_reject_over_socket_mode(socket_env: Any) -> None:
    container, slack, scheduled = socket_env
    customer = h.add_customer(container)
    approve, edit, reject = (h.propose_email(container, customer, key=k) for k in ("a", "e", "r"))
    for pid in (approve, edit, reject):
        container.notifier.post(pid)

    envelope = slack.send_envelope(
        "interactive", sr.click(f"approve:{approve}", user=h.OPERATOR, response_url=slack.response_url())
    )
    slack.wait_ack(envelope)
    slack.wait_for("chat.update", lambda c: approve in json.dumps(c.body))
    assert _state(container, approve) == "approved"

    slack.send_envelope(
        "interactive", sr.click(f"edit:{edit}", user=h.OPERATOR, response_url=slack.response_url())
    )
    opened = slack.wait_for("views.open")[-1].body["view"]
    opened = json.loads(opened) if isinstance(opened, str) else opened
    submit = sr.submission(
        opened,
        {
            "field:body": {"value": "Edited over a socket"},
            "field:subject": {"value": "Hi"},
            "field:to": {"value": "ada@acme.example"},
        },
        user=h.OPERATOR,
    )
    ack = slack.wait_ack(slack.send_envelope("interactive", submit))
    assert ack.get("payload") in (None, {}, "")
    assert _state(container, edit) == "approved"

    slack.send_envelope(
        "interactive", sr.click(f"reject:{reject}", user=h.OPERATOR, response_url=slack.response_url())
    )
    opened = slack.wait_for("views.open", count=2)[-1].body["view"]
    opened = json.loads(opened) if isinstance(opened, str) else opened
    slack.wait_ack(
        slack.send_envelope(
            "interactive", sr.submission(opened, {"reason": {"reason_input": "not now"}}, user=h.OPERATOR)
        )
    )
    assert _state(container, reject) == "rejected"
    assert sorted(scheduled) == sorted([approve, edit])


def test_socket_mode_retry_of_an_event_makes_one_signal(socket_env: Any) -> None:
    container, slack, _ = socket_env
    h.add_customer(container)
    slack.send_envelope(
        "slash_commands",
        sr.slash_payload(
            "/customer", "acme link", user=h.OPERATOR, response_url=slack.response_url("l"), channel="C0ACME"
        ),
    )
    slack.wait_for("response_url")
    event = sr.message_event(
        "hello from acme", user="U0CUST", channel="C0ACME", ts="1700000300.000100", event_id="Ev0SOCK"
    )
    first = slack.send_envelope("events_api", event)
    slack.wait_ack(first)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with container.engine.connect() as connection:
            seen = connection.execute(select(t.slack_events_seen.c.event_id)).scalars().all()
        if seen:
            break
        time.sleep(0.05)
    retry = slack.send_envelope("events_api", event, retry_attempt=1, retry_reason="timeout")
    slack.wait_ack(retry)
    time.sleep(0.3)
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.events.c.id).where(t.events.c.type == "message.received")).all()
    assert len(rows) == 1
