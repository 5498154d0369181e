"""Header values taken from customers, made safe for outbound mail (jobs.connectors.email)."""

from __future__ import annotations

from email import message_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.connectors.base import ActionRequest
from jobs.connectors.email import MAX_REFERENCES, build_message, can_take, header_text, message_ids


def request(subject: str, in_reply_to: object = None, references: object = None) -> ActionRequest:
    params = {"to": "ada@acme.test", "subject": subject, "body": "Hi"}
    if in_reply_to is not None:
        params["in_reply_to"] = in_reply_to
    if references is not None:
        params["references"] = references
    return ActionRequest("prp_1", "send_email", "inbox_triage", "cus_1", params, None, "key-1", 1)


def test_line_breaks_and_control_characters_fold_into_one_space() -> None:
    assert header_text("Re: help\r\nBcc: thief@evil.test") == "Re: help Bcc: thief@evil.test"
    assert header_text(" a\r\r\n\tb\x00c\u2028d ") == "a b c d"


def test_message_ids_lose_their_line_breaks_and_keep_their_order_once_each() -> None:
    assert message_ids(["<a@x\r\n.test>", "<b@y>\r\n <a@x.test>", None, 5]) == ["<a@x.test>", "<b@y>"]
    assert message_ids("bare-id@host") == ["<bare-id@host>"]
    assert message_ids(["not an id", "<" + "x" * 300 + "@h>"]) == []


def test_a_long_thread_keeps_its_root_and_latest_references() -> None:
    ids = [f"<m{n}@acme.test>" for n in range(50)]
    message = build_message(request("Re: x", references=ids), "ops@example.test")
    kept = str(message["References"]).split()
    assert len(kept) == MAX_REFERENCES and kept[0] == ids[0] and kept[-1] == ids[-1]


@given(st.text(), st.text(), st.lists(st.text(), max_size=5))
def test_any_customer_subject_or_ids_make_a_message_with_exactly_its_own_headers(
    subject: str, in_reply_to: str, references: list[str]
) -> None:
    message = build_message(request(subject, in_reply_to, references), "ops@example.test")
    parsed = message_from_bytes(message.as_bytes())
    names = {name.lower() for name in parsed}
    assert names <= {"from", "to", "subject", "date", "message-id", "in-reply-to", "references"} | {
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    assert parsed["To"] == "ada@acme.test"


@pytest.mark.parametrize(
    ("to", "taken"),
    [
        ("ada@acme.test", True),
        ("Ada Lovelace <ada@acme.test>", True),
        ('"Lovelace, Ada" <ada@acme.test>', True),
        ("<ada@acme.test>", True),
        ("write to billing@acme.test any time.", False),  # a sentence with an address in it
        ("Ada ada@acme.test", False),
        ("ada@acme.test, bob@acme.test", False),  # one recipient per proposal
        ("x y@acme.test", False),
        ("ada@", False),
        ("@acme.test", False),
        ("ada@acme.test\r\nBcc: thief@evil.test", False),
        ("Ada <ada@acme.test> and more", False),
        ("", False),
    ],
)
def test_a_recipient_is_one_address_bare_or_named(to: str, taken: bool) -> None:
    assert can_take(to) is taken
