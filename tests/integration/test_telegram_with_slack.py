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

from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as h
from tests.integration.both_harness import both_surfaces


@pytest.fixture
def both(db_url: str, make_settings: Any) -> Iterator[dict[str, Any]]:
    with both_surfaces(make_settings, db_url, f"slack:{sh.OPERATOR},telegram:{h.OPERATOR_ID}") as running:
        yield running


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
