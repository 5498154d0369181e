"""Telegram renderings: HTML that Telegram's parser accepts whatever the names hold, and callback data
that fits in 64 bytes. Checked with the stand-in's own HTML parser, which answers like Telegram's."""

from __future__ import annotations

import pytest

from bot.commands import Reply
from bot.telegram import render
from jobs.views import Button, ProposalView
from tests.standins.telegram_api import ApiError, parse_html

NASTY = ['<b>Ada</b> & "Bob"', "_under_ *star* `code` [x](y)", "Zoë 🚀 <3 &amp; </i>", "a < b > c & d;"]
PID = "prp_0123456789abcdef01234567"  # longer than real ids (24 characters)


def view(name: str, state: str = "pending", buttons: bool = True) -> ProposalView:
    actions = ("approve", "edit", "reject", "snooze", "why")
    return ProposalView(
        id=PID,
        state=state,
        kind="send_email",
        agent="followup",
        customer_id="cus_1",
        customer_name=name,
        title=f"Send email to {name}",
        body=(f"Subject: Hi {name}", f"Dear {name}, 5 < 6 & 7 > 3"),
        status=None if buttons else f"Approved by {name} at 2026-01-01 10:00 UTC",
        buttons=tuple(Button(a, a.title(), PID) for a in actions) if buttons else (),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", NASTY)
def test_proposals_with_markup_in_names_parse_and_show_the_names_verbatim(name: str) -> None:
    for shown in (view(name), view(name, "approved", buttons=False)):
        plain = parse_html(render.proposal_html(shown))
        assert name in plain and "5 < 6 & 7 > 3" in plain


def test_every_button_fits_in_64_bytes_and_a_final_view_has_no_keyboard() -> None:
    keyboard = render.proposal_keyboard(view("Ada"))
    assert keyboard is not None
    datas = [b.callback_data for row in keyboard.inline_keyboard for b in row]
    assert all(isinstance(d, str) and len(d.encode()) <= 64 for d in datas)
    assert f"{render.SNOOZE_MENU}:{PID}" in datas, "Snooze opens the choices first"
    assert render.proposal_keyboard(view("Ada", "approved", buttons=False)) is None
    snooze = [b.callback_data for row in render.snooze_keyboard(PID).inline_keyboard for b in row]
    assert f"snooze:{PID}:1h" in snooze and f"{render.BACK}:{PID}" in snooze


def test_callback_data_over_64_bytes_is_refused_before_it_reaches_telegram() -> None:
    assert render.callback("a" * 64)
    with pytest.raises(ValueError, match="64"):
        render.callback("é" * 33)  # 66 bytes in UTF-8
    with pytest.raises(ValueError):
        render.callback("")


def test_telegram_only_callbacks_are_told_apart_from_proposal_buttons() -> None:
    assert render.split_callback("ea:12") == ("ea", "12")
    assert render.split_callback(f"approve:{PID}") == ("", f"approve:{PID}")
    assert render.split_callback("ea:") == ("", "ea:")


def test_a_huge_reply_is_cut_below_telegrams_limit() -> None:
    reply = Reply(lines=tuple(f"line {i} <&> " + "x" * 200 for i in range(100)))
    (message,) = render.reply_messages(reply)
    plain = parse_html(message.html)
    assert len(plain) <= render.MAX_TEXT and plain.endswith("…")


def test_a_refusal_is_answered_not_authorised() -> None:
    refused = Reply(lines=("Sorry, only operators can approve.",), ok=False, code="refused")
    assert render.answer_text(refused).startswith("Not authorised")
    assert len(render.answer_text(Reply(lines=("x" * 500,)))) == render.MAX_ANSWER


@pytest.mark.parametrize("bad", ["<x>hi</x>", "a < b", "AT&T", "<b>open", "<b><i>x</b></i>", "&nbsp;"])
def test_the_stand_in_refuses_bad_html_like_telegram(bad: str) -> None:
    with pytest.raises(ApiError, match="can't parse entities"):
        parse_html(bad)


def test_the_stand_in_accepts_telegrams_tags_and_entities() -> None:
    assert parse_html(
        '<b>a</b> <a href="https://x.test/?a=1&amp;b=2">l</a> &lt;&gt;&amp;&quot; &#128512;'
    ) == ('a l <>&" 😀')
