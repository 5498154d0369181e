"""The Slack surface over HTTP: signed requests to the real web app, Slack's side played by the stand-in.

Runs on SQLite and Postgres. Execution is recorded (not run) here; the end-to-end tests send the email.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from bot.bootstrap import App, bootstrap
from bot.commands import Actor
from bot.web import create_app
from store import lifecycle as lc
from store import tables as t
from tests.integration import as_of_helpers as as_of
from tests.integration import slack_harness as h
from tests.standins import slack_requests as sr
from tests.standins.slack_api import Call, SlackStandIn

# Slack's deadline for the 200 is 3 s; the app answers long before (ack first, work after).
ACK_DEADLINE_S = 3.0


@dataclass
class Env:
    container: App
    slack: SlackStandIn
    client: h.SlackClient
    scheduled: list[str]
    customer_id: str

    def proposal_row(self, pid: str) -> dict[str, Any]:
        with self.container.engine.connect() as connection:
            row = lc.get_proposal(connection, pid)
        assert row is not None
        return row

    def posted(self, pid: str) -> Call:
        """Post a proposal through the notify fan-out; the chat.postMessage the stand-in received."""
        self.container.notifier.post(pid)
        return self.slack.wait_for("chat.postMessage", lambda c: pid in json.dumps(c.body))[-1]


@pytest.fixture
def env(db_url: str, make_settings: Any) -> Iterator[Env]:
    with SlackStandIn(bot_token=h.BOT_TOKEN, app_token=h.APP_TOKEN) as slack:
        container = bootstrap(make_settings(**h.slack_settings(slack.api_url, db_url)), handlers={})
        scheduled = h.install_recording_commands(container)
        customer_id = h.add_customer(container)
        with h.Server(create_app(container)) as server:
            yield Env(container, slack, h.SlackClient(server.url, slack), scheduled, customer_id)
        container.close()


def _texts(call: Call) -> str:
    return json.dumps(call.body)


def _actions(blocks: list[dict[str, Any]]) -> list[str]:
    ids = []
    for block in blocks:
        ids += [element["action_id"] for element in block.get("elements", []) if "action_id" in element]
    return ids


# -- slash commands -------------------------------------------------------------------------------


def test_signed_customer_command_is_acked_at_once_and_answers_with_the_slice(env: Env) -> None:
    started = time.monotonic()
    response = env.client.command("/customer", "acme")
    assert response.status_code == 200
    assert time.monotonic() - started < ACK_DEADLINE_S
    answer = env.slack.wait_for("response_url")[-1]
    assert "Ada Lovelace" in _texts(answer)
    assert "stage lead" in _texts(answer)
    assert answer.body["response_type"] == "ephemeral"


def test_customer_as_of_a_day_before_they_existed_says_so(env: Env) -> None:
    env.client.command("/customer", "acme as of 2001-01-01")
    assert "did not exist yet" in _texts(env.slack.wait_for("response_url")[-1])


def test_customer_with_a_bad_date_explains_the_format(env: Env) -> None:
    env.client.command("/customer", "acme as of 1st of May")
    assert "YYYY-MM-DD" in _texts(env.slack.wait_for("response_url")[-1])


def test_customer_as_of_a_day_reads_the_line_as_telegram_and_the_terminal_do(env: Env) -> None:
    as_of.jonas_becker(env.container)
    expected = as_of.expected_lines(env.container, Actor("slack", h.OPERATOR))
    env.client.command("/customer", as_of.LINE.removeprefix("/customer "), response="asof")
    answer = env.slack.wait_for("response_url", lambda c: c.path.endswith("/asof"))[-1]
    assert answer.body["text"] == "\n".join(expected)
    assert as_of.LATER not in _texts(answer)


def test_several_matches_offer_buttons_and_a_pick_shows_that_customer(env: Env) -> None:
    other = h.add_customer(env.container, name="Ada Byron", email="ada@byron.example")
    env.client.command("/customer", "ada")
    answer = env.slack.wait_for("response_url")[-1]
    values = [e["value"] for b in answer.body["blocks"] for e in b.get("elements", []) if "value" in e]
    # A pick runs the typed line it carries, through the same parser as a typed command.
    assert f"customer {other}" in values and f"customer {env.customer_id}" in values
    env.client.click(f"customer {other}", action_id="crm_pick:0", response="pick")
    picked = env.slack.wait_for("response_url", lambda c: c.path.endswith("/pick"))[-1]
    assert "Ada Byron" in _texts(picked)


def test_no_match_names_the_closest_customers(env: Env) -> None:
    env.client.command("/customer", "Ada Lovelac")  # typo, matches nothing exactly or by substring
    env.client.command("/customer", "zzzz-nobody", response="none")
    answer = env.slack.wait_for("response_url", lambda c: c.path.endswith("/none"))[-1]
    assert "No customer matches" in _texts(answer)


def test_pending_is_one_line_per_proposal_with_a_show_button_that_brings_the_card(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.client.command("/pending", "")
    answer = env.slack.wait_for("response_url")[-1]
    listed = [b for b in answer.body["blocks"] if b.get("accessory")]
    assert len(listed) == 1 and listed[0]["text"]["text"].startswith("#1 · send_email · Ada Lovelace")
    show = listed[0]["accessory"]
    assert show["text"]["text"] == "Show #1" and show["value"] == "show 1"
    assert "crm:approve" not in _actions(answer.body["blocks"]), "the list itself is compact"
    env.client.click(show["value"], action_id=show["action_id"], response="show", ephemeral=True)
    card = env.slack.wait_for("response_url", lambda c: c.path.endswith("/show"))[-1]
    assert pid in _texts(card) and card.body["replace_original"] is False
    assert {"crm:approve", "crm:edit", "crm:reject", "crm:snooze", "crm:why"} <= set(
        _actions(card.body["blocks"])
    )


def test_note_pause_resume_and_digest(env: Env) -> None:
    env.client.command("/note", "acme called, wants a demo", response="note")
    assert "Noted on Ada Lovelace" in _texts(
        env.slack.wait_for("response_url", lambda c: "note" in c.path)[-1]
    )
    with env.container.engine.connect() as connection:
        notes = connection.execute(select(t.notes.c.text)).scalars().all()
    assert notes == ["called, wants a demo"]
    env.client.command("/pause", "all", response="pause")
    assert "All agents paused" in _texts(env.slack.wait_for("response_url", lambda c: "pause" in c.path)[-1])
    env.client.command("/resume", "renewal_nudges", response="resume")
    resumed = env.slack.wait_for("response_url", lambda c: "resume" in c.path)[-1]
    assert "renewal_nudges resumed" in _texts(resumed)
    env.client.command("/digest", "", response="digest")
    assert env.slack.wait_for("response_url", lambda c: "digest" in c.path)[-1].body["text"]


def test_a_stranger_cannot_read_customers(env: Env) -> None:
    env.client.command("/customer", "acme", user=h.STRANGER)
    answer = env.slack.wait_for("response_url")[-1]
    assert "only operators" in _texts(answer)
    assert "Ada" not in _texts(answer)


# -- proposal messages and buttons ----------------------------------------------------------------


def test_a_proposal_is_posted_with_its_draft_and_buttons(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    call = env.posted(pid)
    assert call.body["channel"] == h.OPS_CHANNEL
    assert call.headers["Authorization"] == f"Bearer {h.BOT_TOKEN}"
    text = _texts(call)
    assert "Hi Ada, how is the trial going?" in text and "confidence 82%" in text
    assert _actions(call.body["blocks"]) == ["crm:approve", "crm:edit", "crm:reject", "crm:snooze", "crm:why"]
    messages = lc.messages_of(env.container.engine, pid)
    assert [(m["surface"], m["chat_id"]) for m in messages] == [("slack", h.OPS_CHANNEL)]


def test_signed_approve_click_answers_200_at_once_then_updates_the_message(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    posted = env.posted(pid)
    started = time.monotonic()
    response = env.client.click(f"approve:{pid}", message_ts=posted.body.get("ts", ""))
    assert response.status_code == 200
    assert time.monotonic() - started < ACK_DEADLINE_S
    update = env.slack.wait_for("chat.update")[-1]
    assert "Approved by u0alice (slack)" in _texts(update)
    assert "crm:approve" not in _actions(update.body["blocks"])
    assert env.proposal_row(pid)["state"] == "approved"
    assert env.scheduled == [pid]
    assert env.slack.of("response_url") == []  # the updated message says it all; no extra answer


def test_edit_opens_a_prefilled_modal_and_its_submission_approves_the_edited_version(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.posted(pid)
    assert env.client.click(f"edit:{pid}").status_code == 200
    opened = env.slack.wait_for("views.open")[-1]
    view = opened.body["view"]
    view = json.loads(view) if isinstance(view, str) else view
    prefilled = {b["block_id"]: b["element"].get("initial_value") for b in view["blocks"]}
    assert prefilled["field:body"] == "Hi Ada, how is the trial going?"
    assert prefilled["field:subject"] == "Checking in"
    response = env.client.submit(
        view,
        {
            "field:to": {"value": "ada@acme.example"},
            "field:subject": {"value": "Checking in"},
            "field:body": {"value": "Hi Ada — any questions about the trial? 🙂"},
        },
    )
    assert response.status_code == 200 and response.content in (b"", b"{}")
    row = env.proposal_row(pid)
    assert row["decision"] == "edited" and row["state"] == "approved"
    assert row["approved"]["draft"]["body"] == "Hi Ada — any questions about the trial? 🙂"
    assert env.scheduled == [pid]
    assert "Edited and approved" in _texts(env.slack.wait_for("chat.postEphemeral")[-1])


def test_reject_opens_a_modal_and_keeps_the_reason(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.posted(pid)
    env.client.click(f"reject:{pid}")
    opened = env.slack.wait_for("views.open")[-1].body["view"]
    opened = json.loads(opened) if isinstance(opened, str) else opened
    assert opened["callback_id"] == "crm_reject"
    env.client.submit(opened, {"reason": {"reason_input": "Too pushy for a trial user"}})
    row = env.proposal_row(pid)
    assert row["state"] == "rejected" and row["reason"] == "Too pushy for a trial user"
    assert env.scheduled == []
    update = env.slack.wait_for("chat.update")[-1]
    assert "Rejected by" in _texts(update) and _actions(update.body["blocks"]) == []


def test_why_answers_ephemerally_with_sources_and_rules(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.client.click(f"why:{pid}")
    answer = env.slack.wait_for("response_url")[-1]
    assert answer.body["response_type"] == "ephemeral"
    assert "No reply for 7 days" in _texts(answer)
    assert env.proposal_row(pid)["state"] == "pending"


def test_snooze_offers_a_few_times_and_a_choice_snoozes(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    posted = env.posted(pid)
    menu = next(
        e for b in posted.body["blocks"] for e in b.get("elements", []) if e.get("action_id") == "crm:snooze"
    )
    choices = [option["value"] for option in menu["options"]]
    assert choices == [f"snooze:{pid}:1h", f"snooze:{pid}:4h", f"snooze:{pid}:1d"]
    env.client.click(choices[1], action_id="crm:snooze", select=True)
    assert "Snoozed until" in _texts(env.slack.wait_for("chat.update")[-1])
    assert env.proposal_row(pid)["state"] == "snoozed"


# -- authorisation and replay safety --------------------------------------------------------------


def test_forged_signature_is_refused_with_401_and_changes_nothing(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    body = sr.interactive_body(
        sr.click(f"approve:{pid}", user=h.OPERATOR, response_url=env.slack.response_url())
    )
    headers = sr.signed_headers("not-the-secret", body, content_type=sr.FORM)
    response = env.client.http.post(env.client.url + "/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid request" and response.json()["message"]
    unsigned = env.client.http.post(
        env.client.url + "/slack/events", content=body, headers={"Content-Type": sr.FORM}
    )
    assert unsigned.status_code == 401
    assert env.proposal_row(pid)["state"] == "pending"


def test_stale_timestamp_is_refused_with_401(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    body = sr.interactive_body(
        sr.click(f"approve:{pid}", user=h.OPERATOR, response_url=env.slack.response_url())
    )
    headers = sr.signed_headers(h.SECRET, body, timestamp=int(time.time()) - 301, content_type=sr.FORM)
    response = env.client.http.post(env.client.url + "/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert env.proposal_row(pid)["state"] == "pending"


def test_bad_bodies_get_a_clear_4xx(env: Env) -> None:
    big = b"payload=" + b"x" * (1024 * 1024 + 1)
    assert env.client.post(big, sr.FORM).status_code == 413
    latin1 = "text=caf\xe9".encode("latin-1")
    assert env.client.http.post(env.client.url + "/slack/events", content=latin1).status_code == 401
    garbage = env.client.post(b"payload=%7Bnot-json", sr.FORM)
    assert garbage.status_code == 400
    unsigned_garbage = env.client.http.post(env.client.url + "/slack/events", content=b"payload=%7Bnot-json")
    assert unsigned_garbage.status_code == 401


@pytest.mark.parametrize(
    ("timestamp", "body"),
    [("now", b"payload=x"), ("", b"payload=x"), (str(int(time.time())), b"payload=\xff")],
    ids=["timestamp now", "empty timestamp", "body not utf-8"],
)
def test_unsigned_garbage_gets_401_from_the_running_server_not_500(
    env: Env, timestamp: str, body: bytes
) -> None:
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=0", "Content-Type": sr.FORM}
    response = env.client.http.post(env.client.url + "/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid request"


def test_unknown_user_gets_an_ephemeral_refusal_and_nothing_changes(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    assert env.client.click(f"approve:{pid}", user=h.STRANGER).status_code == 200
    told = env.slack.wait_for("response_url")[-1]
    assert told.body["response_type"] == "ephemeral" and "only operators" in _texts(told)
    assert env.proposal_row(pid)["state"] == "pending"
    assert env.scheduled == [] and env.slack.of("chat.update") == []


def test_unknown_proposal_and_foreign_buttons_are_answered_not_crashed(env: Env) -> None:
    env.client.click("approve:prp_doesnotexist0000000000", response="unknown")
    assert "No proposal" in _texts(env.slack.wait_for("response_url", lambda c: "unknown" in c.path)[-1])
    env.client.click("launch:missiles", action_id="crm:launch", response="foreign")
    assert "not one of ours" in _texts(env.slack.wait_for("response_url", lambda c: "foreign" in c.path)[-1])


def test_double_tap_and_two_operators_make_one_decision_and_the_loser_sees_who(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.posted(pid)
    barrier = threading.Barrier(4)
    users = [h.OPERATOR, h.OPERATOR, h.OPERATOR_2, h.OPERATOR_2]
    statuses: list[int] = []

    def tap(n: int) -> None:
        barrier.wait()
        statuses.append(env.client.click(f"approve:{pid}", user=users[n], response=f"tap{n}").status_code)

    threads = [threading.Thread(target=tap, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4
    lost = env.slack.wait_for("response_url", count=3)
    assert all("Already approved by" in _texts(a) for a in lost)
    time.sleep(0.3)
    assert len(env.slack.of("response_url")) == 3  # the winner's answer is the updated message
    assert len(env.slack.wait_for("chat.update")) == 1
    assert env.scheduled == [pid]
    with env.container.engine.connect() as connection:
        decided = connection.execute(
            select(t.events.c.id).where(t.events.c.stream == pid, t.events.c.type == "proposal.decided")
        ).all()
    assert len(decided) == 1


def test_retried_message_event_makes_one_signal(env: Env) -> None:
    env.client.command("/customer", "acme link", channel="C0ACME", response="link")
    assert "Linked" in _texts(env.slack.wait_for("response_url", lambda c: "link" in c.path)[-1])
    body = sr.message_event(
        "Can we move the call?",
        user="U0CUSTOMER",
        channel="C0ACME",
        ts="1700000100.000200",
        event_id="Ev0RETRY1",
    )
    assert env.client.event(body).status_code == 200
    retry = env.client.event(body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status_code == 200
    again = env.client.event({**body, "event_id": "Ev0OTHER"})  # same message, new delivery id
    assert again.status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with env.container.engine.connect() as connection:
            rows = connection.execute(
                select(t.events.c.stream, t.events.c.payload).where(t.events.c.type == "message.received")
            ).all()
        if rows:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # let the retries' listeners finish, then count
    with env.container.engine.connect() as connection:
        rows = connection.execute(
            select(t.events.c.stream, t.events.c.payload).where(t.events.c.type == "message.received")
        ).all()
    assert len(rows) == 1
    assert rows[0].stream == env.customer_id
    assert rows[0].payload["data"]["slack_channel"] == "C0ACME"


def test_bot_posts_operators_and_unlinked_channels_are_not_signals(env: Env) -> None:
    env.client.command("/customer", "acme link", channel="C0ACME", response="link")
    env.slack.wait_for("response_url", lambda c: "link" in c.path)
    env.client.event(
        sr.message_event(
            "our reply",
            user="U0BOT",
            channel="C0ACME",
            ts="1700000200.1",
            event_id="Ev1",
            subtype="bot_message",
        )
    )
    env.client.event(
        sr.message_event("note to self", user=h.OPERATOR, channel="C0ACME", ts="1700000200.2", event_id="Ev2")
    )
    env.client.event(
        sr.message_event("random chatter", user="U0X", channel="C0RANDOM", ts="1700000200.3", event_id="Ev3")
    )
    time.sleep(0.5)
    with env.container.engine.connect() as connection:
        count = connection.execute(select(t.events.c.id).where(t.events.c.type == "message.received")).all()
    assert count == []


def test_a_stranger_cannot_link_a_channel(env: Env) -> None:
    env.client.command("/customer", "acme link", channel="C0EVIL", user=h.STRANGER)
    # The command layer refuses it, as it refuses any non-operator's command, and logs the attempt.
    assert "only operators can link a channel" in _texts(env.slack.wait_for("response_url")[-1])
    with env.container.engine.connect() as connection:
        linked = connection.execute(select(t.contact_points).where(t.contact_points.c.kind == "slack")).all()
        refused = connection.execute(
            select(t.events.c.actor).where(t.events.c.type == "decision.refused")
        ).all()
    assert linked == []
    assert [row.actor for row in refused] == [f"slack:{h.STRANGER}"]


def test_url_verification_echoes_the_challenge(env: Env) -> None:
    body = {
        "token": "legacy",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    response = env.client.event(body)
    assert response.status_code == 200 and response.json() == {"challenge": body["challenge"]}


def test_rate_limited_post_is_retried_after_retry_after(env: Env) -> None:
    pid = h.propose_email(env.container, env.customer_id)
    env.slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    refs = env.container.notifier.post(pid)
    assert len(refs) == 1 and time.monotonic() - started >= 1.0
    attempts = env.slack.of("chat.postMessage")
    assert len(attempts) == 2 and attempts[1].at - attempts[0].at >= 1.0


def test_digest_chart_is_uploaded_to_the_channel(env: Env, tmp_path: Any) -> None:
    chart = tmp_path / "digest.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 2048)
    surface = env.container.notifier.surface("slack")
    assert surface is not None
    surface.post_image(chart, "Digest 2026-10-01")  # type: ignore[attr-defined]
    upload = env.slack.wait_for("upload")[-1]
    assert upload.body["bytes"] == chart.stat().st_size
    done = env.slack.wait_for("files.completeUploadExternal")[-1]
    assert done.body["channel_id"] == h.OPS_CHANNEL


def test_a_reply_to_a_customer_goes_to_their_channel_escaped(env: Env) -> None:
    surface = env.container.notifier.surface("slack")
    assert surface is not None
    ts = surface.send_reply("C0ACME", "See you <Friday> & thanks", idempotency_key="prp_1:1")
    sent = env.slack.wait_for("chat.postMessage", lambda c: c.body.get("channel") == "C0ACME")[-1]
    assert sent.body["text"] == "See you &lt;Friday&gt; &amp; thanks" and ts
    assert sent.body["metadata"]["event_payload"] == {"idempotency_key": "prp_1:1"}
