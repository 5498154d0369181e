"""The operator's loop on Telegram: the compact /pending with a "show" button per line, Reject asking
for a reason with a reply prompt, and /digest with its chart. The real python-telegram-bot code
polling the stand-in, on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.bootstrap import App, bootstrap
from bot.commands import Actor
from jobs.reminders import remind_due
from store import lifecycle as lc
from tests.integration import telegram_harness as h
from tests.integration.proposal_helpers import email_proposal
from tests.standins.telegram_api import TelegramStandIn


@dataclass
class Loop:
    """The app polling the Telegram stand-in, with a loopback SMTP server for what it sends."""

    app: App
    api: TelegramStandIn
    smtp: h.SmtpServer


@pytest.fixture
def loop(db_url: str, make_settings: Any) -> Iterator[Loop]:
    server = TelegramStandIn(h.TOKEN).start()
    try:
        with h.smtp_server() as smtp:
            built = bootstrap(make_settings(**h.telegram_env(server, db_url, smtp.port)), handlers={})
            try:
                with h.polling(built):
                    server.wait_polling()
                    yield Loop(built, server, smtp)
            finally:
                built.close()
    finally:
        server.stop()


def test_pending_is_a_compact_list_and_show_brings_the_whole_card(loop: Loop) -> None:
    running, api = loop.app, loop.api
    customer = h.add_customer(running)
    h.propose(running, customer, key="p1")
    h.propose(
        running, customer, key="p2", draft={"subject": "Renewal", "body": "Hi Ada,\nYour plan renews soon."}
    )
    api.message_update(h.OPERATOR, "/pending")
    listing = api.wait_call("sendMessage", lambda p: "waiting for a decision" in p["text"])
    text = listing.params["text"]
    assert "#1 · send_email · Ada Lovelace · “Hi Ada, how is the trial going?”" in text
    assert "#2 · send_email · Ada Lovelace · “Your plan renews soon.”" in text
    shows = h.buttons_of({"reply_markup": listing.params["reply_markup"]})
    assert shows == {"Show #1": "cu:show 1", "Show #2": "cu:show 2"}
    api.press(h.OPERATOR, h.OPS_CHAT, listing.result["message_id"], shows["Show #1"])
    card = api.wait_call("sendMessage", lambda p: "Checking in" in p["text"] or "trial" in p["text"], after=1)
    assert "#1 Send email" in card.params["text"]
    assert {"Approve", "Edit", "Reject"} <= set(h.buttons_of({"reply_markup": card.params["reply_markup"]}))


def test_typed_approve_by_number_works_in_the_private_chat(loop: Loop) -> None:
    running, api, smtp = loop.app, loop.api, loop.smtp
    h.propose(running, h.add_customer(running))
    api.message_update(h.OPERATOR, "approve 1")
    api.wait_call("sendMessage", lambda p: p["text"].startswith("Approved"))
    assert smtp.wait_for(1)[0]["To"] == "ada@acme.example"
    api.message_update(h.OPERATOR, "approve 7")
    missing = api.wait_call("sendMessage", lambda p: "No proposal 7" in p["text"])
    assert "`pending` lists them" in missing.params["text"]


def _reply_to(prompt: Any) -> dict[str, Any]:
    return {"message_id": prompt.result["message_id"], "date": 0, "chat": prompt.result["chat"]}


def test_reject_asks_for_a_reason_and_the_reason_is_kept_for_the_agents(loop: Loop) -> None:
    running, api = loop.app, loop.api
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    reject = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Reject"]

    api.press(h.STRANGER, h.OPS_CHAT, message_id, reject)
    refused = api.wait_call("answerCallbackQuery")
    assert refused.params["text"].startswith("Not authorised")
    assert not [c for c in api.calls_to("sendMessage") if "force_reply" in str(c.params.get("reply_markup"))]

    api.press(h.OPERATOR, h.OPS_CHAT, message_id, reject)
    prompt = api.wait_call("sendMessage", lambda p: "force_reply" in (p.get("reply_markup") or {}))
    assert "Why reject" in prompt.params["text"] and "#1 Send email" in prompt.params["text"]
    api.message_update(h.OPERATOR, "Too pushy <for> a trial", reply_to=_reply_to(prompt))
    done = api.wait_call("sendMessage", lambda p: p["text"].startswith("Rejected."))
    assert "Reason noted: Too pushy &lt;for&gt; a trial" in done.params["text"]
    api.wait_for(
        lambda: (
            "Too pushy <for> a trial" in h.message(api, h.OPS_CHAT, message_id)["text"]
            and "reply_markup" not in h.message(api, h.OPS_CHAT, message_id)
        ),
        what="the proposal message shows the rejection and its reason, without buttons",
    )
    [correction] = [e for e in running.store.read_all() if e.type == "correction.recorded"]
    assert correction.payload.rejection_reason == "Too pushy <for> a trial"  # type: ignore[union-attr]

    api.message_update(h.OPERATOR, "second thoughts", reply_to=_reply_to(prompt))
    api.wait_call("sendMessage", lambda p: "already handled" in p["text"])


def test_reject_on_a_decided_proposal_asks_nothing(loop: Loop) -> None:
    running, api = loop.app, loop.api
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    buttons = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))
    assert running.commands.run(Actor("telegram", str(h.OPERATOR_ID)), "approve 1").ok
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, buttons["Reject"])
    answer = api.wait_call("answerCallbackQuery")
    assert "Approved by" in answer.params["text"]
    assert not [c for c in api.calls_to("sendMessage") if "force_reply" in str(c.params.get("reply_markup"))]


def test_digest_on_demand_brings_the_chart_and_pending_approvals_with_buttons(loop: Loop) -> None:
    running, api = loop.app, loop.api
    h.propose(running, h.add_customer(running))
    api.message_update(h.OPERATOR, "/digest")
    api.wait_call("sendMessage", lambda p: p["text"].startswith("Daily digest"))
    card = api.wait_call("sendMessage", lambda p: "#1 Send email" in p["text"])
    assert "Approve" in h.buttons_of({"reply_markup": card.params["reply_markup"]})
    photo = api.wait_call("sendPhoto")
    assert str(photo.params.get("chat_id")) == str(h.OPS_CHAT)


def test_a_reminder_reaches_the_telegram_chat_with_a_fresh_card(loop: Loop) -> None:
    running, api = loop.app, loop.api
    expires = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    proposal = email_proposal(h.add_customer(running), to="ada@acme.example")
    pid, _ = lc.record_proposal(
        running.store, proposal, verdict="approval", rules=[], key="test:remind", expires_at=expires
    )
    first = h.post(running, pid)
    now = expires - timedelta(hours=6)
    assert remind_due(running.store, running.notifier, ttl_hours=24, share=0.75, now=now) == [pid]
    notice = api.wait_call("sendMessage", lambda p: p["text"].startswith("⏰ #1 expires in 6h"))
    copy = api.wait_call("sendMessage", lambda p: "#1 Send email" in p["text"], after=1)
    assert copy.result["message_id"] != first and notice.result["message_id"] != first
    assert "Approve" in h.buttons_of({"reply_markup": copy.params["reply_markup"]})
