"""Both surfaces at once: a proposal posted on Slack and Telegram; a decision on either updates both.

Telegram by long polling against its stand-in, Slack over HTTP (signed requests to the web app) against
its stand-in, one store, one notify fan-out; the approved email reaches the loopback SMTP server once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.bootstrap import App, bootstrap
from bot.web import create_app
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as h
from tests.standins.slack_api import SlackStandIn
from tests.standins.telegram_api import TelegramStandIn


@pytest.fixture
def both(db_url: str, make_settings: Any) -> Iterator[dict[str, Any]]:
    api = TelegramStandIn(h.TOKEN).start()
    with SlackStandIn(bot_token=sh.BOT_TOKEN, app_token=sh.APP_TOKEN) as slack, h.smtp_server() as smtp:
        env = {
            **sh.slack_settings(slack.api_url, db_url),
            **h.telegram_env(api, db_url, smtp.port),
            "OPERATORS": f"slack:{sh.OPERATOR},telegram:{h.OPERATOR_ID}",
        }
        container: App = bootstrap(make_settings(**env), handlers={})
        with h.WebServer(create_app(container), h.free_port()) as server, h.polling(container):
            api.wait_polling()
            yield {
                "api": api,
                "slack": slack,
                "smtp": smtp,
                "container": container,
                "client": sh.SlackClient(server.url, slack),
            }
        container.close()
    api.stop()


def test_approve_on_telegram_updates_slack_and_a_later_slack_tap_hears_already_approved(
    both: dict[str, Any],
) -> None:
    api, slack, smtp, container = both["api"], both["slack"], both["smtp"], both["container"]
    pid = h.propose(container, h.add_customer(container))
    message_id = h.post(container, pid)
    posted = slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))[-1]
    assert posted.body["channel"] == sh.OPS_CHANNEL

    api.press(
        h.OPERATOR, h.OPS_CHAT, message_id, h.buttons_of(h.message(api, h.OPS_CHAT, message_id))["Approve"]
    )
    api.wait_call("answerCallbackQuery")
    smtp.wait_for(1)
    updated = slack.wait_for("chat.update", lambda c: "@olga" in json.dumps(c.body, ensure_ascii=False))[-1]
    assert not [b for b in updated.body.get("blocks", []) if b.get("type") == "actions"], (
        "Slack lost its buttons"
    )
    api.wait_for(
        lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="Telegram buttons gone"
    )

    assert both["client"].click(f"approve:{pid}", user=sh.OPERATOR, response="late").status_code == 200
    late = slack.wait_for("response_url", lambda c: "late" in c.path)[-1]
    assert "Already approved by @olga" in json.dumps(late.body, ensure_ascii=False)
    time.sleep(0.3)
    assert len(smtp.messages) == 1


def test_approve_on_slack_updates_the_telegram_message(both: dict[str, Any]) -> None:
    api, slack, smtp, container = both["api"], both["slack"], both["smtp"], both["container"]
    pid = h.propose(container, h.add_customer(container))
    message_id = h.post(container, pid)
    slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))
    assert both["client"].click(f"approve:{pid}", user=sh.OPERATOR, response="first").status_code == 200
    smtp.wait_for(1)
    api.wait_for(
        lambda: "reply_markup" not in h.message(api, h.OPS_CHAT, message_id), what="Telegram buttons gone"
    )
    assert sh.OPERATOR.lower() in h.message(api, h.OPS_CHAT, message_id)["text"].lower()
    api.press(h.OPERATOR, h.OPS_CHAT, message_id, f"approve:{pid}")
    assert api.wait_call("answerCallbackQuery").params["text"].startswith("Already approved by")
