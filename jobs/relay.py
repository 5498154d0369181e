"""The outbox relay: queue again whatever the outbox still holds after a while.

An outbox row is written with its event and deleted when the event is processed. A row that lingers
means the post-commit enqueue never happened (Redis was down, the process died between commit and
enqueue), the queued job was lost (Redis restarted without persistence) or its worker died. The relay
hands such rows to the queue again; the job id is derived from the event id, so an event still queued
or running is not queued twice, and one processed twice is a no-op anyway.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select, update

from jobs.context import JobContext
from jobs.intake import report_refusals
from store import tables as t
from store.events import utcnow
from store.intake import sequence

log = logging.getLogger(__name__)

# Long enough that the relay does not race the enqueue right after commit, short enough that a signal
# lost to a Redis outage waits well under a minute once Redis is back.
RELAY_GRACE = timedelta(seconds=30)
# How often `crm worker` runs the relay in its background thread: an approval made while Redis was
# down is queued within seconds of its return.
RELAY_INTERVAL_S = 5.0
# What a row whose enqueue failed is marked with (relay_soon): older than any grace.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
# Rows read per round trip; a backlog of many thousands is relayed in several batches.
RELAY_BATCH = 500


def relay_outbox(ctx: JobContext, older_than: timedelta = RELAY_GRACE, batch: int = RELAY_BATCH) -> int:
    """Queue every outbox row untouched for `older_than`; returns how many the queue accepted.

    A row's clock is its last enqueue by the relay (enqueued_at), or its creation if the relay never
    touched it. Stops early, leaving the rest for the next run, when the queue is unreachable.

    First it moves staged signals of the same age into the log (store.intake): their sequencing job
    was lost, or never queued. Their events get outbox rows and are queued on commit like any other.
    """
    relayed = 0
    cutoff = utcnow() - older_than  # fixed for the run: rows relayed now are newer and not read again
    sequenced = sequence(ctx.store, staged_before=cutoff)
    if sequenced:
        log.info("moved %d staged signals into the log", sequenced)
    report_refusals(ctx)
    ob = t.outbox.c
    while True:
        with ctx.store.engine.connect() as connection:
            ids = list(
                connection.execute(
                    select(ob.event_id)
                    .where(func.coalesce(ob.enqueued_at, ob.created_at) <= cutoff)
                    .order_by(ob.position)
                    .limit(batch)
                ).scalars()
            )
        if not ids:
            return relayed
        accepted = []
        for event_id in ids:
            if not ctx.queue.enqueue_event(event_id):
                break
            accepted.append(event_id)
        if accepted:
            with ctx.store.engine.begin() as connection:
                connection.execute(
                    update(t.outbox)
                    .where(ob.event_id.in_(accepted))
                    .values(enqueued_at=utcnow(), attempts=ob.attempts + 1)
                )
        relayed += len(accepted)
        if len(accepted) < len(ids):
            left = len(ids) - len(accepted)
            log.warning("queue unreachable; %d outbox rows wait for the next relay run", left)
            return relayed


def relay_soon(engine: Engine, event_ids: list[str]) -> None:
    """Mark outbox rows whose enqueue just failed, so the next relay run takes them at once."""
    with engine.begin() as connection:
        connection.execute(
            update(t.outbox).where(t.outbox.c.event_id.in_(event_ids)).values(enqueued_at=LONG_AGO)
        )


class RelayThread(threading.Thread):
    """Runs relay_outbox every `interval` seconds until stopped (so a lone worker recovers lost work)."""

    def __init__(
        self, ctx: JobContext, interval: float = RELAY_INTERVAL_S, older_than: timedelta = RELAY_GRACE
    ) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.older_than = older_than
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                count = relay_outbox(self.ctx, self.older_than)
            except Exception:  # a database blip must not end the thread; the next run tries again
                log.exception("outbox relay run failed")
                continue
            if count:
                log.info("relayed %d outbox rows", count)

    def stop(self) -> None:
        """Ask the thread to end after its current run."""
        self._stop_event.set()
