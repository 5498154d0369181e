"""The executor killed (SIGKILL) between its checkpoint and the recorded result never acts twice.

A real SMTP server on loopback (aiosmtpd) counts what it accepted. Where the retry can prove nothing
was sent (no handover checkpoint) it sends; where the outcome is unknown the proposal says "may have
been sent" and the operator's choice is honoured. The webhook, whose receiver honours
Idempotency-Key, is simply retried.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs.connectors.base import ActionRequest, ActionResult, Handover, TransientError
from jobs.connectors.email import message_id_for
from jobs.execute import Executor, default_connectors
from jobs.notify import Notifier
from store import events as ev
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    RecordingSurface,
    commands,
    email_proposal,
    events_of,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)
from tests.standins.smtp import SmtpStandin
from tests.standins.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]


def _spawn(db_url: str, target: str, pid: str, pause: str, marker: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.executor_child", db_url, target, pid, pause, str(marker)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(condition: Callable[[], bool], child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"child exited early: {child.communicate()}")
        assert time.monotonic() < deadline, "timed out waiting for the child"
        time.sleep(0.05)


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(10)


def _later_executor(store: EventStore, settings: object, notifier: Notifier | None = None) -> Executor:
    """A second worker, after the dead one's lease has run out."""
    clock = lambda: ev.utcnow() + timedelta(seconds=301)  # noqa: E731
    connectors = default_connectors(store, settings, lambda name: None)
    return Executor(store, connectors, clock=clock, notifier=notifier, transient_tries=1)


def _approved_email(store: EventStore, tmp_path: Path, smtp: SmtpStandin) -> tuple[str, object, object]:
    settings = settings_for(tmp_path, SMTP_URL=smtp.url, MAIL_FROM="ops@example.test")
    surface = RecordingSurface()
    notifier = Notifier(store, [surface])
    cmds, _, _ = commands(store, settings, notifier=notifier)
    pid = record(store, email_proposal(make_customer(store)))
    notifier.post(pid)
    assert cmds.approve(OPERATOR, pid).ok
    return pid, settings, (cmds, notifier, surface)


def test_killed_before_the_smtp_transaction_the_retry_sends_once(
    db_url: str, store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        pid, settings, _ = _approved_email(store, tmp_path, smtp)
        marker = tmp_path / "paused"
        child = _spawn(db_url, smtp.url, pid, "before", marker)
        _wait_for(marker.exists, child)
        _kill(child)
        assert row(store, pid)["state"] == "executing" and smtp.messages == []
        outcome = _later_executor(store, settings).execute(pid)
        assert outcome.status == "executed", outcome
        assert len(smtp.messages) == 1
        attempts = [e.payload.attempt for e in events_of(store, pid, "action.started")]  # type: ignore[attr-defined]
        assert attempts == [1, 2]
        assert _later_executor(store, settings).execute(pid).status == "nothing"
        assert len(smtp.messages) == 1


def test_killed_in_the_middle_of_the_transaction_the_operator_decides(
    db_url: str, store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin(pause_on_data=True) as smtp:
        pid, settings, (cmds, notifier, surface) = _approved_email(store, tmp_path, smtp)
        child = _spawn(db_url, smtp.url, pid, "none", tmp_path / "unused")
        _wait_for(smtp.handler.data_started.is_set, child)
        _kill(child)
        deadline = time.monotonic() + 10
        while smtp.handler.dropped != 1:  # the server saw the client vanish before it answered
            assert time.monotonic() < deadline
            time.sleep(0.05)
        smtp.handler.release.set()
        outcome = _later_executor(store, settings, notifier).execute(pid)
        assert outcome.status == "uncertain"
        assert row(store, pid)["state"] == "uncertain" and smtp.messages == []
        view = surface.last_view()
        assert "MAY HAVE BEEN SENT" in (view.status or "")
        assert [b.action for b in view.buttons] == ["resend", "keep"]
        assert any("may have been sent" in " ".join(n) for n in surface.notices)
        # Nothing happens on its own: another worker leaves it alone.
        assert _later_executor(store, settings).execute(pid).status == "nothing"
        # The operator resends; the server (which never answered 250) now has it exactly once.
        assert cmds.resend(OPERATOR, pid, True).ok
        smtp.handler.pause_on_data = False
        assert _later_executor(store, settings).execute(pid).status == "executed"
        assert len(smtp.messages) == 1
        assert row(store, pid)["state"] == "executed"


def test_killed_after_the_servers_250_the_email_is_never_sent_twice(
    db_url: str, store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        pid, settings, (cmds, notifier, surface) = _approved_email(store, tmp_path, smtp)
        marker = tmp_path / "paused"
        child = _spawn(db_url, smtp.url, pid, "after", marker)
        _wait_for(marker.exists, child)
        _kill(child)
        assert len(smtp.messages) == 1
        for _ in range(3):  # however often a worker looks at it again
            _later_executor(store, settings, notifier).execute(pid)
        assert len(smtp.messages) == 1
        assert row(store, pid)["state"] == "uncertain"
        assert "MAY HAVE BEEN SENT" in (surface.last_view().status or "")
        reply = cmds.press(OPERATOR, f"keep:{pid}")
        assert reply.ok and row(store, pid)["state"] == "closed"
        assert "not resent" in (surface.last_view().status or "")
        assert _later_executor(store, settings).execute(pid).status == "nothing"
        assert len(smtp.messages) == 1
        assert smtp.messages[0]["Message-ID"] == message_id_for(f"crm-{pid}", "ops@example.test")


def test_a_webhook_killed_after_delivery_is_simply_retried(
    db_url: str, store: EventStore, tmp_path: Path
) -> None:
    with WebhookReceiver() as receiver:
        settings = settings_for(tmp_path)
        cmds, _, _ = commands(store, settings)
        payload = proposal(make_customer(store), "post_webhook", {"url": receiver.url, "json": {"a": 1}})
        pid = record(store, payload)
        assert cmds.approve(OPERATOR, pid).ok
        marker = tmp_path / "paused"
        child = _spawn(db_url, "smtp://127.0.0.1:1", pid, "after", marker)
        _wait_for(marker.exists, child)
        _kill(child)
        assert _later_executor(store, settings).execute(pid).status == "executed"
        keys = [r["key"] for r in receiver.requests]
        assert len(keys) == 2 and keys[0] == keys[1] == f"crm-{pid}"
        assert receiver.effects == [f"crm-{pid}"]


class _Stalled:
    """The real SMTP connector behind a gate: the worker stalls (not killed) after its start, before
    the handover, as a process paused past its lease would."""

    name = "smtp"
    dedupes = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        self.waiting.set()
        assert self.gate.wait(30)
        return self.inner.run(request, handover)  # type: ignore[no-any-return]


def test_a_stalled_worker_taken_over_past_its_lease_does_not_send_a_second_copy(
    store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        pid, settings, _ = _approved_email(store, tmp_path, smtp)
        connectors = default_connectors(store, settings, lambda name: None)
        stalled = _Stalled(connectors["send_email"])
        first = Executor(store, {**connectors, "send_email": stalled}, transient_tries=1)
        outcomes: list[Any] = []
        worker = threading.Thread(target=lambda: outcomes.append(first.execute(pid)))
        worker.start()
        assert stalled.waiting.wait(30)
        assert _later_executor(store, settings).execute(pid).status == "executed"  # attempt 2 sends
        stalled.gate.set()
        worker.join(30)

        assert outcomes[0].status == "nothing" and "did not send" in outcomes[0].detail
        assert len(smtp.messages) == 1
        handovers = [e.payload.attempt for e in events_of(store, pid, "action.handover")]  # type: ignore[attr-defined]
        assert handovers == [2]
        assert row(store, pid)["state"] == "executed" and row(store, pid)["attempts"] == 2


def test_a_retry_after_a_transient_failure_past_the_handover_goes_on(
    store: EventStore, tmp_path: Path
) -> None:
    """The handover is a compare-and-set on the attempt, so the same attempt's second try finds its own
    handover recorded and is let through."""

    class FlakyAfterHandover:
        name = "flaky"
        dedupes = False
        tries = 0

        def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
            handover()
            self.tries += 1
            if self.tries == 1:
                raise TransientError("the server refused the data with 451; nothing was sent")
            return ActionResult(reference="sent-on-try-2")

    with SmtpStandin() as smtp:
        pid, _, _ = _approved_email(store, tmp_path, smtp)
        connector = FlakyAfterHandover()
        executor = Executor(store, {"send_email": connector}, sleep=lambda _s: None)
        outcome = executor.execute(pid)
        assert outcome.status == "executed" and outcome.detail == "sent-on-try-2"
        assert connector.tries == 2
        assert [e.payload.attempt for e in events_of(store, pid, "action.handover")] == [1]  # type: ignore[attr-defined]


def test_transient_failures_are_tried_again_after_growing_waits_then_reported_as_retryable(
    store: EventStore, tmp_path: Path
) -> None:
    """Each try hands over anew (a retry of the same attempt finds its handover recorded and goes on);
    the waits between tries double from backoff_seconds up to BACKOFF_MAX_SECONDS; after the last try
    the action fails with a Retry button, saying how often it was tried."""

    class AlwaysBusy:
        name = "busy"
        dedupes = False
        tries = 0

        def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
            self.tries += 1
            handover()
            raise TransientError("421 try again later")

    with SmtpStandin() as smtp:
        first, _, _ = _approved_email(store, tmp_path, smtp)
        second, _, _ = _approved_email(store, tmp_path, smtp)
    cases = ((first, 1.0, 4, [1.0, 2.0, 4.0]), (second, 3.0, 5, [3.0, 6.0, 8.0, 8.0]))
    for pid, backoff, tries, waits in cases:
        connector, slept = AlwaysBusy(), []
        executor = Executor(
            store,
            {"send_email": connector},
            sleep=slept.append,
            backoff_seconds=backoff,
            transient_tries=tries,
            batch_more=0,
        )
        outcome = executor.execute(pid)
        assert outcome.status == "failed" and f"gave up after {tries} tries" in outcome.detail
        assert connector.tries == tries and slept == waits
        assert row(store, pid)["retryable"] is True
        assert len(events_of(store, pid, "action.handover")) == 1
