"""The Slack surface served for real in a test: the web app under uvicorn on loopback, the stand-in Slack.

Shared by the Slack integration tests and the click benchmark. Requests are signed with the real
slack_sdk signer and sent over HTTP with httpx; Slack's side is `tests.standins.slack_api.SlackStandIn`.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from agents.proposal import Draft, Proposal
from bot.bootstrap import App
from bot.commands import Commands
from store import lifecycle as lc
from store.events import CustomerRef, LeadCreated
from tests.standins import slack_requests as sr
from tests.standins.slack_api import SlackStandIn

BOT_TOKEN = "xoxb-standin-1"
APP_TOKEN = "xapp-standin-1"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
OPS_CHANNEL = "C0OPS"
OPERATOR = "U0ALICE"
OPERATOR_2 = "U0BOB"
STRANGER = "U0MALLORY"


def slack_settings(api_url: str, database_url: str, **more: object) -> dict[str, object]:
    """Settings (as environment names) pointing the app at the stand-in."""
    return {
        "DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_CHANNEL": OPS_CHANNEL,
        "SLACK_API_URL": api_url,
        "OPERATORS": f"slack:{OPERATOR},slack:{OPERATOR_2},telegram:1",
        "UNDO_WINDOW_SECONDS": 0,
        **more,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """uvicorn serving an ASGI app in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class SlackClient:
    """Sends what Slack would send to `POST /slack/events`, signed."""

    url: str
    slack: SlackStandIn
    secret: str = SECRET
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def post(self, body: bytes, content_type: str, **headers: str) -> httpx.Response:
        signed = sr.signed_headers(self.secret, body, content_type=content_type)
        return self.http.post(self.url + "/slack/events", content=body, headers={**signed, **headers})

    def command(self, command: str, text: str, user: str = OPERATOR, **kw: Any) -> httpx.Response:
        response_url = self.slack.response_url(kw.pop("response", "cmd"))
        return self.post(sr.slash(command, text, user=user, response_url=response_url, **kw), sr.FORM)

    def click(self, value: str, user: str = OPERATOR, **kw: Any) -> httpx.Response:
        response_url = self.slack.response_url(kw.pop("response", "click"))
        payload = sr.click(value, user=user, response_url=response_url, **kw)
        return self.post(sr.interactive_body(payload), sr.FORM)

    def submit(
        self, opened: dict[str, Any], values: dict[str, dict[str, str]], user: str = OPERATOR
    ) -> httpx.Response:
        return self.post(sr.interactive_body(sr.submission(opened, values, user=user)), sr.FORM)

    def event(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        import json

        return self.post(json.dumps(body).encode(), sr.JSON, **headers)


def add_customer(container: App, name: str = "Ada Lovelace", email: str = "ada@acme.example") -> str:
    """A customer, as a lead.created signal would make one; returns the customer id."""
    signal = LeadCreated(customer=CustomerRef(name=name, email=email, company="Acme"), text="hello")
    event = container.store.record_signal("lead.created", signal, f"test:{email}", source="test").event
    return event.stream


def propose_email(container: App, customer_id: str, key: str = "p1", to: str = "ada@acme.example") -> str:
    """A pending send_email proposal for the customer; returns its id."""
    proposal = Proposal(
        agent="followup",
        kind="send_email",
        customer_id=customer_id,
        params={"to": to},
        draft=Draft(subject="Checking in", body="Hi Ada, how is the trial going?"),
        rationale="No reply for 7 days after the trial started.",
        confidence=0.82,
    )
    pid, _ = lc.record_proposal(
        container.store, proposal.model_dump(mode="json"), verdict="approval", rules=[], key=f"test:{key}"
    )
    return pid


def propose_chat_reply(container: App, customer_id: str, channel: str, text: str) -> str:
    """A pending send_chat_reply proposal to a Slack channel; returns its id."""
    proposal = Proposal(
        agent="triage",
        kind="send_chat_reply",
        customer_id=customer_id,
        params={"surface": "slack", "chat_id": channel, "text": text},
        draft=Draft(body=text),
        rationale="The customer asked a question in their channel.",
        confidence=0.9,
    )
    pid, _ = lc.record_proposal(
        container.store,
        proposal.model_dump(mode="json"),
        verdict="approval",
        rules=[],
        key=f"test:chat:{channel}",
    )
    return pid


def install_recording_commands(container: App) -> list[str]:
    """Commands whose execution scheduling is recorded instead of run; returns the record."""
    scheduled: list[str] = []
    # The App builds its command layer on first use; this one records instead of queueing.
    container.__dict__["commands"] = Commands(
        container.store,
        container.settings,
        schedule_execution=lambda pid, _row: scheduled.append(pid),
        notifier=container.notifier,
    )
    return scheduled
