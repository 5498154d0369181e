"""Fault test: Redis goes away while signals arrive; after it is back, every signal is processed once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from jobs import context
from jobs.handlers import MEMORY
from jobs.redis_queue import RedisJobQueue
from jobs.relay import relay_outbox
from jobs.worker import project_queues
from store import tables as t
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import RecordingSubscriber, RedisServer, app_for, lead

SIGNALS_WHILE_UP = 200  # queued, then lost: the server restarts without persistence
SIGNALS_WHILE_DOWN = 800
TOTAL = SIGNALS_WHILE_UP + SIGNALS_WHILE_DOWN


def _count(store: EventStore, table: t.Table) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.slow  # 1,000 real appends and jobs per backend: 30-85 s each on the shared machine
def test_signals_recorded_while_redis_is_down_are_all_processed_exactly_once_after_it_returns(
    store: EventStore, make_settings: type[Settings], redis_server: RedisServer
) -> None:
    queue = RedisJobQueue.from_url(redis_server.url)
    recorder = RecordingSubscriber()
    ctx = app_for(store, make_settings(), queue, {MEMORY: recorder})
    context.install(ctx)
    try:
        up = [lead(store, n) for n in range(SIGNALS_WHILE_UP)]
        assert all(queue.enqueue_event(event.id) for event in up)

        redis_server.stop()  # the queued jobs vanish with it
        started = time.monotonic()
        down = [lead(store, n) for n in range(SIGNALS_WHILE_UP, TOTAL)]
        assert not any(queue.enqueue_event(event.id) for event in down)
        assert time.monotonic() - started < 60  # appends never wait on the dead Redis
        assert _count(store, t.outbox) == TOTAL
        assert relay_outbox(ctx, older_than=timedelta(0)) == 0  # still down: nothing relayed, no error

        redis_server.start()
        relayed = 0
        deadline = time.monotonic() + 30
        while relayed < TOTAL and time.monotonic() < deadline:  # the producer's outage backoff passes
            relayed += relay_outbox(ctx, older_than=timedelta(0))
            time.sleep(0.2)
        assert relayed == TOTAL
        assert relay_outbox(ctx, older_than=timedelta(0)) == TOTAL  # rows kept until processed…
        assert sum(queue.depth().values()) == TOTAL  # …but each event is queued once

        SimpleWorker(project_queues(queue.connection), connection=queue.connection).work(
            burst=True, logging_level="WARNING"
        )

        assert _count(store, t.processed_events) == TOTAL
        assert _count(store, t.outbox) == 0
        assert len(recorder.calls) == TOTAL
        assert set(recorder.calls) == {event.id for event in up + down}
        assert relay_outbox(ctx, older_than=timedelta(0)) == 0
    finally:
        context.uninstall()
        queue.connection.close()
