"""The mailbox watch when things go wrong, against a real Dovecot: a refused login stops with one line
naming IMAP_URL (also from `crm mail`), a server that goes away is reconnected to, and messages the
parser cannot read (the CPython email test corpus) are reported, never silently dropped, while the
watch carries on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.bootstrap import App
from bot.web.health import check_health
from jobs.connectors.imap import MailboxRefused
from tests.integration.mailbox_harness import (
    Watching,
    append,
    count,
    mailbox_app,
    message_ids,
    wait_for,
    watching,
)
from tests.standins.dovecot import PASSWORD, Dovecot, message, running_dovecot

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "email" / "cpython"


class NoticeBoard:
    """A surface that only keeps the notices it is given (what the operator would read)."""

    name = "notices"

    def __init__(self) -> None:
        self.notices: list[list[str]] = []

    def post_notice(self, lines: list[str]) -> None:
        self.notices.append(lines)

    def post_proposal(self, view: Any) -> None:
        return None

    def update_proposal(self, ref: Any, view: Any) -> None:
        return None

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        raise AssertionError("no replies here")


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    """A Dovecot of the test's own, which it may stop and start."""
    with running_dovecot() as server:
        yield server


def test_a_wrong_password_stops_the_watch_with_one_line_naming_imap_url(
    dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    url = dovecot.url(user).replace(f":{PASSWORD}@", ":wrong@")
    app = mailbox_app(make_settings, db_url, url)
    try:
        run = Watching(app).start()
        run.thread.join(timeout=15)
        assert not run.thread.is_alive()
        assert isinstance(run.error, MailboxRefused)
        line = str(run.error)
        assert line.startswith("IMAP_URL: 127.0.0.1 refused the login for " + user)
        assert "[AUTHENTICATIONFAILED]" in line and "\n" not in line
        assert PASSWORD not in line and "wrong" not in line
        assert run.state() == "refused"
        health = {check.name: check for check in check_health(app)}
        assert health["mailbox"].ok is False and "INBOX: refused" in health["mailbox"].detail
    finally:
        app.close()
    assert count(app, "message.received") == 0


def _crm_mail(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    values = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IMAP_", "DATABASE_", "REDIS_", "SLACK_", "TELEGRAM_", "OPENAI_"))
    }
    values.update(CRM_DATA_DIR=str(tmp_path / "data"), **env)
    crm = Path(sys.executable).parent / "crm"
    return subprocess.run(
        [str(crm), "mail", *args], env=values, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_a_watch_ended_by_an_unexpected_error_is_said_and_fails_health_never_goes_deaf(
    dovecot: Dovecot, db_url: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.inbound.errors import SurfaceFailed
    from bot.mailbox.watcher import FolderWatcher

    def bug(self: FolderWatcher) -> None:  # fault injection: a bug inside the watch loop
        raise RuntimeError("a bug in the watch")

    monkeypatch.setattr(FolderWatcher, "run", bug)
    app = mailbox_app(make_settings, db_url, dovecot.url(dovecot.new_user()))
    try:
        run = Watching(app).start()
        run.thread.join(timeout=15)
        assert not run.thread.is_alive(), "the watch ends rather than carrying on deaf"
        assert isinstance(run.error, SurfaceFailed) and "a bug in the watch" in str(run.error)
        assert run.state() == "crashed"
        health = {check.name: check for check in check_health(app)}
        assert health["mailbox"].ok is False and "INBOX: crashed" in health["mailbox"].detail
    finally:
        app.close()


def test_crm_mail_exits_2_with_one_line_for_a_refused_login_or_no_imap_url(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    url = dovecot.url(dovecot.new_user()).replace(f":{PASSWORD}@", ":wrong@")
    refused = _crm_mail(tmp_path, IMAP_URL=url)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "IMAP_URL" in errors[0] and "AUTHENTICATIONFAILED" in errors[0], (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    unset = _crm_mail(tmp_path)
    assert unset.returncode == 2
    assert "IMAP_URL is not set" in unset.stderr and "Traceback" not in unset.stderr
    stays_stopped = _crm_mail(tmp_path, "--if-configured")  # the compose service: no restart loop
    assert stays_stopped.returncode == 0 and "IMAP_URL is not set" in stays_stopped.stdout
    malformed = _crm_mail(tmp_path, IMAP_URL="imap://me:pw@mail.example.com/INBOX?starttls=off")
    assert malformed.returncode == 2
    assert "IMAP_URL" in malformed.stderr and "clear" in malformed.stderr, malformed.stderr


def test_a_server_that_goes_away_and_comes_back_is_reconnected_to(
    own_dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = own_dovecot.new_user()
    app = mailbox_app(make_settings, db_url, own_dovecot.url(user))
    try:
        with watching(app) as run:
            run.wait_until("watching")
            own_dovecot.stop()
            run.wait_until("reconnecting")
            own_dovecot.start()
            run.wait_until("watching", timeout=20)
            append(own_dovecot, user, "INBOX", message(message_id="<back@customer.example>"))
            wait_for(lambda: count(app, "message.received") == 1, 10, "the message after the restart")
            assert any("reconnecting in" in line for line in run.lines), run.lines
    finally:
        app.close()
    assert message_ids(app) == ["<back@customer.example>"]


def test_odd_and_broken_messages_are_recorded_or_reported_and_the_watch_carries_on(
    dovecot: Dovecot, sqlite_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    corpus = sorted(CORPUS.glob("msg_*.txt"))
    assert len(corpus) >= 40
    append(dovecot, user, "INBOX", *[path.read_bytes() for path in corpus])
    app: App = mailbox_app(make_settings, sqlite_url, dovecot.url(user))
    board = NoticeBoard()
    app.notifier.add(board)  # type: ignore[arg-type]
    try:
        with watching(app) as run:
            run.wait_until("watching")
            append(dovecot, user, "INBOX", message(message_id="<after-the-odd-ones@customer.example>"))
            wait_for(lambda: "<after-the-odd-ones@customer.example>" in message_ids(app), 10, "the good one")
            # The watcher counts a message once its record returns, a moment after the log shows it.
            watcher = run.mailbox.watchers[0]
            wait_for(lambda: sum(dict(watcher.taken).values()) == len(corpus) + 1, 10, "all counted")
            taken = dict(watcher.taken)
    finally:
        app.close()
    assert sum(taken.values()) == len(corpus) + 1, taken
    assert taken["recorded"] >= 1 and taken.get("unreadable", 0) >= 1, taken
    assert len(board.notices) == taken["unreadable"]
    assert all("could not be read and was not recorded" in notice[0] for notice in board.notices)
    assert all("UID" in notice[0] for notice in board.notices)
