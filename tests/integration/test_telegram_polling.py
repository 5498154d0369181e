"""The Telegram surface by long polling: the app's real python-telegram-bot code against the stand-in.

Each test runs `run_telegram` (getMe, setMyCommands, deleteWebhook, getUpdates…) on a thread, pushes
updates into the stand-in as Telegram would, and checks what the bot sent back, what the log holds and
what reached the loopback SMTP server. On SQLite and Postgres.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.bootstrap import App, bootstrap
from bot.commands import Actor
from bot.telegram import render
from store import tables as t
from tests.integration import as_of_helpers as as_of
from tests.integration import telegram_harness as h
from tests.standins.telegram_api import TelegramStandIn

# The "Approve edited" button: a callback_data that starts with "ea:" (a proposal id may contain "ea:").
EDIT_PREVIEW = re.compile(r"""['"]ea:""")


@pytest.fixture
def api() -> Iterator[TelegramStandIn]:
    server = TelegramStandIn(h.TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[h.SmtpServer]:
    with h.smtp_server() as server:
        yield server


@pytest.fixture
def container(api: TelegramStandIn, smtp: h.SmtpServer, db_url: str, make_settings: Any) -> Iterator[App]:
    built = bootstrap(make_settings(**h.telegram_env(api, db_url, smtp.port)), handlers={})
    yield built
    built.close()


@pytest.fixture
def running(container: App, api: TelegramStandIn) -> Iterator[App]:
    with h.polling(container):
        api.wait_polling()
        yield container


def events_of_type(container: App, event_type: str) -> int:
    with container.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.type == event_type)
        return int(connection.execute(query).scalar_one())


def test_start_registers_the_menu_and_polls(running: App, api: TelegramStandIn) -> None:
    assert api.calls_to("getMe")
    assert {c["command"] for c in api.commands} >= {
        "customer",
        "pending",
        "digest",
        "note",
        "pause",
        "resume",
        "help",
    }
    assert api.calls_to("deleteWebhook"), "polling starts by removing any webhook"


def test_customer_command_answers_with_the_slice_and_buttons_to_pick(
    running: App, api: TelegramStandIn
) -> None:
    h.add_customer(running, "Ada Lovelace", "ada@acme.example")
    h.add_customer(running, "Bob Acme", "bob@acme.example")
    api.message_update(h.OPERATOR, "/customer acme")
    call = api.wait_call("sendMessage", lambda p: "reply_markup" in p)
    picks = h.buttons_of({"reply_markup": call.params["reply_markup"]})
    assert len(picks) == 2 and all(data.startswith("cu:") for data in picks.values())
    ada = next(data for label, data in picks.items() if "Ada" in label)
    api.press(h.OPERATOR, h.OPS_CHAT, call.result["message_id"], ada)
    slice_msg = api.wait_call("sendMessage", lambda p: "stage" in p["text"] and "Ada" in p["text"])
    assert "open invoices" in slice_msg.params["text"]
    api.wait_call("answerCallbackQuery")


def test_customer_as_of_a_day_reads_the_line_as_slack_and_the_terminal_do(
    running: App, api: TelegramStandIn
) -> None:
    as_of.jonas_becker(running)
    expected = as_of.expected_lines(running, Actor("telegram", str(h.OPERATOR_ID)))
    api.message_update(h.OPERATOR, as_of.LINE)
    sent = api.wait_call("sendMessage", lambda p: "Jonas Becker" in p["text"])
    assert sent.params["text"] == render.lines_html(expected)
    assert as_of.LATER not in sent.params["text"]


def test_a_proposal_is_posted_with_its_keyboard_and_approve_sends_the_email(
    running: App, api: TelegramStandIn, smtp: h.SmtpServer
) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    posted = h.message(api, h.OPS_CHAT, message_id)
    buttons = h.buttons_of(posted)
    assert {"Approve", "Edit", "Reject"} <= set(buttons)
    assert all(len(data.encode()) <= 64 for data in buttons.values())
    assert "Hi Ada, how is the trial going?" in posted["text"]

    api.press(h.OPERATOR, h.OPS_CHAT, message_id, buttons["Approve"])
    answer = api.wait_call("answerCallbackQuery")
    assert "pprove" in answer.params.get("text", "")
    mail = smtp.wait_for(1)[0]
    assert mail["To"] == "ada@acme.example" and "how is the trial going" in h.text_of(mail)

    def edited() -> bool:
        now = h.message(api, h.OPS_CHAT, message_id)
        return "reply_markup" not in now and "@olga" in now["text"]

    api.wait_for(edited, what="the proposal message edited in place, without buttons, naming the operator")


def test_a_second_tap_is_told_who_decided_first(running: App, api: TelegramStandIn) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    approve = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, approve)
    api.wait_call("answerCallbackQuery")
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, approve)
    second = api.wait_call("answerCallbackQuery", after=1)
    assert second.params["text"].startswith("Already approved by")


def test_edit_asks_with_force_reply_and_the_reply_is_sent_after_approve(
    running: App, api: TelegramStandIn, smtp: h.SmtpServer
) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Edit"]
    )
    prompt = api.wait_call("sendMessage", lambda p: "force_reply" in (p.get("reply_markup") or {}))
    api.wait_call("answerCallbackQuery")
    assert smtp.messages == []
    prompt_message = {"message_id": prompt.result["message_id"], "date": 0, "chat": prompt.result["chat"]}
    api.message_update(h.OPERATOR, "Hi Ada — <b>quick</b> check & hello_world!", reply_to=prompt_message)
    preview = api.wait_call(
        "sendMessage", lambda p: EDIT_PREVIEW.search(str(p.get("reply_markup"))) is not None
    )
    assert smtp.messages == [], "nothing is sent before the edited version is approved"
    buttons = h.buttons_of({"reply_markup": preview.params["reply_markup"]})
    api.press(h.OPERATOR, h.OPS_CHAT, preview.result["message_id"], buttons["Approve edited"])
    mail = smtp.wait_for(1)[0]
    assert "Hi Ada — <b>quick</b> check & hello_world!" in h.text_of(mail)


def test_reject_changes_the_message_and_sends_nothing(
    running: App, api: TelegramStandIn, smtp: h.SmtpServer
) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Reject"]
    )
    prompt = api.wait_call("sendMessage", lambda p: "force_reply" in (p.get("reply_markup") or {}))
    api.wait_call("answerCallbackQuery")
    assert "reply_markup" in h.message(api, h.OPS_CHAT, message_id), "nothing decided before the answer"
    asked = {"message_id": prompt.result["message_id"], "date": 0, "chat": prompt.result["chat"]}
    api.message_update(h.OPERATOR, "-", reply_to=asked)  # no reason
    api.wait_for(
        lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="keyboard removed"
    )
    assert "eject" in h.message(api, h.OPS_CHAT, message_id)["text"]
    time.sleep(0.3)
    assert smtp.messages == []


def test_a_non_operator_pressing_approve_is_not_authorised_and_nothing_changes(
    running: App, api: TelegramStandIn, smtp: h.SmtpServer
) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    before = dict(h.message(api, h.OPS_CHAT, message_id))
    api.press(h.STRANGER, h.OPS_CHAT, message_id, h.buttons_of(before)["Approve"])
    answer = api.wait_call("answerCallbackQuery")
    assert answer.params["text"].startswith("Not authorised")
    time.sleep(0.3)
    assert h.message(api, h.OPS_CHAT, message_id) == before
    assert smtp.messages == []
    assert events_of_type(running, "proposal.decided") == 0
    assert events_of_type(running, "decision.refused") == 1


def test_the_same_update_twice_is_processed_once(running: App, api: TelegramStandIn) -> None:
    h.add_customer(running)
    update = api.message_update(h.OPERATOR, "/note Ada Lovelace: prefers email")
    api.wait_call("sendMessage")
    api.push_update(update, keep_id=True)
    api.message_update(h.OPERATOR, "/pending")  # a later update proves the repeat was read and skipped
    api.wait_call("sendMessage", after=1)
    time.sleep(0.3)
    assert events_of_type(running, "note.added") == 1
    assert len(api.calls_to("sendMessage")) == 2


def test_429_from_telegram_is_waited_out(running: App, api: TelegramStandIn) -> None:
    pid = h.propose(running, h.add_customer(running))
    api.fail_next("sendMessage", 429, retry_after=1)
    started = time.monotonic()
    message_id = h.post(running, pid)
    calls = api.calls_to("sendMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9 and time.monotonic() - started >= 0.9
    assert h.message(api, h.OPS_CHAT, message_id)


@pytest.mark.parametrize(
    "name",
    ['<b>Ada</b> & "Bob" _under_ *star* `tick` [link](x) 🚀', "Zoë <3 & co. </i>", "a&amp;b &lt; &#x1F600;"],
)
def test_names_full_of_markup_render_without_a_400(running: App, api: TelegramStandIn, name: str) -> None:
    customer = h.add_customer(running, name, "weird@acme.example")
    pid = h.propose(running, customer, draft={"subject": "Re: <ok>", "body": f"Dear {name}, 5 < 6 & 7 > 3"})
    message_id = h.post(running, pid)
    shown = h.message(api, h.OPS_CHAT, message_id)["text"]
    assert name in shown and "5 < 6 & 7 > 3" in shown
    api.message_update(h.OPERATOR, "/customer weird@acme.example")
    answer = api.wait_call("sendMessage", lambda p: "stage" in p["text"])
    assert name in h.message(api, h.OPS_CHAT, answer.result["message_id"])["text"]
    assert all(c.status == 200 for c in api.calls_to("sendMessage"))


def test_a_deleted_proposal_message_does_not_break_the_decision(
    running: App, api: TelegramStandIn, smtp: h.SmtpServer
) -> None:
    pid = h.propose(running, h.add_customer(running))
    message_id = h.post(running, pid)
    approve = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    api.delete_message(h.OPS_CHAT, message_id)
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, approve)
    api.wait_call("answerCallbackQuery")
    smtp.wait_for(1)
    fresh = api.wait_call(
        "sendMessage", lambda p: "Approved" in p["text"] or "approved" in p["text"], after=1
    )
    assert "reply_markup" not in fresh.params or not fresh.params["reply_markup"]


def test_a_customer_writing_in_becomes_a_signal_and_stickers_are_recorded(
    running: App, api: TelegramStandIn
) -> None:
    update = api.message_update(h.CUSTOMER, "Hi, my invoice is wrong <help> & thanks")
    api.push_update(update, keep_id=True)  # redelivered: still one event
    api.message_update(
        h.CUSTOMER,
        None,
        extra={
            "sticker": {
                "file_id": "stk1",
                "file_unique_id": "u1",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
            }
        },
    )
    api.wait_for(lambda: events_of_type(running, "message.received") == 2, what="two message.received events")
    with running.engine.connect() as connection:
        rows = connection.execute(
            select(t.events.c.payload, t.events.c.idempotency_key, t.events.c.stream)
            .where(t.events.c.type == "message.received")
            .order_by(t.events.c.position)
        ).all()
        contact = connection.execute(
            select(t.contact_points.c.customer_id).where(
                t.contact_points.c.kind == "telegram", t.contact_points.c.value == str(h.CUSTOMER["id"])
            )
        ).scalar_one()
    # Updates are handled concurrently, so the two messages may be recorded in either order.
    by_text = {row.payload["text"]: row for row in rows}
    assert set(by_text) == {"Hi, my invoice is wrong <help> & thanks", "[sticker 👍]"}
    text, sticker = (
        by_text["Hi, my invoice is wrong <help> & thanks"].payload,
        by_text["[sticker 👍]"].payload,
    )
    assert text["data"]["channel"] == "telegram" and text["data"]["chat_id"] == str(h.CUSTOMER["id"])
    assert sticker["text"] == "[sticker 👍]" and sticker["data"]["media"]["file_id"] == "stk1"
    assert all(row.idempotency_key.startswith("telegram:") for row in rows)
    assert rows[0].stream == rows[1].stream == contact
    assert not [c for c in api.calls_to("sendMessage") if c.params["chat_id"] == str(h.CUSTOMER["id"])]


def test_an_approved_chat_reply_goes_back_to_the_customers_chat(running: App, api: TelegramStandIn) -> None:
    api.message_update(h.CUSTOMER, "Is the API down?")
    api.wait_for(lambda: events_of_type(running, "message.received") == 1, what="the customer's message")
    with running.engine.connect() as connection:
        customer_id = connection.execute(
            select(t.contact_points.c.customer_id).where(t.contact_points.c.kind == "telegram")
        ).scalar_one()
    pid = h.propose(
        running,
        customer_id,
        kind="send_chat_reply",
        params={"surface": "telegram", "chat_id": str(h.CUSTOMER["id"]), "text": "No — all green <3 & up!"},
        draft={"body": "No — all green <3 & up!"},
        key="reply",
    )
    message_id = h.post(running, pid)
    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    )
    reply = api.wait_call("sendMessage", lambda p: p["chat_id"] == str(h.CUSTOMER["id"]))
    assert reply.params["text"] == "No — all green <3 & up!"
    assert "parse_mode" not in reply.params, "customer replies go as plain text"


def test_the_digest_chart_goes_up_as_a_multipart_photo(
    container: App, api: TelegramStandIn, tmp_path: Any
) -> None:

    chart = tmp_path / "chart.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2048)
    surface = container.notifier.surface("telegram")
    assert surface is not None
    try:
        surface.post_notice(["Digest <today>", "3 proposals & 1 overdue invoice"])
        surface.post_image(chart, "Digest <2026-01-01>")
    finally:
        surface.close()
    (photo,) = api.calls_to("sendPhoto")
    assert photo.status == 200 and photo.params["photo"]["size"] == len(chart.read_bytes())
    assert api.sent_to(h.OPS_CHAT)[-1]["caption"] == "Digest <2026-01-01>"
    assert "3 proposals & 1 overdue invoice" in api.sent_to(h.OPS_CHAT)[0]["text"]
