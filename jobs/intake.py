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

from jobs.context import current
from jobs.queue import DECISIONS, NO_RETRY, JobQueue
from store.intake import UNREACHABLE, sequence

log = logging.getLogger(__name__)

SEQUENCE_INTAKE = "jobs.intake.sequence_intake"
# How long a kick waits for more rows before queueing its job: a burst of deliveries costs one job per
# window instead of one per request, and a lone signal waits no longer than this for its job.
KICK_WINDOW_S = 0.02


def sequence_intake() -> int:
    """RQ job: move every staged signal into the log; how many moved.

    A database outage is not a job failure: the rows stay staged and the relay moves them later.
    """
    try:
        return sequence(current().store)
    except UNREACHABLE as exc:
        log.warning("database unreachable, staged signals wait for the relay: %s", exc)
        return 0


class IntakeKicker:
    """Queues one sequence_intake job after rows are staged, at most one per window (a daemon thread).

    `kick()` is cheap (it sets a flag), so a request never waits on the queue. Every row staged before
    a kick is covered by a job queued after it: the thread clears the flag before it queues.
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
        while True:
            self._kicked.wait()
            if self._stopping.is_set():
                return
            self._stopping.wait(self.window)
            self._kicked.clear()
            try:
                if self.queue.enqueue(SEQUENCE_INTAKE, priority=DECISIONS, retry=NO_RETRY) is None:
                    log.warning("queue unreachable; staged signals wait for the relay")
            except Exception:  # the relay is the safety net; the thread must live on
                log.exception("could not queue the intake sequencing job")
