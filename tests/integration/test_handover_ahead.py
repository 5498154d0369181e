"""An email's handover sent ahead: on Postgres the executor sends the handover's query and the SMTP
envelope (MAIL FROM, RCPT TO) goes out while it commits; DATA waits for the commit as before.

A real SMTP server on loopback (aiosmtpd) says what it accepted. Each test runs on SQLite, where
nothing goes ahead, and on Postgres, where it does, and ends with the log replayed over the rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from jobs.connectors import email
from jobs.connectors.email import EmailConnector
from jobs.execute import Executor
from store import events as ev
from store import handover, replay
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    approved_emails,
    commands,
    email_proposal,
    events_of,
    make_customer,
    record,
    row,
    settings_for,
    start_attempt,
)
from tests.standins.smtp import SmtpStandin


def _executor(store: EventStore, smtp: SmtpStandin) -> Executor:
    return Executor(
        store, {"send_email": EmailConnector(smtp.url, "ops@example.test")}, sleep=lambda _s: None
    )


def _replays(store: EventStore) -> None:
    verification = replay.verify(store.engine)
    assert verification.ok, "\n".join(d.describe() for d in verification.differences)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What happened, in order: the handover "sent" ahead and "waited" for, the "envelope" accepted."""
    happened: list[str] = []
    send, outcome, envelope = handover.send, handover.Sent.outcome, EmailConnector._open_transaction

    def sent(*args: Any) -> Any:
        found = send(*args)
        if found is not None:
            happened.append("sent")
        return found

    def waited(self: handover.Sent) -> Any:
        happened.append("waited")
        return outcome(self)

    def enveloped(self: EmailConnector, *args: Any) -> Any:
        found = envelope(self, *args)
        happened.append("envelope")
        return found

    monkeypatch.setattr(handover, "send", sent)
    monkeypatch.setattr(handover.Sent, "outcome", waited)
    monkeypatch.setattr(EmailConnector, "_open_transaction", enveloped)
    return happened


def _taken_over_before_the_handover(store: EventStore, pid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker takes the proposal over (attempt 2) as the connector checks the recipient, right
    before the handover is sent: the handover loses."""
    check = email.recipient

    def taken_over_meanwhile(*args: Any) -> Any:
        monkeypatch.setattr(email, "recipient", check)  # once: build_message checks it again
        start_attempt(store, pid, 2, lease_until=ev.utcnow())
        return check(*args)

    monkeypatch.setattr(email, "recipient", taken_over_meanwhile)


def _ahead(store: EventStore) -> bool:
    return store.engine.dialect.name == "postgresql"


def test_the_envelope_goes_out_while_the_handover_commits(
    store: EventStore, tmp_path: Path, steps: list[str]
) -> None:
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin() as smtp:
        assert _executor(store, smtp).execute(pid).status == "executed"
        assert smtp.message_ids() == [row(store, pid)["result_ref"]]
    # The last "waited" is the result's own transaction, after DATA.
    assert steps == (["sent", "envelope", "waited", "sent", "waited"] if _ahead(store) else ["envelope"])
    assert [e.type for e in events_of(store, pid)][-3:] == [
        "action.started",
        "action.handover",
        "action.executed",
    ]
    _replays(store)


def test_the_message_is_built_while_the_handover_commits(
    store: EventStore, tmp_path: Path, steps: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = email.build_message

    def built(*args: Any) -> Any:
        steps.append("built")
        return build(*args)

    monkeypatch.setattr(email, "build_message", built)
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin() as smtp:
        assert _executor(store, smtp).execute(pid).status == "executed"
        assert smtp.message_ids() == [row(store, pid)["result_ref"]]
    assert steps[:4] == (["sent", "built", "envelope", "waited"] if _ahead(store) else ["built", "envelope"])
    _replays(store)


def test_a_recipient_no_server_could_take_fails_before_any_handover(
    store: EventStore, tmp_path: Path, steps: list[str]
) -> None:
    cmds, _, _ = commands(store, settings_for(tmp_path))
    pid = record(store, email_proposal(make_customer(store), to="ada at acme"))
    assert cmds.approve(OPERATOR, pid).ok
    with SmtpStandin() as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages and smtp.connections == 0
    assert outcome.status == "failed" and "no valid recipient" in outcome.detail
    assert not events_of(store, pid, "action.handover") and "sent" not in steps
    assert not row(store, pid)["retryable"]
    _replays(store)


def test_an_envelope_deferred_after_the_handover_went_ahead_is_tried_again_and_sent_once(
    store: EventStore, tmp_path: Path, steps: list[str]
) -> None:
    """The handover committed and the server answered MAIL FROM with 451: nothing was sent. The next
    try finds its handover recorded, goes on, and sends."""
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin(defer_senders=1) as smtp:
        assert _executor(store, smtp).execute(pid).status == "executed"
        assert len(smtp.messages) == 1
    assert len(events_of(store, pid, "action.handover")) == 1
    assert row(store, pid)["attempts"] == 1
    if _ahead(store):
        assert steps[:4] == ["sent", "waited", "sent", "envelope"]  # the first try's envelope refused
    _replays(store)


def test_a_recipient_refused_after_the_handover_went_ahead_fails_and_sends_nothing(
    store: EventStore, tmp_path: Path, steps: list[str]
) -> None:
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin(refuse_recipient="550 5.1.1 no such user here") as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages
    assert outcome.status == "failed" and "refused the recipient: 550" in outcome.detail
    found = row(store, pid)
    assert found["state"] == "failed" and "no such user here" in found["error"]
    # On Postgres the handover went ahead and is in the log before the failure; nothing was sent.
    handed = [e.type for e in events_of(store, pid) if e.type in {"action.handover", "action.failed"}]
    assert handed == (["action.handover", "action.failed"] if _ahead(store) else ["action.failed"])
    _replays(store)


def test_a_handover_sent_ahead_that_loses_sends_nothing(
    store: EventStore, tmp_path: Path, steps: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt's lease ran out and another worker took the proposal over (attempt 2) before this
    attempt's handover: the envelope went out, but no DATA, and attempt 2 owns the proposal."""
    [pid] = approved_emails(store, tmp_path, 1)
    _taken_over_before_the_handover(store, pid, monkeypatch)
    with SmtpStandin() as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages
    assert outcome.status == "nothing" and "did not send" in outcome.detail
    found = row(store, pid)
    assert (found["state"], found["attempts"]) == ("executing", 2)
    assert not events_of(store, pid, "action.handover")
    assert steps[:3] == (["sent", "envelope", "waited"] if _ahead(store) else ["envelope"])
    _replays(store)


def test_an_address_smtp_cannot_carry_fails_as_not_sent(
    store: EventStore, tmp_path: Path, steps: list[str]
) -> None:
    """smtplib refuses a non-ASCII address without SMTPUTF8 before sending it, after the handover went
    ahead: nothing was sent, so the operator is told it failed and why, not that it may have been."""
    cmds, _, _ = commands(store, settings_for(tmp_path))
    pid = record(store, email_proposal(make_customer(store), to="josé@exämple.test"))
    assert cmds.approve(OPERATOR, pid).ok
    with SmtpStandin() as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages
    assert outcome.status == "failed" and "needs SMTPUTF8" in outcome.detail
    assert row(store, pid)["state"] == "failed" and not row(store, pid)["retryable"]
    _replays(store)


@pytest.mark.parametrize(
    ("owner", "name", "error"),
    [
        (email, "build_message", "a header the email library cannot write"),
        (EmailConnector, "_envelope", "a bug in the envelope"),
    ],
    ids=["message", "envelope"],
)
def test_an_unexpected_error_after_the_handover_went_ahead_fails_as_not_sent(
    store: EventStore,
    tmp_path: Path,
    steps: list[str],
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    error: str,
) -> None:
    """The message is built and the envelope goes out after the handover went ahead: an error in either
    sent nothing, so the operator is told it failed (and may retry), never that it may have been sent."""

    def broken(*_args: Any) -> None:
        raise RuntimeError(error)

    monkeypatch.setattr(owner, name, broken)
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin() as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages
    assert outcome.status == "failed" and error in outcome.detail
    found = row(store, pid)
    assert found["state"] == "failed" and found["retryable"]
    handed = [e.type for e in events_of(store, pid) if e.type in {"action.handover", "action.failed"}]
    assert handed == (["action.handover", "action.failed"] if _ahead(store) else ["action.failed"])
    _replays(store)


def _answer_lost_once(monkeypatch: pytest.MonkeyPatch, steps_in: int) -> list[int]:
    """The next handover query of `steps_in` steps commits, and then its answer is lost (a connection
    cut as the server replied): what the executor sees is a database error."""
    lost: list[int] = []
    outcome = handover.Sent.outcome

    def cut(self: handover.Sent) -> Any:
        found = outcome(self)
        if len(found.won) == steps_in and not lost:
            lost.append(1)
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return found

    monkeypatch.setattr(handover.Sent, "outcome", cut)
    return lost


def test_a_refused_recipient_stays_failed_when_the_handover_sent_ahead_cannot_be_waited_for(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing was sent, whatever the database said about the handover: failed, never "may have been
    sent"."""
    lost = _answer_lost_once(monkeypatch, 1)
    [pid] = approved_emails(store, tmp_path, 1)
    with SmtpStandin(refuse_recipient="550 5.1.1 no such user here") as smtp:
        outcome = _executor(store, smtp).execute(pid)
        assert not smtp.messages
    assert bool(lost) == _ahead(store)
    assert outcome.status == "failed" and "no such user here" in outcome.detail
    assert row(store, pid)["state"] == "failed"
    _replays(store)


def test_an_interrupt_during_the_envelope_is_not_swallowed_by_a_handover_that_lost(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [pid] = approved_emails(store, tmp_path, 1)

    def interrupted(self: EmailConnector, *_args: Any) -> None:
        raise KeyboardInterrupt

    _taken_over_before_the_handover(store, pid, monkeypatch)
    monkeypatch.setattr(EmailConnector, "_envelope", interrupted)
    with SmtpStandin() as smtp, pytest.raises(KeyboardInterrupt):
        _executor(store, smtp).execute(pid)
    assert (row(store, pid)["state"], row(store, pid)["attempts"]) == ("executing", 2)
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
