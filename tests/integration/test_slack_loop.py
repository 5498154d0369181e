"""The operator's loop on Slack: /digest brings its chart (privately, into the operator's direct
messages) and the pending approvals with their buttons, and a reminder before expiry reaches the
channel the proposal was posted in with a fresh card. Signed requests to the real web app; Slack's
side is the stand-in. On SQLite and Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.bootstrap import App, bootstrap
from bot.web import create_app
from jobs.reminders import remind_due
from store import lifecycle as lc
from tests.integration import slack_harness as h
from tests.integration.proposal_helpers import email_proposal
from tests.standins.slack_api import SlackStandIn

Stack = tuple[App, SlackStandIn, h.SlackClient]


@pytest.fixture
def stack(db_url: str, make_settings: Any) -> Iterator[Stack]:
    with SlackStandIn(bot_token=h.BOT_TOKEN, app_token=h.APP_TOKEN) as slack:
        app = bootstrap(make_settings(**h.slack_settings(slack.api_url, db_url)), handlers={})
        try:
            with h.Server(create_app(app)) as server:
                yield app, slack, h.SlackClient(server.url, slack)
        finally:
            app.close()


def test_digest_on_demand_brings_the_chart_privately_and_the_approvals_with_buttons(stack: Stack) -> None:
    app, slack, client = stack
    h.propose_email(app, h.add_customer(app))
    client.command("/digest", "", response="digest")
    answer = slack.wait_for("response_url", lambda c: c.path.endswith("/digest"))[-1]
    text = json.dumps(answer.body)
    assert "Daily digest" in text and "#1 Send email" in text and "crm:approve" in text
    opened = slack.wait_for("conversations.open")[-1]
    assert opened.body["users"] == h.OPERATOR
    done = slack.wait_for("files.completeUploadExternal")[-1]
    assert done.body["channel_id"] == f"D{h.OPERATOR}", "into the operator's direct messages"
    assert slack.of("chat.postMessage") == [], "nothing of the digest in the shared channel"


def test_a_reminder_reaches_the_channel_with_a_fresh_card(stack: Stack) -> None:
    app, slack, _ = stack
    expires = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    proposal = email_proposal(h.add_customer(app), to="ada@acme.example")
    pid, _ = lc.record_proposal(
        app.store, proposal, verdict="approval", rules=[], key="t:r", expires_at=expires
    )
    app.notifier.post(pid)
    assert remind_due(
        app.store, app.notifier, ttl_hours=24, share=0.75, now=expires - timedelta(hours=6)
    ) == [pid]
    posts = slack.wait_for("chat.postMessage", count=3)
    assert posts[1].body["text"].startswith("⏰ #1 expires in 6h")
    assert posts[2].body["channel"] == h.OPS_CHANNEL and "crm:approve" in json.dumps(posts[2].body["blocks"])
    assert len(lc.messages_of(app.engine, pid)) == 2, "the fresh card is kept current too"
