"""The Telegram surface served for real in a test: the app's python-telegram-bot code against the stand-in.

Shared by the Telegram integration and e2e tests: the stand-in Bot API (`tests.standins.telegram_api`),
a loopback SMTP server (aiosmtpd), settings pointing the app at both, and helpers that make customers and
proposals the way the pipeline would.
"""

from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from agents.proposal import Draft, Proposal
from bot.bootstrap import App
from store import lifecycle as lc
from store.events import CustomerRef, LeadCreated
from tests.standins.telegram_api import TelegramStandIn, operator_user

TOKEN = "123456:TEST-token_abc"
OPERATOR_ID = 4242
OPERATOR = operator_user(OPERATOR_ID, "Olga")
STRANGER = operator_user(666, "Mallory")
CUSTOMER = {"id": 9001, "is_bot": False, "first_name": "Ada", "last_name": "L_*<3&", "username": "ada_l"}
OPS_CHAT = OPERATOR_ID  # the operator's private chat with the bot is TELEGRAM_CHAT_ID
WEBHOOK_SECRET = "s3cr3t_T0ken-x"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def telegram_env(api: TelegramStandIn, database_url: str, smtp_port: int, **more: object) -> dict[str, str]:
    """Settings (as environment names) pointing the app at the stand-in and the loopback SMTP server."""
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "TELEGRAM_BOT_TOKEN": api.token,
        "TELEGRAM_CHAT_ID": OPS_CHAT,
        "TELEGRAM_API_URL": api.base_url,
        "OPERATORS": f"telegram:{OPERATOR_ID}",
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MAIL_FROM": "crm@example.test",
        "UNDO_WINDOW_SECONDS": 0,
        **more,
    }
    return {key: str(value) for key, value in values.items()}


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class SmtpServer:
    """A real SMTP server on loopback that keeps every message it accepts."""

    port: int = field(default_factory=free_port)
    handler: _Collect = field(default_factory=_Collect)

    def __post_init__(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    def wait_for(self, count: int = 1, timeout: float = 15.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"expected {count} email(s), got {len(self.messages)}")


@contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@contextmanager
def polling(container: App) -> Iterator[threading.Event]:
    """`run_telegram` (long polling) on a thread of this process, stopped at the end."""
    from bot.telegram import run_telegram

    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_telegram(container, stop)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)
        surface = container.notifier.surface("telegram")
        if surface is not None:
            surface.close()
    assert not errors, errors


def text_of(body: Message) -> str:
    """The plain-text body of an email as received."""
    if body.is_multipart():
        for part in body.walk():
            if part.get_content_type() == "text/plain":
                return str(part.get_payload(decode=True).decode())  # type: ignore[union-attr]
    return str(body.get_payload(decode=True).decode())  # type: ignore[union-attr]


def add_customer(container: App, name: str = "Ada Lovelace", email_: str = "ada@acme.example") -> str:
    """A customer, as a lead.created signal would make one; returns the customer id."""
    signal = LeadCreated(customer=CustomerRef(name=name, email=email_, company="Acme"), text="hello")
    return container.store.record_signal("lead.created", signal, f"test:{email_}", source="test").event.stream


def propose(container: App, customer_id: str, key: str = "p1", **overrides: Any) -> str:
    """A pending proposal (send_email by default) for the customer; returns its id."""
    values: dict[str, Any] = {
        "agent": "followup",
        "kind": "send_email",
        "customer_id": customer_id,
        "params": {"to": "ada@acme.example"},
        "draft": Draft(subject="Checking in", body="Hi Ada, how is the trial going?"),
        "rationale": "No reply for 7 days after the trial started.",
        "confidence": 0.82,
        **overrides,
    }
    proposal = Proposal(**values)
    pid, _ = lc.record_proposal(
        container.store, proposal.model_dump(mode="json"), verdict="approval", rules=[], key=f"test:{key}"
    )
    return pid


def post(container: App, proposal_id: str) -> int:
    """Post a proposal through the notify fan-out; returns the Telegram message id."""

    refs = container.notifier.post(proposal_id)
    assert refs, "the proposal was not posted"
    return int(next(r for r in refs if r.surface == "telegram").message_id)


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """label → callback_data of a message's inline keyboard."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


def message(api: TelegramStandIn, chat_id: int, message_id: int) -> dict[str, Any]:
    """A message as the stand-in holds it now."""
    return api.messages[(chat_id, message_id)]


class WebServer:
    """uvicorn serving the web app in a thread of this process (lifespan on: the bot starts with it)."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> WebServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
