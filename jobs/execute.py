"""execute(proposal_id): run an approved proposal through its connector, at most once (DESIGN.md invariant 3).

The checkpoints, each an event appended with a compare-and-set on the proposal's state:
1. `action.started` (attempt n, the idempotency key, a lease) — before the connector is called;
2. `action.handover` — by connectors that cannot deduplicate, right before the irreversible step;
3. `action.executed` (with the reference and any effect events, in one transaction) or
   `action.failed` / `action.uncertain`.
A worker that finds an attempt whose lease ran out (its worker died) takes over: if the attempt never
reached handover, or the connector deduplicates, it simply runs again; otherwise the outcome is unknown
and the proposal becomes "uncertain" — shown to the operator, who chooses to resend or not.

An action that acts only through the log (an internal update: its whole effect is the events its
connector returns) needs no checkpoint before it, since there is nothing outside to have happened
twice: its connector runs while the start is planned, and the start, the effect events and the result
are one transaction — one compare-and-set, committed or not at all.

A backlog is worked in batches: an attempt that starts also starts up to BATCH_MORE other approved
proposals whose undo window is over, in the same transaction, runs them one after another, and records
their results together — at the end, or with the next handover, which must commit before its send
anyway. Each start, handover and result is still its own compare-and-set on its own proposal. The
batched proposals' own jobs find them taken and return after one read. A batch stops starting
connectors once it has run for a quarter of the lease; the attempts it started and did not run are
taken over when their lease ends (jobs.proposal_service.recover_stalled), as a dead worker's are.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.connectors.base import (
    ActionRequest,
    ActionResult,
    Connector,
    OutcomeUnknown,
    PermanentError,
    Superseded,
    TransientError,
)
from jobs.connectors.chat import ChatReplyConnector
from jobs.connectors.email import EmailConnector
from jobs.connectors.internal import INTERNAL_KINDS, InternalConnector
from jobs.connectors.webhook import WebhookConnector
from jobs.context import JobContext, current
from jobs.queue import DECISIONS, NO_RETRY
from jobs.render_proposal import handle_of, named
from store import events as ev
from store import handover, starts
from store import lifecycle as lc
from store import proposals as sp
from store import tables as t
from store.db import reading
from store.log import to_event
from store.slice import group_query, groups_query
from store.state import SqlState
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
# A job that finds an undo window over this many times in a row without starting gives up to the sweep.
OVERDUE_TRIES = 3
# A job never holds a worker longer than this waiting for an undo window: the scheduler queues the
# job when the window ends, so a job only waits out the last moments (timer skew).
MAX_JOB_WAIT_SECONDS = 5.0
# Other approved proposals an attempt starts with its own when they wait (a backlog): one transaction
# starts them all and one records their results, instead of two per action.
BATCH_MORE = 15
# Proposals this process started in a batch whose own job has not run yet, remembered at most.
CLAIMED_MEMORY = 10_000


_STATUS_OF: dict[str, Status] = {
    "action.executed": "executed",
    "action.failed": "failed",
    "action.uncertain": "uncertain",
}


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""
    until: datetime | None = None


@dataclass(frozen=True)
class _Result:
    """An attempt's result, not yet recorded."""

    pid: str
    attempt: int
    event_type: str
    payload: ev.Payload
    effects: tuple[ev.NewEvent, ...] = ()

    @classmethod
    def executed(cls, pid: str, attempt: int, result: ActionResult) -> _Result:
        payload = sp.ActionExecuted(
            attempt=attempt, reference=result.reference, compensation=result.compensation
        )
        return cls(pid, attempt, "action.executed", payload, result.effects)

    def step(self) -> lc.Step:
        def plan(row: dict[str, Any]) -> list[lc.Planned] | None:
            if row["attempts"] != self.attempt:
                return None  # a newer attempt took over after our lease ran out
            return self.planned()

        return self.pid, {"executing"}, plan

    def planned(self) -> list[lc.Planned]:
        """The result event and the effect events (which go through the outbox) to append."""
        result = lc.on_proposal(
            self.pid, self.event_type, self.payload, lc.attempt_key(self.pid, self.attempt, "result")
        )
        return [(result, False), *((effect, True) for effect in self.effects)]

    @property
    def status(self) -> Status:
        return _STATUS_OF[self.event_type]

    @property
    def detail(self) -> str:
        return _detail(self.payload)


# The handover's compare-and-set, as _record returns it: (won, the proposal's state, its attempt), the
# state and attempt None when there is no such proposal.
_Handing = tuple[bool, str | None, int | None]


def _handover_step(pid: str, attempt: int) -> lc.Step:
    """The handover of `attempt` as a compare-and-set: appended only while it is the proposal's attempt."""

    def plan(row: dict[str, Any]) -> list[lc.Planned] | None:
        if row["attempts"] != attempt:
            return None
        handed = sp.ActionHandover(attempt=attempt)
        return [
            (lc.on_proposal(pid, "action.handover", handed, lc.attempt_key(pid, attempt, "handover")), False)
        ]

    return pid, {"executing"}, plan


def _left_as_it_is(row: Mapping[str, Any], now: datetime) -> bool:
    """Whether a start would find nothing to do on the proposal as read: inside its undo window, held
    under a live lease, or ended. Read without the lock, this is the answer the general way gives with
    it, or gave a moment before; what changes it later brings its own turn (the job waits out the undo
    window, the sweep takes up a lease that ran out, a retry queues a new job)."""
    if row["state"] == "approved":
        return bool(row["not_before"] and row["not_before"] > now)
    if row["state"] == "executing":
        return row["lease_until"] is None or row["lease_until"] > now
    return True


def _detail(payload: ev.Payload) -> str:
    """What a result says in a line: the error, the note or the far side's reference."""
    found = (
        getattr(payload, "error", None) or getattr(payload, "note", None) or getattr(payload, "reference", "")
    )
    return str(found or "")


class _Batch:
    """One execute() call's attempts: results waiting to be recorded, the outcomes recorded, and the
    connection its handovers go on, one after another (store.handover.Line; closed by execute())."""

    def __init__(self, store: EventStore) -> None:
        self.pending: list[_Result] = []
        self.outcomes: dict[str, Outcome] = {}
        self.line = handover.Line(store)


class _HandingOver:
    """The handover a connector is given (jobs.connectors.base.Handover). Calling it records, durably,
    that this attempt is about to take the irreversible step, only while it is still the proposal's
    attempt, with the batch's results so far. An attempt that outlived its lease may have been taken
    over by another worker; it is refused here (Superseded), before it can send a second copy. A retry
    of the same attempt after a transient failure finds its handover already recorded and goes on.

    `begin` sends it ahead where it goes as one query (store.handover, on Postgres), so that the
    connector does what can still be taken back (an SMTP envelope) while it commits; calling it then
    waits for it. Where it cannot be, `begin` does nothing and calling it does it all."""

    def __init__(self, executor: Executor, request: ActionRequest, batch: _Batch) -> None:
        self._executor = executor
        self._handing = (request.proposal_id, request.attempt)
        self._batch = batch
        self._sent: Callable[[], _Handing | None] | None = None

    def begin(self) -> bool:
        """Send it without waiting for it; False, having done nothing, where it cannot be."""
        if self._sent is None:
            self._sent = self._executor._send_ahead(self._batch, self._handing)
        return self._sent is not None

    def settle(self) -> None:
        """Wait for a handover sent ahead that the connector never waited for (it broke off): the
        results it carried are shown, or wait for the batch's next record; its own outcome no longer
        matters, and an error of it is logged, not raised over the connector's."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        try:
            sent()
        except Exception:
            log.warning("a handover sent ahead was not waited for by its connector", exc_info=True)

    def __call__(self) -> None:
        sent, self._sent = self._sent, None
        found = sent() if sent is not None else self._executor._record(self._batch, self._handing)
        assert found is not None
        won, state, attempts = found
        pid, attempt = self._handing
        if won or (state == "executing" and attempts == attempt):
            return
        raise Superseded(
            f"attempt {attempt} of {pid} did not send: the proposal moved on while it waited "
            f"(now {state or 'gone'}, attempt {attempts if attempts is not None else '?'})"
        )


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
        batch_more: int = BATCH_MORE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.connectors = dict(connectors)
        self.lease = timedelta(seconds=lease_seconds)
        self.notifier = notifier
        self.clock = clock
        self.sleep = sleep
        self.transient_tries = transient_tries
        self.backoff_seconds = backoff_seconds
        self.batch_more = batch_more
        self.monotonic = monotonic
        # Started by a batch here: their own jobs look before locking. The value is what the batch
        # recorded when that is final ("executed": nothing runs a proposal again after it), else None.
        self._claimed: dict[str, Status | None] = {}
        self._running: set[str] = set()  # started by a batch here that has not recorded their results
        self._claimed_lock = threading.Lock()

    # ---- entry points ----------------------------------------------------------------------------
    def execute(self, proposal_id: str) -> Outcome:
        """Start (or take over) the proposal's action and run it, with any backlog; never acts twice."""
        taken = self._taken_by_a_batch(proposal_id)
        if taken is not None:
            return taken
        # The start need not wait for the disk: nothing irreversible happens before the next durable
        # commit, which flushes the start with it (the write-ahead log is flushed in order). A
        # connector that cannot deduplicate records its handover, durably, before the irreversible
        # step; one that can runs again under the same idempotency key if Postgres loses the start.
        # The customers this batch's internal updates are planned on, by transaction: one that loses
        # its bet is tried again in a new one (store.lifecycle.start_batch), which plans afresh.
        touched: dict[SqlState, set[str]] = {}

        def plan(row: dict[str, Any], state: SqlState) -> list[lc.Planned] | None:
            return self._plan_start(row, state, touched.setdefault(state, set()))

        # The first proposal's email thread, read in the start's first round trip.
        beside = (_LAST_INBOUND_OF_PROPOSAL, {"proposal_id": proposal_id, **_OF_AN_EMAIL})
        batch = _Batch(self.store)
        try:
            transitions = self._start_ahead(proposal_id, batch, beside)
            if not transitions:
                batch.line.close()  # the general way takes a connection of its own; a handover opens it again
                transitions = lc.start_batch(
                    self.store,
                    proposal_id,
                    {"approved", "executing"},
                    plan,
                    more=self.batch_more,
                    now=self.clock(),
                    durable=False,
                    read_beside=beside,
                )
            return self._run_started(batch, transitions)
        finally:
            batch.line.close()

    def _run_started(self, batch: _Batch, transitions: list[lc.Transition]) -> Outcome:
        """Run the attempts a start won (the first transition is the proposal's own) and say how the
        proposal's own ended, or why it did not start."""
        first, *others = transitions
        row = first.row
        if row is None:
            return Outcome("nothing", "no such proposal")
        if not first.won:
            if row["state"] == "approved" and row["not_before"]:
                # The start found it inside its window by the clock it read; this clock may have passed
                # the window's end since, so no second look: the caller waits what is left, if anything.
                return Outcome("deferred", "inside the undo window", row["not_before"])
            if row["state"] == "executing":
                return Outcome("busy", "another worker holds the lease")
            return Outcome("nothing", f"proposal is {row['state']}")
        claimed = [other.row["id"] for other in others if other.row is not None]
        self._remember_claimed(claimed)
        started: list[lc.Transition] = []
        ended: list[lc.Transition] = []
        for transition in (first, *others):
            done = any(event.type in sp.RESULTS for event in transition.events)
            (ended if done else started).append(transition)
        # An email's thread (read with the start when the first proposal is one): none need be read again.
        known = {row["customer_id"]: _thread(first.beside)} if row["kind"] == "send_email" else {}
        try:
            self._run_in_turn(batch, started, known)
        finally:
            batch.line.close()
            self._show_ended_at_start(batch, ended)  # after the sends: their leases run meanwhile
            self._no_longer_running(claimed, batch.outcomes)
        return batch.outcomes.get(row["id"]) or Outcome("busy", "started, not run: left to the sweep")

    def _taken_by_a_batch(self, proposal_id: str) -> Outcome | None:
        """For a proposal a batch of this process started: what its own job should return, read without
        the lock (None: go on as usual, e.g. it was approved again since, or its lease ran out)."""
        with self._claimed_lock:
            if proposal_id in self._running:  # its batch runs in this process, under a live lease
                return Outcome("busy", "a batch of this worker is running it")
            if proposal_id not in self._claimed:
                return None
            if self._claimed.pop(proposal_id) == "executed":
                return Outcome("nothing", "proposal is executed")
        with reading(self.store.engine) as connection:
            found = connection.execute(_STATE_AND_LEASE, {"id": proposal_id}).first()
        if found is None:
            return Outcome("nothing", "no such proposal")
        state, lease_until = found
        if state == "executing" and lease_until is not None and lease_until > self.clock():
            return Outcome("busy", "a batch holds the lease")
        if state not in {"approved", "executing"}:
            return Outcome("nothing", f"proposal is {state}")
        return None

    def _remember_claimed(self, ids: Iterable[str]) -> None:
        with self._claimed_lock:
            for pid in ids:
                self._claimed[pid] = None
                self._running.add(pid)
            while len(self._claimed) > CLAIMED_MEMORY:
                self._claimed.pop(next(iter(self._claimed)))

    def _no_longer_running(self, ids: list[str], outcomes: Mapping[str, Outcome]) -> None:
        with self._claimed_lock:
            self._running.difference_update(ids)
            for pid in ids:
                outcome = outcomes.get(pid)
                if outcome is not None and outcome.status == "executed" and pid in self._claimed:
                    self._claimed[pid] = "executed"

    def _show_ended_at_start(self, batch: _Batch, ended: list[lc.Transition]) -> None:
        """Show the attempts whose start transaction also recorded their result (an action that acts
        only through the log, or a dead worker's handed-over attempt found uncertain)."""
        for transition in ended:
            assert transition.row is not None
            result = next(e for e in transition.events if e.type in sp.RESULTS)
            status = _STATUS_OF[result.type]
            batch.outcomes[transition.row["id"]] = Outcome(status, _detail(result.payload))
            self._after(transition.row, status)

    def _run_in_turn(
        self, batch: _Batch, started: list[lc.Transition], known: Mapping[str, dict[str, Any] | None]
    ) -> None:
        """Run each started attempt's connector in turn and record the results (see the module's doc);
        `known`: the threads of some customers already read (_threads)."""
        threads = self._threads((t.row for t in started if t.row is not None), known, batch)
        began = self.monotonic()
        budget = self.lease.total_seconds() / 4
        for n, transition in enumerate(started):
            row = transition.row
            assert row is not None
            if n and self.monotonic() - began > budget:
                left = [t.row["id"] for t in started[n:] if t.row is not None]
                log.warning(
                    "batch ran %.0fs; %d started actions left to the sweep: %s", budget, len(left), left
                )
                break
            payload = transition.events[0].payload
            assert isinstance(payload, sp.ActionStarted)
            self._run(batch, row, payload.attempt, self.connectors.get(row["kind"]), threads)
        self._record(batch)

    def wait_and_execute(self, proposal_id: str, max_wait: float | None = None) -> Outcome:
        """execute(), first waiting out the undo window (returns early if the proposal is undone).

        With max_wait, a window ending later than that is not waited for: "deferred" is returned.
        """
        overdue = 0  # tries that found the window over and still did not start
        while True:
            outcome = self.execute(proposal_id)
            if outcome.status != "deferred" or outcome.until is None:
                return outcome
            remaining = (outcome.until - self.clock()).total_seconds()
            if max_wait is not None and remaining > max_wait:
                return outcome
            overdue = overdue + 1 if remaining <= 0 else 0
            if overdue > OVERDUE_TRIES:  # the log and the row disagree: the stall sweep takes it up
                log.warning("%s: undo window over, still not started; left to the sweep", proposal_id)
                return outcome
            self.sleep(min(max(remaining, 0.0), UNDO_POLL_SECONDS))

    # ---- steps -----------------------------------------------------------------------------------
    def _start_ahead(
        self, proposal_id: str, batch: _Batch, beside: tuple[Any, dict[str, Any]]
    ) -> list[lc.Transition] | None:
        """The start the common way where it applies (store.starts): the proposal and its backlog read
        without the lock, and started in one query on the batch's line. A proposal the read finds
        nothing to start on (_left_as_it_is) is answered from it, without the lock: a job whose
        proposal another worker process's batch holds costs one read. None where the common way does
        not apply (SQLite; a lease ran out; the proposal or one of its backlog acts only through the
        log), and no transitions where the proposal moved on before the query: the general way then
        says why."""
        if self.store.engine.dialect.name != "postgresql":
            return None
        now = self.clock()
        found = starts.read(batch.line, proposal_id, more=self.batch_more, now=now, beside=beside)
        if found.row is None or _left_as_it_is(found.row, now):
            return [lc.Transition(False, found.row)]  # _run_started says why, as the general way would
        rows = [found.row, *found.others]
        if not all(self._starts_outside_the_log(row, now) for row in rows):
            return None  # the general way does internal updates in a backlog as they start
        won = starts.start(batch.line, [(row, self._started(row, row["attempts"] + 1, now)) for row in rows])
        return [replace(won[0], beside=found.beside), *won[1:]] if won else won

    def _starts_outside_the_log(self, row: Mapping[str, Any], now: datetime) -> bool:
        """Whether a proposal starts as store.starts starts it: approved, its undo window over, and run
        by a connector that acts outside the log (one that acts through it runs as it starts)."""
        due = not row["not_before"] or row["not_before"] <= now
        connector = self.connectors.get(row["kind"])
        return row["state"] == "approved" and due and not isinstance(connector, InternalConnector)

    def _started(self, row: Mapping[str, Any], attempt: int, now: datetime) -> ev.NewEvent:
        """The `action.started` of the proposal's attempt: its lease runs from now."""
        pid, connector = row["id"], self.connectors.get(row["kind"])
        started = sp.ActionStarted(
            attempt=attempt,
            connector=connector.name if connector else "none",
            idempotency_key=action_key(pid),
            lease_until=now + self.lease,
        )
        return lc.on_proposal(pid, "action.started", started, lc.attempt_key(pid, attempt, "started"))

    def _plan_start(self, row: dict[str, Any], state: SqlState, touched: set[str]) -> list[lc.Planned] | None:
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
            return [
                (
                    lc.on_proposal(pid, "action.uncertain", payload, lc.attempt_key(pid, attempt, "result")),
                    False,
                )
            ]
        attempt += 1
        planned = [(self._started(row, attempt, now), False)]
        if isinstance(connector, InternalConnector):  # acts only through the log: runs as it starts
            if row["kind"] in PLANNED_ON_STATE:
                customers = {row["customer_id"], *(str(v) for k, v in _params(row).items() if k in MERGED)}
                if customers & touched:
                    # It would be planned on what this batch has not appended yet (the stage another
                    # one changes, a merge): left to its own job, which runs after this one commits.
                    return None
                touched |= customers
            planned += self._run_in_log(row, attempt, connector, state).planned()
        return planned

    def _run(
        self,
        batch: _Batch,
        row: dict[str, Any],
        attempt: int,
        connector: Connector | None,
        threads: Mapping[str, dict[str, Any]],
    ) -> None:
        """Run one attempt's connector; its result waits in the batch to be recorded."""
        pid = row["id"]
        try:
            if connector is None:
                raise PermanentError(f"no connector acts on {row['kind']}", retryable=False)
            request = self._request(row, attempt, threads)
            result = self._with_retries(connector, request, batch)
        except OutcomeUnknown as exc:
            payload: ev.Payload = sp.ActionUncertain(attempt=attempt, note=str(exc))
            batch.pending.append(_Result(pid, attempt, "action.uncertain", payload))
        except PermanentError as exc:
            payload = sp.ActionFailed(attempt=attempt, error=str(exc), retryable=exc.retryable)
            batch.pending.append(_Result(pid, attempt, "action.failed", payload))
        except Superseded as exc:  # refused at handover: nothing was sent, the newer attempt owns it
            log.warning("%s", exc)
            batch.outcomes[pid] = Outcome("nothing", str(exc))
        except TransientError as exc:
            msg = f"{exc} (gave up after {self.transient_tries} tries)"
            payload = sp.ActionFailed(attempt=attempt, error=msg, retryable=True)
            batch.pending.append(_Result(pid, attempt, "action.failed", payload))
        except Exception as exc:  # a bug or an unexpected library error: unknown if it acted
            log.exception("connector for %s crashed", pid)
            batch.line.close()  # the read below takes a connection of its own
            handed = self._handed_over(pid, attempt)
            if handed and not (connector and connector.dedupes):
                note = f"unexpected error after handover: {exc}"
                payload = sp.ActionUncertain(attempt=attempt, note=note)
                batch.pending.append(_Result(pid, attempt, "action.uncertain", payload))
            else:
                payload = sp.ActionFailed(attempt=attempt, error=f"unexpected error: {exc}", retryable=True)
                batch.pending.append(_Result(pid, attempt, "action.failed", payload))
        else:
            batch.pending.append(_Result.executed(pid, attempt, result))

    def _run_in_log(
        self, row: dict[str, Any], attempt: int, connector: InternalConnector, state: SqlState
    ) -> _Result:
        """Plan the effects of an action that acts only through the log, reading through `state`, the
        transaction that starts its attempt and appends them (nothing here is retried while the log's
        lock is held)."""
        pid = row["id"]
        try:
            result = connector.plan(self._request(row, attempt, {}), state)
        except (PermanentError, TransientError) as exc:
            retryable = getattr(exc, "retryable", True)
            failed = sp.ActionFailed(attempt=attempt, error=str(exc), retryable=retryable)
            return _Result(pid, attempt, "action.failed", failed)
        except SQLAlchemyError:  # the transaction is lost with it: nothing is appended, the job fails
            raise
        except Exception as exc:  # a bug: nothing was appended, so a Retry may work once it is fixed
            log.exception("connector for %s crashed", pid)
            failed = sp.ActionFailed(attempt=attempt, error=f"unexpected error: {exc}", retryable=True)
            return _Result(pid, attempt, "action.failed", failed)
        return _Result.executed(pid, attempt, result)

    def _with_retries(self, connector: Connector, request: ActionRequest, batch: _Batch) -> ActionResult:
        """The connector's run, tried again on a transient failure, `transient_tries` tries in all, waiting
        `backoff_seconds` times 1, 2, 4… (at most BACKOFF_MAX_SECONDS) between tries; the last failure is
        raised. A loop of its own rather than a retry library's, whose bookkeeping of every try cost a
        worker ~5 % of its CPU per email, where almost every run succeeds on the first try."""
        tried = 1
        while True:
            handing = _HandingOver(self, request, batch)  # each try with a handover of its own
            try:
                return connector.run(request, handing)
            except TransientError:
                if tried >= self.transient_tries:
                    raise
            finally:
                handing.settle()
            self.sleep(min(self.backoff_seconds * 2 ** min(tried - 1, 32), BACKOFF_MAX_SECONDS))
            tried += 1

    def _handed_over(self, pid: str, attempt: int) -> bool:
        with reading(self.store.engine) as connection:
            action = connection.execute(
                select(t.actions.c.state).where(t.actions.c.id == f"{pid}:{attempt}")
            ).scalar_one_or_none()
        return action == "handover"

    def _record(self, batch: _Batch, handing: tuple[str, int] | None = None) -> _Handing | None:
        """Record the batch's pending results (and the handover of `handing`, a proposal id and attempt)
        in one durable transaction; show each recorded result. Returns the handover's compare-and-set:
        whether it won, and the proposal's state and attempt as the transaction left it."""
        sent = self._send_ahead(batch, handing)
        if sent is not None:
            return sent()
        results, batch.pending = batch.pending, []
        if not results and handing is None:
            return None
        batch.line.close()  # the general way takes a connection of its own
        steps = [result.step() for result in results]
        if handing is not None:
            steps.append(_handover_step(*handing))
        try:
            recorded = lc.transition_each(self.store, steps)
        except BaseException:  # nothing was recorded: the results wait for the batch's next record
            batch.pending[:0] = results
            raise
        for result, finished in zip(results, recorded, strict=False):
            self._recorded(batch, result, finished.row if finished.won else None)
        if handing is None:
            return None
        row = recorded[-1].row
        return recorded[-1].won, row["state"] if row else None, row["attempts"] if row else None

    def _send_ahead(
        self, batch: _Batch, handing: tuple[str, int] | None
    ) -> Callable[[], _Handing | None] | None:
        """_record's transaction sent as one query (store.handover) where it can be: every result an
        action executed without effect events, on Postgres. The function returned waits for it and
        does the rest of _record. None, having sent nothing, where it cannot be."""
        results = batch.pending
        steps = []
        for result in results:
            if not isinstance(result.payload, sp.ActionExecuted) or result.effects:
                return None
            steps.append(handover.Step(result.pid, result.attempt, result.payload))
        if handing is not None:
            pid, attempt = handing
            steps.append(handover.Step(pid, attempt, sp.ActionHandover(attempt=attempt)))
        sent = handover.send(self.store, steps, batch.line)
        if sent is None:
            return None
        batch.pending = []

        def recorded() -> _Handing | None:
            try:
                outcome = sent.outcome()
            except BaseException:  # nothing was recorded: the results wait for the batch's next record
                batch.pending[:0] = results
                raise
            for result, won in zip(results, outcome.won, strict=False):
                self._recorded(batch, result, {"id": result.pid} if won else None)  # see _after
            state, attempts = outcome.last or (None, None)
            return (outcome.won[-1], state, attempts) if handing is not None else None

        return recorded

    def _recorded(self, batch: _Batch, result: _Result, row: Mapping[str, Any] | None) -> None:
        """Show a result as its transaction recorded it (row: the proposal after it), or, row None, say
        that it was not: the proposal had moved on."""
        if row is None:
            batch.line.close()  # the read takes a connection of its own
            row = self._recorded_before(result)
        if row is None:
            log.warning(
                "result of %s attempt %s not recorded: the proposal moved on", result.pid, result.attempt
            )
            batch.outcomes[result.pid] = Outcome("nothing", "the proposal moved on while this attempt ran")
            return
        self._after(row, result.status)
        batch.outcomes[result.pid] = Outcome(result.status, result.detail)

    def _recorded_before(self, result: _Result) -> dict[str, Any] | None:
        """The proposal, where a result that lost its compare-and-set is in the log all the same: an
        earlier transaction committed it and the answer was lost on the way back (a cut connection),
        so the batch kept it to record again. None where the log holds no such result."""
        key = lc.attempt_key(result.pid, result.attempt, "result")
        with reading(self.store.engine) as connection:
            found = connection.execute(
                select(t.events.c.type).where(t.events.c.idempotency_key == key)
            ).scalar_one_or_none()
            return lc.get_proposal(connection, result.pid) if found == result.event_type else None

    def _after(self, row: Mapping[str, Any], status: str) -> None:
        """Show the proposal's new state; say so when it failed or may have been sent (an executed
        action needs only the row's id)."""
        if self.notifier is None:
            return
        pid = row["id"]
        self.notifier.refresh(pid)
        if status not in ("uncertain", "failed"):
            return
        with reading(self.store.engine) as connection:
            what = named(row, lc.customer_name(connection, row["customer_id"]))
        handle = handle_of(row)
        if status == "uncertain":
            self.notifier.notice(
                [f"⚠ {what} may have been sent.", f"show {handle}, then choose Resend or Don't resend."]
            )
        else:
            again = f"; retry {handle} to try again" if row.get("retryable") else ""
            lines = [f"{what} failed: {row['error']}", f"show {handle} for the card{again}."]
            if row["kind"] == "send_email" and "recipient" in (row["error"] or ""):
                lines.append(f"To send it to another address: edit {handle} to <address>.")
            self.notifier.notice(lines)

    def _request(
        self, row: dict[str, Any], attempt: int, threads: Mapping[str, dict[str, Any]]
    ) -> ActionRequest:
        """What the connector is given; `threads` is _threads() of the batch (emails only)."""
        approved = row["approved"] or {}
        params = _params(row)
        draft = approved.get("draft") if approved else row["proposed"].get("draft")
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
            context=threads.get(row["customer_id"], {}) if row["kind"] == "send_email" else {},
        )

    def _threads(
        self, rows: Iterable[dict[str, Any]], known: Mapping[str, dict[str, Any] | None], batch: _Batch
    ) -> dict[str, dict[str, Any]]:
        """For the emails among rows, each customer's last inbound email to thread the reply onto, by
        customer: one read for a whole batch, of the customers not `known` (None: no thread)."""
        threads = {customer: thread for customer, thread in known.items() if thread is not None}
        emails = {row["customer_id"] for row in rows if row["kind"] == "send_email"}
        customers = sorted(emails - set(known))
        if not customers:
            return threads
        batch.line.close()  # the read takes a connection of its own (a pool of one has no second)
        engine = self.store.engine
        by_customer: dict[str, list[Mapping[Any, Any]]] = {}
        with reading(engine) as connection:
            ranked = connection.execute(_LAST_INBOUND[engine.dialect.name], {"customer_ids": customers})
            for row in ranked:  # each customer's newest first
                by_customer.setdefault(row.root, []).append(row._mapping)
        for customer, found in by_customer.items():
            thread = _thread(found)
            if thread is not None:
                threads[customer] = thread
        return threads


def _thread(rows: Iterable[Mapping[Any, Any]]) -> dict[str, Any] | None:
    """The thread to reply onto from a customer's latest emails (log rows, newest first): the newest
    one's Message-ID and references; None when none has a Message-ID."""
    for row in rows:
        payload = to_event(row).payload
        data = payload.data if isinstance(payload, ev.Signal) else {}
        if data.get("message_id"):
            return {"last_message_id": data["message_id"], "references": list(data.get("references") or [])}
    return None


# Internal updates planned on the customer's state (the stage to restore on Undo, whether a merge is
# already made), and the params of a merge that name customers besides the proposal's own.
PLANNED_ON_STATE = frozenset({"change_stage", "merge_customers"})
MERGED = frozenset({"into", "merged"})


def _params(row: dict[str, Any]) -> dict[str, Any]:
    """The params the action runs with: the approved (maybe edited) version, else as proposed."""
    approved = row["approved"] or {}
    return dict(approved.get("params") or row["proposed"].get("params") or {})


# What a batched proposal's own job looks at before anything else: two columns, no lock.
_STATE_AND_LEASE = select(t.proposals.c.state, t.proposals.c.lease_until).where(
    t.proposals.c.id == bindparam("id")
)


def _last_inbound(dialect: str) -> Any:
    """Each customer's (and their merged duplicates') latest 20 emails, newest first, by customer (as
    `root`) for the bound list "customer_ids"."""
    groups, e = groups_query(dialect), t.events.c
    newest = func.row_number().over(partition_by=groups.c.root, order_by=e.position.desc())
    ranked = (
        select(groups.c.root, e.position, newest.label("n"))
        .join_from(groups, t.events, e.stream == groups.c.id)
        .where(e.type == "message.received")
        .subquery()
    )
    return (
        select(ranked.c.root, t.events)
        .join_from(ranked, t.events, e.position == ranked.c.position)
        .where(ranked.c.n <= 20)
        .order_by(ranked.c.root, e.position.desc())
    )


# Built once per dialect: it runs per batch of sends.
_LAST_INBOUND = {dialect: _last_inbound(dialect) for dialect in ("postgresql", "sqlite")}
# The same for the customer of the bound "proposal_id" when the proposal is an email: read with the
# lock, in the round trip that takes it.
_LAST_INBOUND_OF_PROPOSAL = (
    select(t.events)
    .where(
        t.events.c.stream.in_(
            group_query(
                select(t.proposals.c.customer_id)
                .where(t.proposals.c.id == bindparam("proposal_id"), t.proposals.c.kind == bindparam("kind"))
                .scalar_subquery()
            )
        ),
        t.events.c.type == bindparam("type"),
    )
    .order_by(t.events.c.position.desc())
    .limit(bindparam("n"))
)
# Its parameters besides the proposal's id (every value is bound: it is sent past SQLAlchemy).
_OF_AN_EMAIL = {"kind": "send_email", "type": "message.received", "n": 20}


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
