"""The command layer through a terminal-like actor: typed lines in, plain replies out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.commands import Actor
from jobs import context
from jobs.handlers import AGENTS, HANDLERS, INBOX_TRIAGE
from jobs.process import handle_event
from jobs.propose import propose_for
from store import events as ev
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import (
    OPERATOR,
    STRANGER,
    RecordingSurface,
    commands,
    email_proposal,
    make_customer,
    record,
    row,
    settings_for,
)


def _daytime_zone() -> str:
    """A fixed-offset zone where it is midday now, so quiet hours never defer the test's emails."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12  # -12..11 hours east of UTC
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _message(store: EventStore, n: int, text: str) -> ev.Event:
    signal = ev.MessageReceived(
        customer=ev.CustomerRef(name="Ada Lovelace", email="ada@acme.test"),
        text=text,
        data={"subject": "Question", "message_id": f"<m{n}@acme.test>"},
    )
    return store.record_signal("message.received", signal, f"mail:{n}", source="email").event


def _email_proposals(surface: RecordingSurface) -> list[Any]:
    return [v for v in surface.posted if v.kind == "send_email"]


def test_an_edit_through_the_terminal_shapes_the_next_draft(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CRM_TIMEZONE=_daytime_zone())
    surface = RecordingSurface()
    ctx = app_for(store, settings, handlers=dict(HANDLERS))
    ctx.notifier.add(surface)
    cmds, _, _ = commands(store, settings, notifier=ctx.notifier)

    first = _message(store, 1, "How do I export my invoices?")
    propose_for(ctx, INBOX_TRIAGE, first)
    propose_for(ctx, INBOX_TRIAGE, first)  # a redelivered event records and posts nothing new
    [draft] = _email_proposals(surface)
    assert draft.state == "pending" and not draft.body[1].startswith("Hello Ada")
    fields = cmds.run(OPERATOR, f"edit {draft.id}")
    assert "body" in [f.name for f in fields.fields]
    original = next(f.value for f in fields.fields if f.name == "body")
    core = original.strip().splitlines()[2:-2] or ["Thanks for writing."]
    mine = "Hello Ada,\n\n" + "\n".join(core) + "\n\nWarm regards, Olivia"
    done = cmds.run(OPERATOR, f"edit {draft.id} body {mine}")
    assert done.ok and row(store, draft.id)["decision"] == "edited"

    second = _message(store, 2, "And can I change my billing email?")
    propose_for(ctx, INBOX_TRIAGE, second)
    latest = _email_proposals(surface)[-1]
    assert latest.id != draft.id
    body = row(store, latest.id)["proposed"]["draft"]["body"]
    assert body.startswith("Hello Ada,") and body.rstrip().endswith("Warm regards, Olivia")


def test_a_paused_agent_handles_what_arrived_while_paused_when_it_is_resumed(
    store: EventStore, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, CRM_TIMEZONE=_daytime_zone())
    surface = RecordingSurface()
    ctx = app_for(store, settings, handlers=dict(HANDLERS))
    ctx.notifier.add(surface)
    context.install(ctx)
    try:
        cmds = ctx.commands
        assert cmds.run(OPERATOR, "pause inbox_triage").text == "Agent inbox_triage paused."
        waiting = [_message(store, n, f"Can you send the invoice for order {n}?") for n in (1, 2)]
        for event in waiting:
            handle_event(ctx, event.id)
        assert [v for v in surface.posted if v.agent == INBOX_TRIAGE] == [], "paused: nothing proposed"

        resumed = cmds.run(OPERATOR, "resume inbox_triage")
        assert resumed.ok and "inbox_triage: 2 signal(s)" in resumed.text, resumed.text
        assert ctx.queue.join(timeout=60)  # type: ignore[attr-defined]
        triaged = {row(store, v.id)["event_id"] for v in surface.posted if v.agent == INBOX_TRIAGE}
        assert triaged == {event.id for event in waiting}, "each waiting message triaged on resume"

        after = _message(store, 3, "hello again?")
        handle_event(ctx, after.id)
        assert after.id in {row(store, v.id)["event_id"] for v in surface.posted if v.agent == INBOX_TRIAGE}

        assert cmds.run(OPERATOR, "pause all").text == "All agents paused."
        late = _message(store, 4, "Could you resend the invoice?")
        handle_event(ctx, late.id)
        everyone = cmds.run(OPERATOR, "resume all")
        caught_up = [line.split(":")[0] for line in everyone.text.splitlines()[1:]]
        assert INBOX_TRIAGE in caught_up and set(caught_up) <= set(AGENTS), everyone.text
        assert ctx.queue.join(timeout=60)  # type: ignore[attr-defined]
        assert late.id in {row(store, v.id)["event_id"] for v in surface.posted if v.agent == INBOX_TRIAGE}
        assert cmds.run(STRANGER, "pause").code == "refused"
    finally:
        context.uninstall()
        ctx.close()


def test_a_typed_merge_says_how_to_undo_it_by_its_number(store: EventStore, tmp_path: Path) -> None:
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    make_customer(store)
    make_customer(store, "Dora", "dora@gmail.test")

    merging = cmds.run(OPERATOR, "merge dora ada@acme.test")

    assert merging.ok and merging.text.startswith("Merging Dora into Ada Lovelace"), merging.text
    number = row(store, merging.proposal_id)["number"]
    assert number is not None and merging.text.endswith(f"Undo: undo {number}"), merging.text
    assert scheduled == [merging.proposal_id]
    assert cmds.run(OPERATOR, f"undo {number}").ok
    assert row(store, merging.proposal_id)["state"] == "undone"


def test_read_commands(store: EventStore, tmp_path: Path) -> None:
    cmds, _, _ = commands(store, settings_for(tmp_path))
    customer = make_customer(store)
    pid = record(store, email_proposal(customer))
    pending = cmds.run(OPERATOR, "/pending")
    assert pending.text.startswith("1 waiting") and not pending.proposals
    assert [(item.label, item.line) for item in pending.items] == [("Show #1", "show 1")]
    card = cmds.run(OPERATOR, pending.items[0].line)
    assert card.proposals[0].id == pid
    assert [b.label for b in card.proposals[0].buttons][:3] == ["Approve", "Edit", "Reject"]
    assert cmds.run(OPERATOR, "note ada: prefers calls after 5pm — ☎️").text == "Noted on Ada Lovelace."
    # A chat app's JSON may carry a NUL or a lone surrogate, which no Postgres text column holds.
    assert cmds.run(OPERATOR, "note ada: no\x00 calls \ud800on Mondays").text == "Noted on Ada Lovelace."
    picture = cmds.run(OPERATOR, "customer ada@acme.test")
    assert picture.ok and picture.lines[0] == "Ada Lovelace"
    assert any("prefers calls" in line for line in picture.lines)
    assert any("no calls ?on Mondays" in line for line in picture.lines), picture.lines
    past = cmds.run(OPERATOR, "customer ada --as-of 2001-01-01")
    assert past.code == "not_found" and "did not exist yet" in past.text
    why = cmds.run(OPERATOR, f"why {pid[:14]}")  # a unique prefix is enough on a terminal
    assert why.ok and "Cost: $0.0020" in why.text and "Policy: approval (test: rule)" in why.text
    assert "Source: event e1" in why.text
    assert "approve <id>" in cmds.run(Actor("slack", "anyone"), "help").text
    assert cmds.run(STRANGER, "customer ada").code == "refused"


def test_bad_input_gets_a_short_reply_and_changes_nothing(store: EventStore, tmp_path: Path) -> None:
    cmds, scheduled, _ = commands(store, settings_for(tmp_path))
    pid = record(store, email_proposal(make_customer(store)))
    cases = {
        "": "invalid",
        "   ": "invalid",
        "frobnicate now": "invalid",
        "approve": "invalid",
        "approve prp_doesnotexist": "not_found",
        "approve %": "not_found",
        "approve prp_": "not_found",
        f"snooze {pid} whenever": "invalid",
        f"snooze {pid} 400d": "invalid",
        "customer": "invalid",
        "customer 🦄🦄🦄": "not_found",
        "customer ada --as-of yesterday": "invalid",
        "note ada": "invalid",
        "note : text": "invalid",
        "note nobody-here: hi": "not_found",
        f"edit {pid} nonexistent value": "invalid",
        f"edit {pid} to not-an-email": "invalid",  # refused when typed, not a failure after the window
        f"approve {pid} {pid}": "invalid",  # `approve 1 2 3` approved #1 alone and said nothing
        f"undo {pid} now please": "invalid",
        "pause bogus_agent": "invalid",
        "resume renewal-nudgez": "invalid",
    }
    for line, code in cases.items():
        reply = cmds.run(OPERATOR, line)
        assert not reply.ok and reply.code == code, (line, reply)
    for data in ("", "approve", "approve:", "explode:" + pid, "approve:" + "x" * 100, "reject\x00:" + pid):
        assert cmds.press(OPERATOR, data).code in {"invalid", "not_found"}, data
    assert row(store, pid)["state"] == "pending" and scheduled == []


def test_spam_and_not_spam_in_one_tap_teach_the_triage(store: EventStore, tmp_path: Path) -> None:
    from agents.classifier.model import forget_corrections, predict
    from agents.intents import INTENTS
    from jobs.classified import learn_corrections

    settings = settings_for(tmp_path, CRM_TIMEZONE=_daytime_zone())
    surface = RecordingSurface()
    ctx = app_for(store, settings, handlers=dict(HANDLERS))
    ctx.notifier.add(surface)

    def card_for(n: int, text: str, kind: str) -> Any:
        propose_for(ctx, INBOX_TRIAGE, _message(store, n, text))
        return [v for v in surface.posted if v.agent == INBOX_TRIAGE and v.kind == kind][-1]

    pitch = "We build backlinks for plumbers: 40 guest posts on DA50 blogs this month for $99, interested?"
    filed = card_for(7, pitch, "add_note")  # filed as spam: a note, no reply
    not_spam = {b.label: b for b in filed.buttons}["Not spam"]
    question = card_for(8, "Could you resend last month's invoice as a PDF?", "send_email")
    spam = {b.label: b for b in question.buttons}["Spam"]
    try:
        assert ctx.commands.press(OPERATOR, spam.data).ok
        assert row(store, question.id)["state"] == "rejected", "spam: the reply is not sent"
        assert ctx.commands.press(OPERATOR, not_spam.data).ok
        corrected = {
            e.payload.text: e.payload.intent for e in store.read_all() if e.type == "intent.corrected"
        }  # type: ignore[attr-defined]
        assert corrected == {pitch: "question", "Could you resend last month's invoice as a PDF?": "spam"}

        assert ctx.commands.press(STRANGER, spam.data).code == "refused"
        assert ctx.commands.run(OPERATOR, f"intent {question.id} nonsense").code == "invalid"
        other = card_for(
            9, "Your last update deleted half of our project boards, this is a mess.", "send_email"
        )
        menu = ctx.commands.press(OPERATOR, {b.label: b for b in other.buttons}["Wrong intent?"].data)
        assert menu.ok and menu.proposals and "really" in menu.text
        offered = {b.label: b for b in menu.proposals[0].buttons}
        assert set(offered) <= set(INTENTS) and len(offered) == len(INTENTS) - 1, "every other intent"
        assert ctx.commands.press(
            OPERATOR, offered["complaint" if "complaint" in offered else "question"].data
        ).ok
        why = ctx.commands.run(OPERATOR, f"why {question.id}").text
        assert "Classified: billing_question" in why and "by classifier triage-v" in why, why
        assert "language en" in why
        assert learn_corrections(store) == 1, "the two before were learnt by the triage of message 9"
        assert predict(pitch).intent == "question", "the triage reads it the operator's way from now on"
    finally:
        forget_corrections()  # the process-wide classifier: leave it as the next test expects


def test_an_agent_is_paused_by_its_name_however_it_is_typed(store: EventStore, tmp_path: Path) -> None:
    cmds, _, _ = commands(store, settings_for(tmp_path))
    assert cmds.run(OPERATOR, "pause Renewal-Nudges").text == "Agent renewal_nudges paused."
    assert cmds.run(OPERATOR, "resume renewal nudges").text.startswith("Agent renewal_nudges resumed.")
    refused = cmds.run(OPERATOR, "pause renewals")
    assert refused.code == "invalid" and "renewal_nudges" in refused.text
