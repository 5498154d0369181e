"""Sequencing the intake inbox: the job that moves staged signals into the log, and what queues it.

The web routes stage signals (store.intake) and kick an IntakeKicker; the kicker queues one
`sequence_intake` job shortly after, however many rows arrived meanwhile, and that job moves every
staged row into the log in batches (each new event then gets its process_event job through the outbox,
as any append does). If the kick is lost (Redis down, the process killed), the outbox relay sequences
what is left (jobs.relay), so a staged signal always reaches the log.
"""

from __future__ import annotations

import logging
import threading

from jobs.context import JobContext, current
from jobs.queue import DECISIONS, NO_RETRY, JobQueue
from store.intake import UNREACHABLE, mark_reported, refused, sequence

log = logging.getLogger(__name__)

SEQUENCE_INTAKE = "jobs.intake.sequence_intake"
# How long a kick waits for more rows before queueing its job: a burst of deliveries costs one job per
# window instead of one per request, and a lone signal waits no longer than this for its job.
KICK_WINDOW_S = 0.02
# How long the job waits between two partial batches while signals keep arriving (store.intake.sequence's
# `linger`): under a burst each transaction then records more signals, and the sequencer's CPU per signal
# fell by about a third, which the web process on the same cores gets back (docs/benchmarks.md). A signal
# waits at most this much longer to reach the log; a lone one does not wait.
SEQUENCE_LINGER_S = 0.05


def sequence_intake() -> int:
    """RQ job: move every staged signal into the log; how many moved.

    A database outage is not a job failure: the rows stay staged and the relay moves them later.
    """
    ctx = current()
    try:
        moved = sequence(ctx.store, linger=SEQUENCE_LINGER_S)
    except UNREACHABLE as exc:
        log.warning("database unreachable, staged signals wait for the relay: %s", exc)
        return 0
    report_refusals(ctx)
    return moved


def report_refusals(ctx: JobContext) -> int:
    """Tell the operator, once, about signals that were accepted but that the log refused for good.

    Such a signal was answered 202, so its sender will not send it again: a person must look at it.
    Returns how many were reported.
    """
    found = refused(ctx.store.engine, unreported=True)
    if not found:
        return 0
    lines = [f"⚠ {len(found)} accepted signal(s) could not be recorded; nothing was proposed for them:"]
    lines += [
        f"{row['type']} from {row['source']} ({row['idempotency_key']}): {row['error']}" for row in found
    ]
    lines.append(
        "They are listed by `crm jobs`; fix the cause, then `crm jobs relay --refused` retries them."
    )
    ctx.notifier.notice(lines)
    mark_reported(ctx.store.engine, [row["id"] for row in found])
    return len(found)


class IntakeKicker:
    """Queues one sequence_intake job after rows are staged, at most one per window (a daemon thread).

    `kick()` is cheap (it sets a flag), so a request never waits on the queue. Every row staged before
    a kick is covered by a job that begins after it: the thread clears the flag, then queues a job, or
    finds the job it queued last still waiting in the queue. Such a job has not begun, so it will read
    every row staged before the kick: a second one would only make the worker look again (under load
    that was a job per window, each an RQ enqueue here and a transaction in the worker).
    """

    def __init__(self, queue: JobQueue, window: float = KICK_WINDOW_S) -> None:
        self.queue = queue
        self.window = window
        self._kicked = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def kick(self) -> None:
        """Ask for a sequence_intake job soon."""
        if self._thread is None:
            self._start()
        self._kicked.set()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; rows staged since the last job wait for the relay (or the next process)."""
        self._stopping.set()
        self._kicked.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="intake-kicker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        queued: str | None = None
        while True:
            self._kicked.wait()
            if self._stopping.is_set():
                return
            self._stopping.wait(self.window)
            self._kicked.clear()
            try:
                if queued is not None and self._still_waiting(queued):
                    continue
                queued = self.queue.enqueue(SEQUENCE_INTAKE, priority=DECISIONS, retry=NO_RETRY)
                if queued is None:
                    log.warning("queue unreachable; staged signals wait for the relay")
            except Exception:  # the relay is the safety net; the thread must live on
                log.exception("could not queue the intake sequencing job")

    def _still_waiting(self, job_id: str) -> bool:
        # Any doubt means queue another job: one too many costs a look, one too few a relay's delay.
        try:
            return self.queue.waiting(job_id, priority=DECISIONS)
        except Exception:
            log.exception("could not tell whether intake sequencing job %s still waits", job_id)
            return False
