"""The email connector on real messages: MIME structures, charsets, threads and attachments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email import policy

import pytest

from bot.inbound.email import MAX_TEXT, parse_email, parse_with
from bot.inbound.errors import InvalidSignal, MalformedBody
from tests.inbound_support import EMAILS, email


def test_multipart_alternative_prefers_the_plain_part_and_decodes_encoded_headers() -> None:
    inbound = parse_email(email("multipart_alternative.eml"))
    assert (inbound.type, inbound.source) == ("message.received", "email")
    assert inbound.key == "email:<CAF8k2=Lq0b3Tz9s@mail.acme-gmbh.de>"
    assert inbound.signal.customer.name == "Renée Faß"
    assert inbound.signal.customer.email == "renee@acme-gmbh.de"
    data = inbound.signal.data
    assert data["subject"] == "Abo erweitern \u2013 Team-Plan"
    assert data["to"] == ["inbox@crm.example"]
    assert data["cc"] == ["buchhaltung@acme-gmbh.de"]
    assert data["body_format"] == "plain"
    assert inbound.signal.text is not None
    assert "Team-Plan (49 €/Monat)" in inbound.signal.text
    assert "<p>" not in inbound.signal.text and "\r" not in inbound.signal.text
    assert inbound.occurred_at == datetime(2025, 3, 4, 8, 13, 58, tzinfo=UTC)


def test_an_html_only_mail_is_converted_to_text() -> None:
    inbound = parse_email(email("html_only.eml"))
    text = inbound.signal.text or ""
    assert inbound.signal.data["body_format"] == "html"
    assert "charged twice for invoice **INV-2025-0042**" in text
    assert "[the invoice](https://billing.example.com/inv/42)" in text
    assert "<" not in text.replace("<br>", "") and "color:red" not in text and "pixel.gif" not in text


@pytest.mark.parametrize(
    ("name", "sender", "subject", "phrase"),
    [
        ("iso_8859_1_8bit.eml", "José Muñoz", "Renovación del contrato", "¿Podemos hablar de la renovación?"),
        (
            "windows_1252.eml",
            "Chloe O'Brien",
            "“Quick one”",
            "“Quick one” \u2013 can we move the renewal to April? The €99",
        ),
        ("shift_jis.eml", "佐藤花子", "請求書について", "請求書の件でご連絡しました。"),
    ],
)
def test_non_utf8_charsets_are_decoded(name: str, sender: str, subject: str, phrase: str) -> None:
    inbound = parse_email(email(name))
    assert inbound.signal.customer.name == sender
    assert inbound.signal.data["subject"] == subject
    assert phrase in (inbound.signal.text or "")


def test_a_thread_keeps_its_references_and_one_thread_id() -> None:
    original, reply, forward = (
        parse_email(email(f"thread_{n}.eml")) for n in ("1_original", "2_reply", "3_forward")
    )
    root = "<thread-root-001@brightpath.io>"
    assert {
        original.signal.data["thread_id"],
        reply.signal.data["thread_id"],
        forward.signal.data["thread_id"],
    } == {root}
    assert reply.signal.data["in_reply_to"] == root
    assert reply.signal.data["references"] == [root]
    assert forward.signal.data["in_reply_to"] == "<thread-reply-002@brightpath.io>"
    assert forward.signal.data["references"] == [root, "<thread-reply-002@brightpath.io>"]
    assert len({original.key, reply.key, forward.key}) == 3
    assert forward.signal.data["cc"] == ["dana@brightpath.io"]


def test_attachments_are_listed_with_name_type_and_size_not_stored() -> None:
    forward = parse_email(email("thread_3_forward.eml"))
    assert forward.signal.data["attachments"] == [
        {"filename": "Re_ Pilot for 10 seats.eml", "content_type": "message/rfc822", "size": 191},
        {"filename": "PO-7781.pdf", "content_type": "application/pdf", "size": 900},
    ]
    assert "%PDF" not in (forward.signal.text or "")
    inbound = parse_email(email("attachments.eml"))
    assert inbound.signal.customer.name == "Æthelstan Ødegård"
    assert inbound.signal.data["attachments"] == [
        {"filename": "skærmbillede 1.png", "content_type": "image/png", "size": 1024},
        {"filename": "export.csv", "content_type": "text/csv", "size": 21},
    ]
    assert inbound.signal.text == "Two screenshots attached 📎 — the export button does nothing."


def test_a_message_without_message_id_is_keyed_by_its_bytes() -> None:
    raw = b"From: a@b.co\r\nSubject: hi\r\n\r\nhello\r\n"
    assert parse_email(raw).key == parse_email(raw).key
    assert parse_email(raw).key.startswith("email:sha256:")
    assert parse_email(raw).key != parse_email(raw + b"again").key


@pytest.mark.parametrize(
    "raw",
    [b"Subject: no sender\r\n\r\nbody", b"From: not an address\r\n\r\nbody", b"From: <>\r\n\r\nx"],
)
def test_a_message_without_a_sender_is_refused_naming_from(raw: bytes) -> None:
    with pytest.raises(InvalidSignal) as excinfo:
        parse_email(raw)
    assert excinfo.value.errors[0]["field"] == "from"


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"just some words without headers"])
def test_something_that_is_not_a_mail_is_malformed(raw: bytes) -> None:
    with pytest.raises((MalformedBody, InvalidSignal)):
        parse_email(raw)


def test_hostile_content_is_made_storable_and_bounded() -> None:
    body = ("x\x00y " * 60_000).encode()
    raw = (
        b"From: =?utf-8?b?" + b"8J+SqQ==" + b"?= <a@b.co>\r\nDate: Tue, 30 Feb 99999 99:99 +0000\r\n"
        b"Message-ID: <"
        + b"m" * 400
        + b"@x>\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\n"
        + body
    )
    inbound = parse_email(raw)
    assert "\x00" not in (inbound.signal.text or "")
    assert len(inbound.signal.text or "") <= MAX_TEXT
    assert len(inbound.key) <= 255
    assert inbound.occurred_at is None  # an impossible Date is ignored, not fatal


def _outcome(parse: Callable[[], object]) -> object:
    """What a parse gives: the signal, or the refusal's type and words."""
    try:
        return parse()
    except (MalformedBody, InvalidSignal) as exc:
        return type(exc), str(exc), getattr(exc, "errors", None)


EVERY_FIXTURE = sorted(p for p in EMAILS.rglob("*") if p.is_file())
MALFORMED_HEADERS = [
    b"From: a@b.co\r\nTo: ,,,@\r\nCc: <<>>\r\nDate: yesterday\r\nMessage-ID: <no-end\r\n\r\nbody",
    b'From: "Ada" <a@b.co>\r\nContent-Type: text/plain; charset="\r\nSubject: =?x?q?bad?=\r\n\r\nhi',
    b"From: a@b.co\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all",
]


@pytest.mark.parametrize("sent", [False, True])
def test_the_memoised_header_parsing_reads_every_message_as_the_stdlib_policy_does(sent: bool) -> None:
    samples = [path.read_bytes() for path in EVERY_FIXTURE] + MALFORMED_HEADERS
    for raw in samples * 2:  # the second round reads every header from the memo
        expected = _outcome(lambda raw=raw: parse_with(raw, policy.default, sent=sent))
        assert _outcome(lambda raw=raw: parse_email(raw, sent=sent)) == expected
