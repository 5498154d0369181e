"""The email connector keeps its SMTP session open between sends, against a real server (aiosmtpd)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bot.bootstrap import bootstrap
from jobs.connectors.base import ActionRequest, OutcomeUnknown
from jobs.connectors.email import EmailConnector
from tests.conftest import SettingsFactory
from tests.standins.smtp import SmtpStandin, make_certificate


def request(n: int) -> ActionRequest:
    return ActionRequest(
        proposal_id=f"prp_{n}",
        kind="send_email",
        agent="test",
        customer_id="cus_1",
        params={"to": "ada@acme.test"},
        draft={"subject": f"Hello {n}", "body": "Hi Ada"},
        idempotency_key=f"key-{n}",
        attempt=1,
    )


class Handovers:
    """The connector's handover callback, counting its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_several_emails_share_one_session_even_over_starttls_with_auth(tmp_path: Path) -> None:
    with SmtpStandin(cert=make_certificate(tmp_path), auth=("crm", "s3cret")) as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        for n in range(5):
            connector.run(request(n), Handovers())
        connector.close()
        assert len(smtp.messages) == 5
        assert smtp.connections == 1


def test_a_session_the_server_closed_while_idle_is_replaced_without_a_failure() -> None:
    with SmtpStandin(idle_timeout=0.2) as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        handovers = Handovers()
        connector.run(request(1), handovers)
        time.sleep(0.6)  # the server hangs up on the quiet session
        connector.run(request(2), handovers)
        connector.close()
        assert [m["Subject"] for m in smtp.messages] == ["Hello 1", "Hello 2"]
        assert smtp.connections == 2
        assert handovers.count == 2


def test_a_server_restarted_between_sends_gets_the_next_email() -> None:
    with SmtpStandin() as before:
        connector = EmailConnector(before.url, "ops@example.test")
        connector.run(request(1), Handovers())
    with SmtpStandin(port=before.port) as after:
        connector.run(request(2), Handovers())
        connector.close()
        assert len(before.messages) == 1
        assert [m["Subject"] for m in after.messages] == ["Hello 2"]


def test_a_connection_cut_during_data_on_a_kept_session_leaves_the_outcome_unknown() -> None:
    with SmtpStandin() as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        connector.run(request(1), Handovers())
        smtp.handler.drop_on_data = True
        handovers = Handovers()
        with pytest.raises(OutcomeUnknown):
            connector.run(request(2), handovers)
        assert handovers.count == 1
        assert smtp.connections == 1  # not sent again over a new session
        smtp.handler.drop_on_data = False
        connector.run(request(3), Handovers())  # the cut session is not kept
        connector.close()
        assert [m["Subject"] for m in smtp.messages] == ["Hello 1", "Hello 3"]
        assert smtp.connections == 2


def test_threads_sending_at_once_each_get_a_session_of_their_own() -> None:
    threads = 4
    together = threading.Barrier(threads, timeout=10)
    with SmtpStandin() as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        errors: list[BaseException] = []

        def send(first: int) -> None:
            try:
                # All threads hold a session at the handover at once, so each has its own.
                connector.run(request(first), together.wait)
                for n in range(first + 1, first + 5):
                    connector.run(request(n), Handovers())
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=send, args=(10 * t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        connector.close()
        assert errors == []
        assert len(set(smtp.message_ids())) == 5 * threads
        assert smtp.connections == threads


def test_a_session_idle_past_the_limit_is_closed_not_reused() -> None:
    with SmtpStandin() as smtp:
        connector = EmailConnector(smtp.url, "ops@example.test")
        connector.sessions.idle_seconds = 0.2
        connector.run(request(1), Handovers())
        time.sleep(0.5)
        assert smtp.handler.quits == 1  # closed in the background, before the next send
        connector.run(request(2), Handovers())
        connector.close()
        assert len(smtp.messages) == 2
        assert smtp.connections == 2


def test_closing_the_app_ends_its_kept_sessions_with_quit(make_settings: SettingsFactory) -> None:
    with SmtpStandin() as smtp:
        app = bootstrap(make_settings(SMTP_URL=smtp.url, MAIL_FROM="ops@example.test"), handlers={})
        try:
            app.executor.connectors["send_email"].run(request(1), Handovers())
            assert smtp.handler.quits == 0
        finally:
            app.close()
        assert smtp.handler.quits == 1
