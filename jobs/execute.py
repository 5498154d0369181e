"""execute(proposal_id): run an approved proposal through its connector, at most once (DESIGN.md invariant 3).

The checkpoints, each an event appended with a compare-and-set on the proposal's state:
1. `action.started` (attempt n, the idempotency key, a lease) — before the connector is called;
2. `action.handover` — by connectors that cannot deduplicate, right before the irreversible step;
3. `action.executed` (with the reference and any effect events, in one transaction) or
   `action.failed` / `action.uncertain`.
A worker that finds an attempt whose lease ran out (its worker died) takes over: if the attempt never
reached handover, or the connector deduplicates, it simply runs again; otherwise the outcome is unknown
and the proposal becomes "uncertain" — shown to the operator, who chooses to resend or not.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from jobs.connectors.base import (
    ActionRequest,
    ActionResult,
    Connector,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)
from jobs.connectors.chat import ChatReplyConnector
from jobs.connectors.email import EmailConnector
from jobs.connectors.internal import INTERNAL_KINDS, InternalConnector
from jobs.connectors.webhook import WebhookConnector
from jobs.context import JobContext, current
from jobs.queue import DECISIONS, NO_RETRY
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store import tables as t
from store.db import reading
from store.log import to_event
from store.slice import group_query
from store.uow import EventStore

log = logging.getLogger(__name__)

Status = Literal["executed", "failed", "uncertain", "deferred", "busy", "nothing"]

# Transient failures are tried this many times in one attempt, waiting 1 s, 2 s, 4 s… between tries:
# enough to ride out a server restart, short enough to stay well inside the lease.
TRANSIENT_TRIES = 4
BACKOFF_MAX_SECONDS = 8.0
# While an approved send waits out its undo window, look at the proposal this often (an Undo ends
# the wait early and frees the worker).
UNDO_POLL_SECONDS = 0.2
# A job never holds a worker longer than this waiting for an undo window: the scheduler queues the
# job when the window ends, so a job only waits out the last moments (timer skew).
MAX_JOB_WAIT_SECONDS = 5.0


class Superseded(Exception):
    """A newer attempt took the proposal over (this one's lease ran out): this one must not act."""


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""
    until: datetime | None = None


def action_key(proposal_id: str) -> str:
    """The idempotency key of a proposal's action: the same on every attempt and every worker."""
    return f"crm-{proposal_id}"


class Executor:
    """Runs approved proposals through connectors, checkpointing every step in the log."""

    def __init__(
        self,
        store: EventStore,
        connectors: Mapping[str, Connector],
        *,
        lease_seconds: float = 300.0,
        notifier: Any = None,
        clock: Callable[[], datetime] = ev.utcnow,
        sleep: Callable[[float], None] = time.sleep,
        transient_tries: int = TRANSIENT_TRIES,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.connectors = dict(connectors)
        self.lease = timedelta(seconds=lease_seconds)
        self.notifier = notifier
        self.clock = clock
        self.sleep = sleep
        self.transient_tries = transient_tries
        self.backoff_seconds = backoff_seconds

    # ---- entry points ----------------------------------------------------------------------------
    def execute(self, proposal_id: str) -> Outcome:
        """Start (or take over) the proposal's action and run it; never acts twice."""
        # The start need not wait for the disk: nothing irreversible happens before the next durable
        # commit, which flushes the start with it (the write-ahead log is flushed in order). A
        # connector that cannot deduplicate records its handover, durably, before the irreversible
        # step; one that can runs again under the same idempotency key if Postgres loses the start.
        started = lc.transition(
            self.store, proposal_id, {"approved", "executing"}, self._plan_start, durable=False
        )
        row = started.row
        if row is None:
            return Outcome("nothing", "no such proposal")
        if not started.won:
            if row["state"] == "approved" and row["not_before"] and row["not_before"] > self.clock():
                return Outcome("deferred", "inside the undo window", row["not_before"])
            if row["state"] == "executing":
                return Outcome("busy", "another worker holds the lease")
            return Outcome("nothing", f"proposal is {row['state']}")
        event = started.events[0]
        if event.type == "action.uncertain":
            self._after(row, "uncertain")
            return Outcome("uncertain", "a crashed attempt may have sent it")
        assert isinstance(event.payload, sp.ActionStarted)
        return self._run(row, event.payload.attempt, self.connectors.get(row["kind"]))

    def wait_and_execute(self, proposal_id: str, max_wait: float | None = None) -> Outcome:
        """execute(), first waiting out the undo window (returns early if the proposal is undone).

        With max_wait, a window ending later than that is not waited for: "deferred" is returned.
        """
        while True:
            outcome = self.execute(proposal_id)
            if outcome.status != "deferred" or outcome.until is None:
                return outcome
            remaining = (outcome.until - self.clock()).total_seconds()
            if max_wait is not None and remaining > max_wait:
                return outcome
            self.sleep(min(max(remaining, 0.0), UNDO_POLL_SECONDS))

    # ---- steps -----------------------------------------------------------------------------------
    def _plan_start(self, row: dict[str, Any]) -> list[lc.Planned] | None:
        now = self.clock()
        pid, attempt = row["id"], row["attempts"]
        connector = self.connectors.get(row["kind"])
        if row["state"] == "approved":
            if row["not_before"] and row["not_before"] > now:
                return None
        elif row["lease_until"] is None or row["lease_until"] > now:
            return None  # a live worker is on it
        elif row["phase"] == "handover" and not (connector and connector.dedupes):
            note = "the worker stopped after handing the message over; the server may have it"
            payload: ev.Payload = sp.ActionUncertain(attempt=attempt, note=note)
            return [(lc.on_proposal(pid, "action.uncertain", payload, f"{pid}:{attempt}:result"), False)]
        attempt += 1
        started = sp.ActionStarted(
            attempt=attempt,
            connector=connector.name if connector else "none",
            idempotency_key=action_key(pid),
            lease_until=now + self.lease,
        )
        return [(lc.on_proposal(pid, "action.started", started, f"{pid}:{attempt}:started"), False)]

    def _run(self, row: dict[str, Any], attempt: int, connector: Connector | None) -> Outcome:
        pid = row["id"]
        try:
            if connector is None:
                raise PermanentError(f"no connector acts on {row['kind']}", retryable=False)
            request = self._request(row, attempt)
            result = self._with_retries(connector, request)
        except OutcomeUnknown as exc:
            return self._finish(
                pid, attempt, "action.uncertain", sp.ActionUncertain(attempt=attempt, note=str(exc))
            )
        except PermanentError as exc:
            payload = sp.ActionFailed(attempt=attempt, error=str(exc), retryable=exc.retryable)
            return self._finish(pid, attempt, "action.failed", payload)
        except Superseded as exc:  # refused at handover: nothing was sent, the newer attempt owns it
            log.warning("%s", exc)
            return Outcome("nothing", str(exc))
        except TransientError as exc:
            msg = f"{exc} (gave up after {self.transient_tries} tries)"
            return self._finish(
                pid, attempt, "action.failed", sp.ActionFailed(attempt=attempt, error=msg, retryable=True)
            )
        except Exception as exc:  # a bug or an unexpected library error: unknown if it acted
            log.exception("connector for %s crashed", pid)
            handed = self._handed_over(pid, attempt)
            if handed and not (connector and connector.dedupes):
                note = f"unexpected error after handover: {exc}"
                return self._finish(
                    pid, attempt, "action.uncertain", sp.ActionUncertain(attempt=attempt, note=note)
                )
            payload = sp.ActionFailed(attempt=attempt, error=f"unexpected error: {exc}", retryable=True)
            return self._finish(pid, attempt, "action.failed", payload)
        executed = sp.ActionExecuted(
            attempt=attempt, reference=result.reference, compensation=result.compensation
        )
        return self._finish(pid, attempt, "action.executed", executed, effects=result.effects)

    def _with_retries(self, connector: Connector, request: ActionRequest) -> ActionResult:
        retrying = Retrying(
            stop=stop_after_attempt(self.transient_tries),
            wait=wait_exponential(multiplier=self.backoff_seconds, max=BACKOFF_MAX_SECONDS),
            retry=retry_if_exception_type(TransientError),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            result: ActionResult = retrying(connector.run, request, lambda: self._handover(request))
        except RetryError as exc:  # reraise=True makes this rare; keep the last error's message
            raise TransientError(str(exc.last_attempt.exception())) from None
        return result

    def _handover(self, request: ActionRequest) -> None:
        """Record, durably, that this attempt is about to take the irreversible step — only while it
        is still the proposal's attempt. An attempt that outlived its lease may have been taken over
        by another worker; it is refused here (Superseded), before it can send a second copy. A retry
        of the same attempt after a transient failure finds its handover already recorded and goes on.
        """
        pid, attempt = request.proposal_id, request.attempt

        def plan(row: dict[str, Any]) -> list[lc.Planned] | None:
            if row["attempts"] != attempt:
                return None
            handover = sp.ActionHandover(attempt=attempt)
            return [(lc.on_proposal(pid, "action.handover", handover, f"{pid}:{attempt}:handover"), False)]

        handed = lc.transition(self.store, pid, {"executing"}, plan)
        row = handed.row
        if handed.won or (row is not None and row["state"] == "executing" and row["attempts"] == attempt):
            return
        state = row["state"] if row is not None else "gone"
        raise Superseded(
            f"attempt {attempt} of {pid} did not send: the proposal moved on while it waited "
            f"(now {state}, attempt {row['attempts'] if row is not None else '?'})"
        )

    def _handed_over(self, pid: str, attempt: int) -> bool:
        with reading(self.store.engine) as connection:
            action = connection.execute(
                select(t.actions.c.state).where(t.actions.c.id == f"{pid}:{attempt}")
            ).scalar_one_or_none()
        return action == "handover"

    def _finish(
        self,
        pid: str,
        attempt: int,
        event_type: str,
        payload: ev.Payload,
        effects: tuple[ev.NewEvent, ...] = (),
    ) -> Outcome:
        def plan(row: dict[str, Any]) -> list[lc.Planned] | None:
            if row["attempts"] != attempt:
                return None  # a newer attempt took over after our lease ran out
            result = lc.on_proposal(pid, event_type, payload, f"{pid}:{attempt}:result")
            return [(result, False), *((effect, True) for effect in effects)]

        finished = lc.transition(self.store, pid, {"executing"}, plan)
        status: Status = {"action.executed": "executed", "action.failed": "failed"}.get(
            event_type, "uncertain"
        )  # type: ignore[assignment]
        if not finished.won or finished.row is None:
            log.warning("result of %s attempt %s not recorded: the proposal moved on", pid, attempt)
            return Outcome("nothing", "the proposal moved on while this attempt ran")
        self._after(finished.row, status)
        detail = (
            getattr(payload, "error", None)
            or getattr(payload, "note", None)
            or getattr(payload, "reference", "")
        )
        return Outcome(status, str(detail or ""))

    def _after(self, row: dict[str, Any], status: str) -> None:
        """Show the proposal's new state; say so when it failed or may have been sent."""
        if self.notifier is None:
            return
        pid = row["id"]
        self.notifier.refresh(pid)
        if status == "uncertain":
            self.notifier.notice(
                [
                    f"⚠ {row['kind']} for {row['customer_id']} may have been sent ({pid}).",
                    "Open the proposal and choose Resend or Don't resend.",
                ]
            )
        elif status == "failed":
            self.notifier.notice([f"{row['kind']} for {row['customer_id']} failed ({pid}): {row['error']}"])

    def _request(self, row: dict[str, Any], attempt: int) -> ActionRequest:
        approved = row["approved"] or {}
        proposed = row["proposed"]
        params = dict(approved.get("params") or proposed.get("params") or {})
        draft = approved.get("draft") if approved else proposed.get("draft")
        return ActionRequest(
            proposal_id=row["id"],
            kind=row["kind"],
            agent=row["agent"],
            customer_id=row["customer_id"],
            params=params,
            draft=draft,
            idempotency_key=action_key(row["id"]),
            attempt=attempt,
            approved_by=row["decided_by"],
            context=self._context(row) if row["kind"] == "send_email" else {},
        )

    def _context(self, row: dict[str, Any]) -> dict[str, Any]:
        """The customer's last inbound email, to thread the reply onto."""
        with reading(self.store.engine) as connection:
            found = connection.execute(_LAST_INBOUND, {"customer_id": row["customer_id"]}).all()
        for found_row in found:
            payload = to_event(found_row._mapping).payload
            data = payload.data if isinstance(payload, ev.Signal) else {}
            if data.get("message_id"):
                references = list(data.get("references") or [])
                return {"last_message_id": data["message_id"], "references": references}
        return {}


# The customer's (and their merged duplicates') latest emails, newest first: built once, it runs per send.
_LAST_INBOUND = (
    select(t.events)
    .where(t.events.c.stream.in_(group_query()), t.events.c.type == "message.received")
    .order_by(t.events.c.position.desc())
    .limit(20)
)


def default_connectors(
    store: EventStore, settings: Any, surface_named: Callable[[str], Any]
) -> dict[str, Connector]:
    """Connectors by action kind, from settings."""
    internal = InternalConnector(store)
    connectors: dict[str, Connector] = {kind: internal for kind in INTERNAL_KINDS}
    connectors["send_email"] = EmailConnector(
        settings.smtp_url, settings.mail_from, sent_copies_for(settings)
    )
    connectors["post_webhook"] = WebhookConnector()
    connectors["send_chat_reply"] = ChatReplyConnector(surface_named)
    return connectors


def sent_copies_for(settings: Any) -> Any:
    """Where sent emails are filed (the IMAP_URL mailbox's Sent folder), or None without IMAP_URL."""
    if settings.imap_url is None:
        return None
    from jobs.connectors.imap import SentCopies
    from store.mailbox_url import parse_mailbox_url

    return SentCopies(parse_mailbox_url(settings.imap_url.get_secret_value()), settings.imap_sent)


def execute(proposal_id: str) -> str:
    """Job function (RQ or in-process): wait out the last of the undo window, then execute the proposal."""
    return current().executor.wait_and_execute(proposal_id, MAX_JOB_WAIT_SECONDS).status


def schedule_execution(
    ctx: JobContext, proposal_id: str, *, again: bool = False, row: Mapping[str, Any] | None = None
) -> str | None:
    """Queue execute(proposal_id) at the "decisions" priority, to run when its undo window ends.

    The delay rides on the queue (RQ's scheduled registry with REDIS_URL), so any worker runs it
    whichever process took the tap. `row` is the proposal as the decision left it, when the caller
    has it (it is not read again). Returns the job id, or None when the queue is unreachable (the
    sweep, jobs.proposal_service.recover_stalled, queues it again).
    """
    if row is None or row["id"] != proposal_id:
        with reading(ctx.store.engine) as connection:
            row = lc.get_proposal(connection, proposal_id)
    not_before = row["not_before"] if row else None
    # One job id per attempt: the tap's process and the executor handler (which the outbox relay runs
    # should the first job be lost) queue the same job, so the queue keeps one. A retry or a resend
    # comes after an attempt, so it is a new job; execute() makes any spare harmless anyway (it loses
    # the compare-and-set).
    job_id = f"execute-{proposal_id}-{row['attempts'] if row else 0}"
    if again:  # the sweep: the job under that id may have failed or vanished; this is a new one
        job_id += f"-{secrets.token_hex(4)}"
    return ctx.queue.enqueue(
        execute, proposal_id, priority=DECISIONS, job_id=job_id, retry=NO_RETRY, not_before=not_before
    )
