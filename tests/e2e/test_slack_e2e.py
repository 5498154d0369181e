"""End to end, as whole processes: `crm web` (Slack over HTTP) and `crm bot` (Socket Mode) on Postgres,
pointed at the stand-in Slack and a loopback SMTP server; the approved email must arrive there.

Proposals are recorded and posted from the test process through the same store and Slack stand-in, so
the processes under test find their messages (chat.update) exactly as if their own worker had posted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.bootstrap import App, bootstrap
from store import lifecycle as lc
from tests.integration import slack_harness as h
from tests.standins import slack_requests as sr
from tests.standins.slack_api import SlackStandIn
from tests.standins.smtp import SmtpStandin

CRM = str(Path(sys.executable).with_name("crm"))
STARTUP_S = 60
MAIL_WAIT_S = 20


def _env(settings: dict[str, object], data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TELEGRAM_", "REDIS_URL"))}
    env.update({k: str(v) for k, v in settings.items()})
    env["CRM_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture
def world(pg_url: str, make_settings: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with SlackStandIn(bot_token=h.BOT_TOKEN, app_token=h.APP_TOKEN) as slack, SmtpStandin() as smtp:
        settings = h.slack_settings(
            slack.api_url, pg_url, SMTP_URL=smtp.url, MAIL_FROM="ops@crm.example", PORT=h.free_port()
        )
        container = bootstrap(make_settings(**settings), handlers={})
        yield {"slack": slack, "smtp": smtp, "settings": settings, "container": container, "tmp": tmp_path}
        container.close()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen([CRM, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _posted_proposal(container: App, slack: SlackStandIn, key: str) -> str:
    customer = h.add_customer(container)
    pid = h.propose_email(container, customer, key=key)
    container.notifier.post(pid)
    slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))
    return pid


def _mail_with(smtp: SmtpStandin, text: str) -> list[Any]:
    deadline = time.monotonic() + MAIL_WAIT_S
    while time.monotonic() < deadline:
        found = [m for m in smtp.messages if text in m.get_payload(decode=True).decode("utf-8", "replace")]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(
        f"no email containing {text!r} at the SMTP server; got {len(smtp.messages)} messages"
    )


def _state(container: App, pid: str) -> str:
    with container.engine.connect() as connection:
        row = lc.get_proposal(connection, pid)
    return str(row["state"]) if row else "missing"


def test_crm_web_slack_http_flows_end_to_end(world: dict[str, Any]) -> None:
    slack, smtp, container = world["slack"], world["smtp"], world["container"]
    log = world["tmp"] / "web.log"
    web = _start(["web"], _env(world["settings"], world["tmp"] / "web"), log)
    url = f"http://127.0.0.1:{world['settings']['PORT']}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            assert web.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        client = h.SlackClient(url, slack)

        # /customer acme → the slice through response_url
        pid = _posted_proposal(container, slack, "web-approve")
        assert client.command("/customer", "acme").status_code == 200
        assert "Ada Lovelace" in json.dumps(slack.wait_for("response_url")[0].body)

        # Approve → 200 at once, chat.update, the email at the SMTP server
        started = time.monotonic()
        assert client.click(f"approve:{pid}").status_code == 200
        assert time.monotonic() - started < 3
        slack.wait_for("chat.update", lambda c: "Approved by" in json.dumps(c.body))
        mail = _mail_with(smtp, "how is the trial going?")
        assert mail[0]["To"] == "ada@acme.example" and mail[0]["Subject"] == "Checking in"

        # Edit → modal → submission → the edited email
        edited = _posted_proposal(container, slack, "web-edit")
        client.click(f"edit:{edited}")
        view = slack.wait_for("views.open")[-1].body["view"]
        view = json.loads(view) if isinstance(view, str) else view
        values = {
            "field:to": {"value": "ada@acme.example"},
            "field:subject": {"value": "Quick question"},
            "field:body": {"value": "Edited in Slack: shall we talk on Friday?"},
        }
        assert client.submit(view, values).status_code == 200
        assert _mail_with(smtp, "Edited in Slack: shall we talk on Friday?")[0]["Subject"] == "Quick question"

        # Reject with a reason → nothing sent
        rejected = _posted_proposal(container, slack, "web-reject")
        client.click(f"reject:{rejected}")
        view = slack.wait_for("views.open", count=2)[-1].body["view"]
        view = json.loads(view) if isinstance(view, str) else view
        client.submit(view, {"reason": {"reason_input": "wrong tone"}})
        assert _state(container, rejected) == "rejected"

        # A customer's channel: linked, their message becomes a signal, an approved reply goes back there
        client.command("/customer", "acme link", channel="C0ACME", response="link")
        slack.wait_for("response_url", lambda c: c.path.endswith("/link"))
        message = sr.message_event(
            "Is Friday OK?", user="U0CUST", channel="C0ACME", ts="1700000500.000100", event_id="Ev0E2E"
        )
        assert client.event(message).status_code == 200
        customer = h.add_customer(container)
        reply = h.propose_chat_reply(container, customer, "C0ACME", "Friday works <3")
        container.notifier.post(reply)
        client.click(f"approve:{reply}")
        sent = slack.wait_for("chat.postMessage", lambda c: c.body.get("channel") == "C0ACME")[-1]
        assert sent.body["text"] == "Friday works &lt;3"
        signals = [e for e in container.store.read_all() if e.type == "message.received"]
        assert [(e.stream, e.payload.text) for e in signals] == [(customer, "Is Friday OK?")]

        # Forged signature → 401, nothing changes
        forged = sr.interactive_body(
            sr.click(f"approve:{rejected}", user=h.OPERATOR, response_url=slack.response_url())
        )
        headers = sr.signed_headers("forged", forged, content_type=sr.FORM)
        assert httpx.post(url + "/slack/events", content=forged, headers=headers).status_code == 401
        time.sleep(1)
        assert len(smtp.messages) == 2
        deadline = time.monotonic() + MAIL_WAIT_S
        while _state(container, pid) != "executed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _state(container, pid) == "executed"
    finally:
        _stop(web, log)


def test_crm_bot_socket_mode_flows_end_to_end(world: dict[str, Any]) -> None:
    slack, smtp, container = world["slack"], world["smtp"], world["container"]
    settings = {**world["settings"], "SLACK_APP_TOKEN": h.APP_TOKEN}
    log = world["tmp"] / "bot.log"
    bot = _start(["bot"], _env(settings, world["tmp"] / "bot"), log)
    try:
        slack.wait_for_socket(timeout=STARTUP_S)
        payload = sr.slash_payload(
            "/customer", "acme", user=h.OPERATOR, response_url=slack.response_url("sm")
        )
        pid = _posted_proposal(container, slack, "sock-approve")
        slack.wait_ack(slack.send_envelope("slash_commands", payload))
        assert "Ada Lovelace" in json.dumps(slack.wait_for("response_url")[0].body)

        click = sr.click(f"approve:{pid}", user=h.OPERATOR, response_url=slack.response_url())
        slack.wait_ack(slack.send_envelope("interactive", click))
        slack.wait_for("chat.update", lambda c: "Approved by" in json.dumps(c.body))
        _mail_with(smtp, "how is the trial going?")

        edited = _posted_proposal(container, slack, "sock-edit")
        slack.send_envelope(
            "interactive", sr.click(f"edit:{edited}", user=h.OPERATOR, response_url=slack.response_url())
        )
        view = slack.wait_for("views.open")[-1].body["view"]
        view = json.loads(view) if isinstance(view, str) else view
        values = {
            "field:to": {"value": "ada@acme.example"},
            "field:subject": {"value": "Over the socket"},
            "field:body": {"value": "Edited over Socket Mode."},
        }
        slack.wait_ack(slack.send_envelope("interactive", sr.submission(view, values, user=h.OPERATOR)))
        _mail_with(smtp, "Edited over Socket Mode.")

        rejected = _posted_proposal(container, slack, "sock-reject")
        slack.send_envelope(
            "interactive", sr.click(f"reject:{rejected}", user=h.OPERATOR, response_url=slack.response_url())
        )
        view = slack.wait_for("views.open", count=2)[-1].body["view"]
        view = json.loads(view) if isinstance(view, str) else view
        slack.wait_ack(
            slack.send_envelope(
                "interactive", sr.submission(view, {"reason": {"reason_input": "no"}}, user=h.OPERATOR)
            )
        )
        assert _state(container, rejected) == "rejected"
        assert len(smtp.messages) == 2
    finally:
        _stop(bot, log)
