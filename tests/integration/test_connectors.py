"""Each connector against a real server on loopback: SMTP (aiosmtpd, STARTTLS, AUTH) and an HTTP receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.connectors.email import EmailConnector, SmtpConfig, SmtpUrlError
from jobs.connectors.webhook import WebhookConnector
from jobs.execute import Executor, default_connectors
from jobs.notify import Notifier
from store import events as ev
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    RecordingSurface,
    commands,
    email_proposal,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)
from tests.standins.smtp import SmtpStandin, free_port, make_certificate
from tests.standins.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _executor(store: EventStore, settings: Any, notifier: Any = None, **overrides: Any) -> Executor:
    connectors = default_connectors(store, settings, lambda name: None)
    connectors.update(overrides)
    return Executor(store, connectors, notifier=notifier, backoff_seconds=0.01, transient_tries=3)


def _approve(store: EventStore, settings: Any, payload: dict[str, Any]) -> str:
    cmds, _, _ = commands(store, settings)
    pid = record(store, payload)
    assert cmds.approve(OPERATOR, pid).ok
    return pid


def test_email_over_starttls_with_auth_is_threaded_onto_the_customers_last_message(
    store: EventStore, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    with SmtpStandin(cert=certificate, auth=("crm", "s3cret")) as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url, MAIL_FROM="Ops <ops@example.test>")
        customer = make_customer(store)
        inbound = ev.MessageReceived(
            customer=ev.CustomerRef(email="ada@acme.test"),
            text="Can you help?",
            data={"message_id": "<m2@acme.test>", "references": ["<m1@acme.test>"], "subject": "help"},
        )
        store.record_signal("message.received", inbound, "mail:m2", source="email")
        pid = _approve(store, settings, email_proposal(customer))
        assert _executor(store, settings).execute(pid).status == "executed"
        [message] = smtp.messages
        assert message["To"] == "ada@acme.test" and message["Subject"] == "Re: hello"
        assert message["In-Reply-To"] == "<m2@acme.test>"
        assert message["References"] == "<m1@acme.test> <m2@acme.test>"
        assert row(store, pid)["result_ref"] == message["Message-ID"]


def test_a_backlog_of_emails_threads_each_onto_its_own_customers_last_message(
    store: EventStore, tmp_path: Path
) -> None:
    """The batch reads every customer's thread at once (the first proposal's with the lock that
    starts it, the others' after): each email still gets its own customer's (a merged duplicate's
    mail counts; a chat message without a Message-ID does not)."""

    def inbound(email: str, key: str, **data: Any) -> None:
        signal = ev.MessageReceived(customer=ev.CustomerRef(email=email), text="hi", data=data)
        store.record_signal("message.received", signal, key, source="email")

    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url, UNDO_WINDOW_SECONDS=0)
        ann, cy = make_customer(store, "Ann", "ann@acme.test"), make_customer(store, "Cy", "cy@gamma.test")
        dan, eve = make_customer(store, "Dan", "dan@gamma.test"), make_customer(store, "Eve", "eve@eps.test")
        inbound("ann@acme.test", "mail:a1", message_id="<a1@acme.test>", subject="price")
        inbound("ann@acme.test", "chat:a2", subject="a chat message carries no Message-ID")
        inbound("cy@gamma.test", "mail:c1", message_id="<c1@gamma.test>", subject="trial")
        inbound("dan@gamma.test", "mail:d1", message_id="<d1@gamma.test>", references=["<c1@gamma.test>"])
        merge = _approve(store, settings, proposal(cy, "merge_customers", {"into": cy, "merged": dan}))
        assert _executor(store, settings).execute(merge).status == "executed"
        pids = {
            who: _approve(store, settings, email_proposal(who, to=f"{who}@x.test")) for who in (ann, cy, eve)
        }
        assert _executor(store, settings).execute(pids[cy]).status == "executed"  # the batch takes all three
        sent = {message["Message-ID"]: message for message in smtp.messages}
        assert len(sent) == 3
        replies = {who: sent[row(store, pid)["result_ref"]] for who, pid in pids.items()}
        assert replies[ann]["In-Reply-To"] == "<a1@acme.test>"
        assert replies[cy]["In-Reply-To"] == "<d1@gamma.test>"  # Dan's mail: he is part of Cy now
        assert replies[cy]["References"] == "<c1@gamma.test> <d1@gamma.test>"
        assert replies[eve]["In-Reply-To"] is None and replies[eve]["References"] is None


def test_a_customer_whose_subject_and_message_ids_carry_line_breaks_can_be_replied_to(
    store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        customer = make_customer(store)
        inbound = ev.MessageReceived(
            customer=ev.CustomerRef(email="ada@acme.test"),
            text="Can you help?",
            data={
                "message_id": "<m2@acme\r\n.test>\r\nBcc: thief@evil.test",
                "references": ["<m1@acme.test>\r\nX-Injected: yes"],
                "subject": "help\r\nBcc: thief@evil.test",
            },
        )
        store.record_signal("message.received", inbound, "mail:crlf", source="email")
        payload = email_proposal(customer)
        payload["draft"]["subject"] = payload["params"]["subject"] = "Re: help\r\nBcc: thief@evil.test"
        pid = _approve(store, settings, payload)
        assert _executor(store, settings).execute(pid).status == "executed"
        [message] = smtp.messages
        assert message["Subject"] == "Re: help Bcc: thief@evil.test"
        assert message["In-Reply-To"] == "<m2@acme.test>"
        assert message["References"] == "<m1@acme.test> <m2@acme.test>"
        assert message["Bcc"] is None and message["X-Injected"] is None


def test_smtp_refusing_auth_fails_permanently_with_a_retry_button(
    store: EventStore, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    with SmtpStandin(cert=certificate, auth=("crm", "right")) as smtp:
        bad_url = smtp.url.replace("crm:right@", "crm:wrong@")
        settings = settings_for(tmp_path, SMTP_URL=bad_url)
        surface = RecordingSurface()
        notifier = Notifier(store, [surface])
        pid = _approve(store, settings, email_proposal(make_customer(store)))
        notifier.post(pid)
        outcome = _executor(store, settings, notifier).execute(pid)
        assert outcome.status == "failed" and "refused the login" in outcome.detail
        assert smtp.messages == []
        failed = row(store, pid)
        assert failed["state"] == "failed" and failed["retryable"] is True and failed["attempts"] == 1
        assert [b.action for b in surface.last_view().buttons] == ["retry", "why"]


def test_smtp_down_is_retried_then_reported_and_retry_sends_once_it_is_up(
    store: EventStore, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings_for(tmp_path, SMTP_URL=f"smtp://127.0.0.1:{port}?timeout=2")
    cmds, scheduled, _ = commands(store, settings)
    pid = record(store, email_proposal(make_customer(store)))
    assert cmds.approve(OPERATOR, pid).ok
    outcome = _executor(store, settings).execute(pid)
    assert outcome.status == "failed" and "cannot reach the SMTP server" in outcome.detail
    assert "gave up after 3 tries" in outcome.detail
    with SmtpStandin() as smtp:
        smtp_settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        assert cmds.retry(OPERATOR, pid).ok and scheduled == [pid, pid]
        assert _executor(store, smtp_settings).execute(pid).status == "executed"
        assert len(smtp.messages) == 1
    assert cmds.retry(OPERATOR, pid).code == "conflict"  # nothing to retry any more


def test_a_slow_smtp_server_within_the_timeout_gets_the_email(store: EventStore, tmp_path: Path) -> None:
    with SmtpStandin(data_delay=0.5) as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url)
        pid = _approve(store, settings, email_proposal(make_customer(store)))
        assert _executor(store, settings).execute(pid).status == "executed"
        assert len(smtp.messages) == 1


def test_an_smtp_server_too_slow_to_answer_data_leaves_it_uncertain_not_resent(
    store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin(data_delay=2.0) as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url.replace("timeout=5", "timeout=0.5"))
        pid = _approve(store, settings, email_proposal(make_customer(store)))
        outcome = _executor(store, settings).execute(pid)
        assert outcome.status == "uncertain" and "while the message was being sent" in outcome.detail
        assert row(store, pid)["state"] == "uncertain"
        assert len(smtp.messages) <= 1  # the server may still accept it; we never sent it twice


def test_bad_recipients_and_urls_fail_without_touching_the_network(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SMTP_URL=f"smtp://127.0.0.1:{free_port()}")
    customer = make_customer(store)
    pid = _approve(store, settings, email_proposal(customer, to="ada@acme.test\r\nBcc: everyone@x.test"))
    outcome = _executor(store, settings).execute(pid)
    assert outcome.status == "failed" and "no valid recipient" in outcome.detail
    assert row(store, pid)["retryable"] is False
    hook = _approve(store, settings, proposal(customer, "post_webhook", {"url": "file:///etc/passwd"}))
    assert _executor(store, settings).execute(hook).status == "failed"
    with pytest.raises(SmtpUrlError):
        SmtpConfig.from_url("http://mail.example.test")
    assert EmailConnector(None, "a@b.c").config is None


def test_webhook_500_then_200_is_retried_with_the_same_idempotency_key(
    store: EventStore, tmp_path: Path
) -> None:
    with WebhookReceiver(statuses=[500, 200]) as receiver:
        settings = settings_for(tmp_path)
        pid = _approve(
            store,
            settings,
            proposal(make_customer(store), "post_webhook", {"url": receiver.url, "json": {"x": "ü"}}),
        )
        assert _executor(store, settings).execute(pid).status == "executed"
        assert [r["key"] for r in receiver.requests] == [f"crm-{pid}"] * 2
        assert receiver.requests[0]["body"] == {"x": "ü"} and receiver.effects == [f"crm-{pid}"]
        assert row(store, pid)["result_ref"] == "HTTP 200"


def test_webhook_400_is_not_retried(store: EventStore, tmp_path: Path) -> None:
    with WebhookReceiver(statuses=[400]) as receiver:
        settings = settings_for(tmp_path)
        pid = _approve(store, settings, proposal(make_customer(store), "post_webhook", {"url": receiver.url}))
        outcome = _executor(store, settings).execute(pid)
        assert outcome.status == "failed" and "answered 400" in outcome.detail
        assert len(receiver.requests) == 1


def test_a_hanging_webhook_times_out_and_is_reported(store: EventStore, tmp_path: Path) -> None:
    with WebhookReceiver(hang=1.5) as receiver:
        settings = settings_for(tmp_path)
        pid = _approve(store, settings, proposal(make_customer(store), "post_webhook", {"url": receiver.url}))
        quick = WebhookConnector(connect_timeout=0.5, read_timeout=0.3)
        outcome = _executor(store, settings, post_webhook=quick).execute(pid)
        assert outcome.status == "failed" and "ReadTimeout" in outcome.detail
        assert len(receiver.requests) == 3  # every try carried the same key, so the receiver acts once
        assert {r["key"] for r in receiver.requests} == {f"crm-{pid}"}
        assert row(store, pid)["retryable"] is True
