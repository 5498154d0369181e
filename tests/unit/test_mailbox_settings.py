"""IMAP_URL, IMAP_SINCE and friends: the forms accepted, and a bad one named at start with the fix; the
operator's own sent mail read by the one email parser as a `message.sent` about its recipient."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bot.inbound.email import parse_email
from bot.inbound.errors import InboundRefused
from store.mailbox_url import MailboxUrlError, parse_mailbox_url, since_date
from store.settings import SettingsError, load_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "email"


def test_an_imaps_url_names_the_account_folder_and_defaults() -> None:
    config = parse_mailbox_url("imaps://me%40example.com:p%40ss@imap.example.com/Customers%2FEU")
    assert (config.host, config.port, config.tls, config.starttls) == ("imap.example.com", 993, True, False)
    assert (config.username, config.password, config.folder) == ("me@example.com", "p@ss", "Customers/EU")
    assert config.idle is True
    assert config.where == "me@example.com@imap.example.com:993/Customers/EU"
    assert "p@ss" not in config.where and "p@ss" not in config.account


def test_an_imap_url_requires_starttls_except_on_loopback() -> None:
    plain = parse_mailbox_url("imap://me:pw@mail.example.com")
    assert (plain.port, plain.tls, plain.starttls, plain.folder) == (143, False, True, "INBOX")
    local = parse_mailbox_url("imap://me:pw@127.0.0.1:1143/INBOX?starttls=off&idle=off&timeout=5")
    assert (local.starttls, local.idle, local.timeout) == (False, False, 5.0)
    with pytest.raises(MailboxUrlError, match="password in clear"):
        parse_mailbox_url("imap://me:pw@mail.example.com/INBOX?starttls=off")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://me:pw@mail.example.com/INBOX", "must look like imaps://"),
        ("imaps:///INBOX", "must look like imaps://"),
        ("imaps://mail.example.com/INBOX", "needs the user and password"),
        ("imaps://me@mail.example.com/INBOX", "needs the user and password"),
        ("imaps://me:pw@mail.example.com:http/INBOX", "port that is not a number"),
        ("imaps://me:pw@mail.example.com/INBOX?idle=maybe", "idle= must be on or off"),
        ("imaps://me:pw@mail.example.com/INBOX?timeout=soon", "timeout= must be a number"),
    ],
)
def test_a_malformed_imap_url_is_refused_naming_the_setting(url: str, reason: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, IMAP_URL=url)
    assert "IMAP_URL" in str(refused.value) and reason in str(refused.value)
    assert "pw" not in str(refused.value).replace("password", "")


def test_imap_since_is_days_back_or_a_date() -> None:
    today = date(2026, 3, 20)
    assert since_date("14", today) == date(2026, 3, 6)
    assert since_date("2026-01-31", today) == date(2026, 1, 31)
    assert load_settings(_env_file=None).imap_since == "14"
    for bad in ("two weeks", "-3", "2026-02-30"):
        with pytest.raises(SettingsError, match="IMAP_SINCE: must be a number of days"):
            load_settings(_env_file=None, IMAP_SINCE=bad)
    with pytest.raises(SettingsError, match="IMAP_POLL_SECONDS"):
        load_settings(_env_file=None, IMAP_POLL_SECONDS="0")


def test_blank_imap_settings_are_unset() -> None:
    settings = load_settings(_env_file=None, IMAP_URL="  ", IMAP_SENT=" ")
    assert settings.imap_url is None and settings.imap_sent is None


def test_the_operators_sent_reply_is_a_message_sent_about_its_recipient() -> None:
    raw = (FIXTURES / "thread_2_reply.eml").read_bytes()
    received = parse_email(raw)
    sent = parse_email(raw, sent=True)
    assert received.type == "message.received" and sent.type == "message.sent"
    assert sent.signal.customer.email == received.signal.data["to"][0]
    assert sent.signal.data["in_reply_to"] == received.signal.data["in_reply_to"]
    assert sent.key.startswith("email-sent:") and received.key.startswith("email:")
    assert sent.key.removeprefix("email-sent:") == received.key.removeprefix("email:")


def test_a_sent_message_without_a_recipient_is_refused_naming_the_field() -> None:
    raw = (
        b"From: op@example.com\r\nSubject: draft\r\nMessage-ID: <d1@example.com>\r\n\r\nnobody to send to\r\n"
    )
    with pytest.raises(InboundRefused) as refused:
        parse_email(raw, sent=True)
    assert "no recipient" in refused.value.message
