"""Auto-reply and delivery-report detection from real header sets: exact rules, before any classifier."""

from __future__ import annotations

import pytest

from agents.intents import auto_reply_rule, classify

HEADER_SETS = {
    "rfc3834-auto-replied": {"Auto-Submitted": "auto-replied", "Subject": "Out of office"},
    "rfc3834-auto-generated": {"Auto-Submitted": "auto-generated"},
    "exchange-oof": {"X-Auto-Response-Suppress": "All", "X-MS-Exchange-Inbox-Rules-Loop": "a@b.example"},
    "x-autoreply": {"X-Autoreply": "yes"},
    "x-autorespond": {"X-Autorespond": "Thank you for your mail"},
    "precedence-bulk": {"Precedence": "bulk"},
    "precedence-auto-reply": {"Precedence": "auto_reply"},
    "precedence-list": {"Precedence": "list", "List-Id": "<news.example.com>"},
    "dsn-report": {"Content-Type": "multipart/report; report-type=delivery-status; boundary=xyz"},
    "mailer-daemon": {"From": "Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>"},
    "postmaster": {"From": "postmaster@mail.example.org"},
}
HUMAN_SETS = {
    "plain": {"From": "Dana <dana@acme.example>", "Content-Type": "text/plain; charset=utf-8"},
    "auto-submitted-no": {"Auto-Submitted": "no"},
    "precedence-first-class": {"Precedence": "first-class"},
}


@pytest.mark.parametrize("headers", HEADER_SETS.values(), ids=HEADER_SETS.keys())
def test_automatic_header_sets_are_auto_replies_by_rule(headers: dict[str, str]) -> None:
    found = classify("Please cancel my invoice, I am away.", "Re: invoice", {"headers": headers})
    assert found.intent == "auto_reply" and found.method == "rules"
    assert auto_reply_rule({"headers": headers})


@pytest.mark.parametrize("headers", HUMAN_SETS.values(), ids=HUMAN_SETS.keys())
def test_human_header_sets_are_left_to_the_classifier(headers: dict[str, str]) -> None:
    assert auto_reply_rule({"headers": headers}) is None
    assert (
        classify("Can I add a second admin to our account?", None, {"headers": headers}).method
        == "classifier"
    )


def test_an_out_of_office_without_headers_is_recognised_by_the_classifier() -> None:
    found = classify("I am out of the office until 3 April with no access to email.", "Automatic reply")
    assert (found.intent, found.method) == ("auto_reply", "classifier")
