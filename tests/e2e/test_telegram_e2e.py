"""End to end, as whole processes: `crm bot` (Telegram long polling) and `crm web` (Telegram webhook) on
Postgres, pointed at the stand-in Bot API and a loopback SMTP server.

Proposals for the operator are recorded and posted from the test process through the same store and
stand-in (as the pipeline's worker would), so the processes under test find their messages to edit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.bootstrap import App, bootstrap
from bot.telegram import SECRET_HEADER, WEBHOOK_PATH
from store import tables as t
from tests.integration import telegram_harness as h
from tests.standins.telegram_api import TelegramStandIn

CRM = str(Path(sys.executable).with_name("crm"))
STARTUP_S = 60


@pytest.fixture
def world(pg_url: str, make_settings: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    api = TelegramStandIn(h.TOKEN).start()
    with h.smtp_server() as smtp:
        port = h.free_port()
        env = h.telegram_env(api, pg_url, smtp.port, PORT=port)
        container = bootstrap(make_settings(**env), handlers={})
        yield {"api": api, "smtp": smtp, "env": env, "container": container, "tmp": tmp_path, "port": port}
        surface = container.notifier.surface("telegram")
        if surface is not None:
            surface.close()
        container.close()
    api.stop()


def _start(args: list[str], settings: dict[str, str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TELEGRAM_", "REDIS_URL"))}
    env.update(settings)
    env["CRM_DATA_DIR"] = str(tmp / f"{name}-data")
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen([CRM, *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise AssertionError("the process did not stop on SIGTERM") from None


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], tmp: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            assert process.poll() is None, _log(tmp, "web")
            time.sleep(0.1)
    raise AssertionError("crm web never listened: " + _log(tmp, "web"))


def _log(tmp: Path, name: str) -> str:
    return (tmp / f"{name}.log").read_text(errors="replace")[-4000:]


def _telegram_customer(container: App) -> str | None:
    with container.engine.connect() as connection:
        return connection.execute(
            select(t.contact_points.c.customer_id).where(
                t.contact_points.c.kind == "telegram", t.contact_points.c.value == str(h.CUSTOMER["id"])
            )
        ).scalar_one_or_none()


def _approve(api: TelegramStandIn, message_id: int) -> None:
    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    )


def test_crm_bot_polls_answers_commands_and_carries_decisions_to_smtp_and_to_customers(
    world: dict[str, Any],
) -> None:
    api, smtp, container, tmp = world["api"], world["smtp"], world["container"], world["tmp"]
    bot = _start(["bot"], world["env"], tmp, "bot")
    try:
        api.wait_for(lambda: api.polls_started > 0 or bot.poll() is not None, STARTUP_S, "crm bot to poll")
        assert bot.poll() is None, _log(tmp, "bot")
        assert {c["command"] for c in api.commands} >= {"customer", "pending", "note", "help"}

        # /customer acme → the slice
        h.add_customer(container, "Ada Lovelace", "ada@acme.example")
        api.message_update(h.OPERATOR, "/customer acme")
        answer = api.wait_call("sendMessage", lambda p: "Ada Lovelace" in p["text"] and "stage" in p["text"])
        assert answer.params["chat_id"] == str(h.OPS_CHAT)

        # a proposal → Approve → the email at the SMTP server and the message edited in place
        pid = h.propose(container, h.add_customer(container), key="e2e-email")
        message_id = h.post(container, pid)
        _approve(api, message_id)
        assert api.wait_call("answerCallbackQuery").params["text"]
        mail = smtp.wait_for(1)[0]
        assert mail["To"] == "ada@acme.example"
        api.wait_for(
            lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="buttons gone"
        )
        assert "@olga" in h.message(api, h.OPS_CHAT, message_id)["text"]

        # a customer writes in → a message.received signal for them → an approved reply reaches their chat
        api.message_update(h.CUSTOMER, "Hello, can I upgrade my plan?")
        customer_id = api.wait_for(lambda: _telegram_customer(container), what="the customer recorded")
        reply_pid = h.propose(
            container,
            customer_id,
            kind="send_chat_reply",
            params={
                "surface": "telegram",
                "chat_id": str(h.CUSTOMER["id"]),
                "text": "Yes — from Settings → Plan.",
            },
            draft={"body": "Yes — from Settings → Plan."},
            key="e2e-reply",
        )
        _approve(api, h.post(container, reply_pid))
        delivered = api.wait_call("sendMessage", lambda p: p["chat_id"] == str(h.CUSTOMER["id"]))
        assert delivered.params["text"] == "Yes — from Settings → Plan."
    finally:
        code = _stop(bot)
    assert code == 0, _log(tmp, "bot")


def test_crm_web_serves_the_webhook_behind_the_secret_token(world: dict[str, Any]) -> None:
    api, smtp, container, tmp, port = (
        world["api"],
        world["smtp"],
        world["container"],
        world["tmp"],
        world["port"],
    )
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    settings = {**world["env"], "TELEGRAM_WEBHOOK_URL": url, "TELEGRAM_WEBHOOK_SECRET": h.WEBHOOK_SECRET}
    web = _start(["web"], settings, tmp, "web")
    try:
        api.wait_for(
            lambda: api.webhook is not None or web.poll() is not None, STARTUP_S, "crm web to set its webhook"
        )
        assert web.poll() is None, _log(tmp, "web")
        assert api.webhook == {"url": url, "secret_token": h.WEBHOOK_SECRET}
        _wait_until_listening(port, web, tmp)  # the webhook is set before uvicorn binds its port

        body = (
            b'{"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}}'
        )
        for headers in ({}, {SECRET_HEADER: "nope"}):
            refused = httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers})
            assert refused.status_code == 403

        pid = h.propose(container, h.add_customer(container), key="e2e-webhook")
        message_id = h.post(container, pid)
        _approve(api, message_id)
        api.wait_call("answerCallbackQuery")
        assert smtp.wait_for(1)[0]["To"] == "ada@acme.example"
        api.wait_for(
            lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="buttons gone"
        )
        assert all(status == 200 for _, status in api.webhook_deliveries)
    finally:
        _stop(web)
    time.sleep(0.2)
    assert len(smtp.messages) == 1
