"""The mailbox watch against a real Dovecot on loopback: IDLE and polling deliver new mail, a first
connect takes only IMAP_SINCE's mail, and every message is recorded exactly once across restarts,
crashes and a UIDVALIDITY change."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.bootstrap import App
from bot.inbound import intake as inbound_intake
from bot.mailbox import watcher as watcher_module
from bot.web.health import check_health
from jobs import handlers as handler_table
from store import mailbox_positions as positions
from tests.integration.mailbox_harness import (
    Watching,
    append,
    count,
    mailbox_app,
    message_ids,
    proposals_caused_by,
    wait_for,
    watching,
)
from tests.standins.dovecot import Dovecot, message

TRIAGE = {handler_table.INBOX_TRIAGE: handler_table.HANDLERS[handler_table.INBOX_TRIAGE]}


def test_idle_delivers_a_new_message_to_a_proposal_within_two_seconds(
    dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    app = mailbox_app(make_settings, db_url, dovecot.url(user), handlers=TRIAGE)
    app.start_jobs()
    try:
        with watching(app) as run:
            run.wait_until("watching")
            # The first message warms the triage up (its classifier loads once per process).
            warm_up = message(
                subject="Warm-up", body="Hello, a question", message_id="<warm@customer.example>"
            )
            append(dovecot, user, "INBOX", warm_up)
            wait_for(
                lambda: proposals_caused_by(app, "<warm@customer.example>") >= 1, 60, "the first proposal"
            )
            start = time.monotonic()
            second = message(
                subject="Invoice question", body="Can I pay yearly?", message_id="<pay@customer.example>"
            )
            append(dovecot, user, "INBOX", second)
            wait_for(
                lambda: proposals_caused_by(app, "<pay@customer.example>") >= 1, 2.0, "a proposal within 2 s"
            )
            assert time.monotonic() - start < 2.0
            assert run.state() == "watching"
    finally:
        app.close()
    assert count(app, "message.received") == 2


def test_polling_takes_new_mail_at_its_interval_when_idle_is_off(
    dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    url = dovecot.url(user, idle="off")
    app = mailbox_app(make_settings, db_url, url, IMAP_POLL_SECONDS="0.3")
    try:
        with watching(app) as run:
            run.wait_until("polling")
            health = {check.name: check for check in check_health(app)}["mailbox"]
            assert health.ok and "INBOX: polling (every 0.3 s)" in health.detail, health
            append(dovecot, user, "INBOX", message(message_id="<poll-1@customer.example>"))
            wait_for(lambda: count(app, "message.received") == 1, 5, "the polled message")
            assert run.state() == "polling"
    finally:
        app.close()
    assert message_ids(app) == ["<poll-1@customer.example>"]


def test_a_restart_resumes_where_it_stopped_without_losing_or_repeating(
    dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    first = [message(message_id=f"<r{i}@customer.example>") for i in range(5)]
    append(dovecot, user, "INBOX", *first)
    app = mailbox_app(make_settings, db_url, dovecot.url(user))
    try:
        with watching(app) as run:
            run.wait_until("watching")
            assert count(app, "message.received") == 5
        # Mail that arrives while nothing watches is taken at the next start, and only that mail.
        later = [message(message_id=f"<r{i}@customer.example>") for i in range(5, 8)]
        append(dovecot, user, "INBOX", *later)
        with watching(app) as run:
            run.wait_until("watching")
            assert "first sync" not in " ".join(run.lines)
    finally:
        app.close()
    assert message_ids(app) == [f"<r{i}@customer.example>" for i in range(8)]


def twelve_messages_in_batches_of_five(dovecot: Dovecot, prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user whose INBOX holds <{prefix}0…11@customer.example>, watched five messages per FETCH."""
    user = dovecot.new_user()
    append(
        dovecot, user, "INBOX", *[message(message_id=f"<{prefix}{i}@customer.example>") for i in range(12)]
    )
    monkeypatch.setattr(watcher_module, "FETCH_BATCH", 5)
    return user


def killed_on_call(
    n: int, real: Callable[..., Any], why: str, counted: Callable[..., bool]
) -> Callable[..., Any]:
    """`real`, except that its nth counted call raises instead, as if the process were killed there."""
    calls = 0

    def maybe_killed(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += counted(*args)
        if counted(*args) and calls == n:
            raise RuntimeError(why)
        return real(*args, **kwargs)

    return maybe_killed


def crash_then_restart(
    app: App, monkeypatch: pytest.MonkeyPatch, where: object, name: str, crash: Callable[..., Any]
) -> dict[str, int]:
    """Watch with `where.name` replaced by `crash` until the watch dies of it (the first batch of five
    in the log), then watch again with the real one; what the second watch took."""
    real = getattr(where, name)
    monkeypatch.setattr(where, name, crash)
    crashed = Watching(app).start()
    crashed.thread.join(timeout=15)
    assert not crashed.thread.is_alive(), "a watcher that fails stops the whole watch"
    assert count(app, "message.received") == 5
    monkeypatch.setattr(where, name, real)
    with watching(app) as run:
        run.wait_until("watching")
        return dict(run.mailbox.watchers[0].taken)


def test_a_crash_before_a_batch_commits_fetches_it_again_and_loses_and_repeats_nothing(
    dovecot: Dovecot, db_url: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = twelve_messages_in_batches_of_five(dovecot, "c", monkeypatch)
    why = "killed after staging the batch, before its transaction committed (with its position)"
    crash = killed_on_call(2, positions.advance_in, why, counted=lambda *args: args[2] == "INBOX")
    app = mailbox_app(make_settings, db_url, dovecot.url(user))
    try:
        taken = crash_then_restart(app, monkeypatch, watcher_module.positions, "advance_in", crash)
    finally:
        app.close()
    assert taken == {"recorded": 7}  # the second batch rolled back, so it is fetched again
    assert message_ids(app) == [f"<c{i}@customer.example>" for i in range(12)]


def test_a_crash_after_a_batch_is_staged_moves_it_into_the_log_next_time_in_order_and_only_once(
    dovecot: Dovecot, db_url: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = twelve_messages_in_batches_of_five(dovecot, "s", monkeypatch)
    why = "killed after the batch and its position committed, before sequencing"
    crash = killed_on_call(2, inbound_intake.sequence, why, counted=lambda *_: True)
    app = mailbox_app(make_settings, db_url, dovecot.url(user))
    try:
        taken = crash_then_restart(app, monkeypatch, inbound_intake, "sequence", crash)
    finally:
        app.close()
    assert taken == {"recorded": 2}  # the staged batch is not fetched again
    assert message_ids(app) == [f"<s{i}@customer.example>" for i in range(12)]


def test_a_uidvalidity_change_rescans_without_duplicating(
    dovecot: Dovecot, db_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    client = dovecot.client(user)
    client.create_folder("Customers")
    client.logout()
    old = [message(message_id=f"<u{i}@customer.example>") for i in range(3)]
    append(dovecot, user, "Customers", *old)
    app = mailbox_app(make_settings, db_url, dovecot.url(user, folder="Customers"))
    try:
        with watching(app) as run:
            run.wait_until("watching", folder="Customers")
        client = dovecot.client(user)
        before = client.select_folder("Customers")[b"UIDVALIDITY"]
        client.close_folder()
        client.delete_folder("Customers")  # the server's folder is rebuilt: every UID is new
        client.create_folder("Customers")
        client.logout()
        append(dovecot, user, "Customers", *old, message(message_id="<u3@customer.example>"))
        with watching(app) as run:
            run.wait_until("watching", folder="Customers")
            assert any("UIDVALIDITY changed" in line for line in run.lines), run.lines
            assert run.mailbox.watchers[0].taken == {"duplicate": 3, "recorded": 1}
        client = dovecot.client(user)
        assert client.select_folder("Customers")[b"UIDVALIDITY"] != before
        client.logout()
    finally:
        app.close()
    assert message_ids(app) == [f"<u{i}@customer.example>" for i in range(4)]


def test_a_first_connect_takes_only_mail_since_imap_since_with_progress_lines(
    dovecot: Dovecot, sqlite_url: str, make_settings: Any
) -> None:
    user = dovecot.new_user()
    old = datetime.now(UTC) - timedelta(days=30)
    append(dovecot, user, "INBOX", *[message(message_id=f"<old{i}@x.example>") for i in range(50)], when=old)
    recent = [message(message_id=f"<m{i}@customer.example>", subject=f"Order {i}") for i in range(1000)]
    append(dovecot, user, "INBOX", *recent)
    app = mailbox_app(make_settings, sqlite_url, dovecot.url(user), IMAP_SINCE="14")
    try:
        with watching(app) as run:
            run.wait_until("watching", timeout=60)
            lines = list(run.lines)
    finally:
        app.close()
    ids = message_ids(app)
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert not any(one.startswith("<old") for one in ids)
    assert any("first sync: 1000 message(s) since" in line for line in lines), lines
    assert any("1000/1000 taken" in line for line in lines), lines
