"""The Telegram surface in webhook mode: `POST /telegram/webhook` of the web app, under uvicorn.

The stand-in Bot API delivers updates to the webhook the app registered at start-up, with the secret
token header, exactly as Telegram does; requests without the right token are refused before parsing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.bootstrap import App, bootstrap
from bot.telegram import SECRET_HEADER, WEBHOOK_PATH
from bot.web import create_app
from store import tables as t
from tests.integration import telegram_harness as h
from tests.standins.telegram_api import TelegramStandIn


@pytest.fixture
def api() -> Iterator[TelegramStandIn]:
    server = TelegramStandIn(h.TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def web(
    api: TelegramStandIn, db_url: str, make_settings: Any
) -> Iterator[tuple[App, h.WebServer, h.SmtpServer]]:
    port = h.free_port()
    with h.smtp_server() as smtp:
        env = h.telegram_env(
            api,
            db_url,
            smtp.port,
            TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
            TELEGRAM_WEBHOOK_SECRET=h.WEBHOOK_SECRET,
        )
        container = bootstrap(make_settings(**env), handlers={})
        with h.WebServer(create_app(container), port) as server:
            yield container, server, smtp
        surface = container.notifier.surface("telegram")
        if surface is not None:
            surface.close()
        container.close()


def update_body(text: str, update_id: int = 77) -> bytes:
    return json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": 5,
                "date": 1441645532,
                "from": h.OPERATOR,
                "chat": {"id": h.OPERATOR_ID, "type": "private"},
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
            },
        }
    ).encode()


def test_start_up_sets_the_webhook_with_the_secret_and_the_menu(web: Any, api: TelegramStandIn) -> None:
    _, server, _ = web
    assert api.webhook == {"url": f"{server.url}{WEBHOOK_PATH}", "secret_token": h.WEBHOOK_SECRET}
    assert {c["command"] for c in api.commands} >= {"customer", "pending", "help"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({SECRET_HEADER: "wrong-secret"}, 403),
        ({SECRET_HEADER: h.WEBHOOK_SECRET + "x"}, 403),
        ({SECRET_HEADER: h.WEBHOOK_SECRET, "Content-Type": "text/plain"}, 403),
    ],
)
def test_requests_without_the_right_secret_token_are_refused(
    web: Any, api: TelegramStandIn, headers: dict[str, str], status: int
) -> None:
    _, server, _ = web
    sent = {"Content-Type": "application/json", **headers}
    response = httpx.post(f"{server.url}{WEBHOOK_PATH}", content=update_body("/pending"), headers=sent)
    assert response.status_code == status
    time.sleep(0.3)
    assert api.calls_to("sendMessage") == [], "nothing was handled"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"update_id": "x"}', b"\xff\xfe"])
def test_malformed_bodies_with_the_right_secret_get_400(web: Any, api: TelegramStandIn, body: bytes) -> None:
    _, server, _ = web
    headers = {"Content-Type": "application/json", SECRET_HEADER: h.WEBHOOK_SECRET}
    response = httpx.post(f"{server.url}{WEBHOOK_PATH}", content=body, headers=headers)
    assert response.status_code == 400
    assert api.calls_to("sendMessage") == []


def test_a_delivered_update_is_handled_and_a_redelivery_is_ignored(web: Any, api: TelegramStandIn) -> None:
    container, _, _ = web
    h.add_customer(container)
    update = api.message_update(h.OPERATOR, "/note Ada Lovelace: call back on Monday")
    api.wait_call("sendMessage")
    api.push_update(update, keep_id=True)
    api.message_update(h.OPERATOR, "/help")
    api.wait_call("sendMessage", after=1)
    time.sleep(0.3)
    assert [status for _, status in api.webhook_deliveries] == [200, 200, 200]
    with container.engine.connect() as connection:
        notes = connection.execute(
            select(func.count()).select_from(t.events).where(t.events.c.type == "note.added")
        ).scalar_one()
    assert notes == 1
    assert len(api.calls_to("sendMessage")) == 2


def test_approve_through_the_webhook_sends_the_email_and_edits_the_message(
    web: Any, api: TelegramStandIn
) -> None:
    container, _, smtp = web
    pid = h.propose(container, h.add_customer(container))
    message_id = h.post(container, pid)
    approve = h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, approve)
    api.wait_call("answerCallbackQuery")
    assert smtp.wait_for(1)[0]["To"] == "ada@acme.example"
    api.wait_for(lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="buttons gone")


def test_webhook_mode_refuses_to_start_without_a_secret(
    api: TelegramStandIn, sqlite_url: str, make_settings: Any
) -> None:
    from bot.telegram import TelegramNotConfigured

    env = h.telegram_env(
        api, sqlite_url, 25, TELEGRAM_WEBHOOK_URL="https://bot.example.test/telegram/webhook"
    )
    container = bootstrap(make_settings(**env), handlers={})
    try:
        with pytest.raises(TelegramNotConfigured, match="TELEGRAM_WEBHOOK_SECRET"):
            create_app(container)
    finally:
        container.close()
