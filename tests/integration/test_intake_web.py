"""The web routes' real path: answered once staged, sequenced by the kicked job (or the relay), processed
once. No settling client here: the test sees what a sender sees, and waits for the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rq import SimpleWorker
from sqlalchemy import func, select

from bot.bootstrap import App
from bot.web import create_app
from bot.web.routes import IN_LOOP_BYTES
from jobs import context
from jobs.handlers import MEMORY
from jobs.intake import SEQUENCE_INTAKE
from jobs.queue import DECISIONS, SIGNALS
from jobs.relay import relay_outbox
from jobs.worker import project_queues
from store import tables as t
from tests.inbound_support import signal_body, signed_headers
from tests.integration.jobs_harness import RecordingSubscriber, RedisServer, wait_for
from tests.integration.web_harness import web_container


def post(client: TestClient, n: int, webhook_id: str | None = None) -> dict[str, Any]:
    body = signal_body(customer={"name": f"Lead {n}", "email": f"lead{n}@c{n}.example"}, text=f"hi {n}")
    response = client.post("/signals", content=body, headers=signed_headers(body, webhook_id))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def logged_ids(container: App) -> set[str]:
    query = select(t.events.c.id).where(t.events.c.actor == "outside")
    with container.engine.connect() as connection:
        return set(connection.execute(query).scalars())


def count(container: App, table: t.Table) -> int:
    with container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def inprocess(make_settings: Any, db_url: str) -> Iterator[App]:
    """`crm run`'s shape: no REDIS_URL, jobs run on this process's threads."""
    built = web_container(make_settings, db_url, None, handlers={MEMORY: RecordingSubscriber()})
    yield built
    built.close()


def test_in_process_a_burst_is_answered_then_sequenced_and_processed_once_each(inprocess: App) -> None:
    with TestClient(create_app(inprocess)) as client:
        answers = [post(client, n) for n in range(40)]
        redelivered = post(client, 0, webhook_id=None)  # another id: another signal
        answers.append(redelivered)
    promised = {a["event_id"] for a in answers}
    assert len(promised) == 41 and not any(a["duplicate"] for a in answers)

    wait_for(lambda: logged_ids(inprocess) == promised, 30, "every answered id in the log")
    assert inprocess.queue.join(timeout=60)  # type: ignore[attr-defined]
    recorder: RecordingSubscriber = inprocess.handlers[MEMORY]  # type: ignore[assignment]
    signal_calls = [event_id for event_id in recorder.calls if event_id in promised]
    assert sorted(signal_calls) == sorted(promised), "each signal processed exactly once"
    assert count(inprocess, t.outbox) == 0


def test_on_postgres_small_signals_stage_in_the_event_loop_and_large_ones_in_a_thread(
    make_settings: Any, pg_url: str
) -> None:
    container = web_container(make_settings, pg_url, "redis://127.0.0.1:9/0")
    app = create_app(container)
    large = signal_body(customer={"name": "Big", "email": "big@c.example"}, text="x" * (IN_LOOP_BYTES + 10))
    try:
        with TestClient(app) as client:
            stager = app.state.stager
            assert stager is not None, "the lifespan opened the app's async stager"
            small = [post(client, n) for n in range(3)]
            in_loop = stager.pool.get_stats()["requests_num"]
            response = client.post("/signals", content=large, headers=signed_headers(large))
            assert response.status_code == 202, response.text
            assert stager.pool.get_stats()["requests_num"] == in_loop, "the large body went to a thread"
        assert in_loop == 3 and app.state.stager is None, "one staging each; closed with the app"
        promised = {a["event_id"] for a in small} | {response.json()["event_id"]}
        with container.engine.connect() as connection:
            staged = set(connection.execute(select(t.intake.c.event_id)).scalars())
        assert staged == promised
    finally:
        container.close()


def test_a_redelivery_while_still_staged_answers_the_same_id(make_settings: Any, db_url: str) -> None:
    # REDIS_URL at a dead port: the kick is lost, so the signal stays staged until the relay runs.
    container = web_container(make_settings, db_url, "redis://127.0.0.1:9/0")
    try:
        with TestClient(create_app(container)) as client:
            first = post(client, 1, webhook_id="msg_staged")
            again = post(client, 1, webhook_id="msg_staged")
        assert (again["event_id"], again["duplicate"]) == (first["event_id"], True)
        assert logged_ids(container) == set() and count(container, t.intake) == 1
    finally:
        container.close()


@pytest.fixture
def on_redis(make_settings: Any, db_url: str, redis_server: RedisServer) -> Iterator[App]:
    """`crm web` and `crm worker`'s shape: RQ on a Redis of the test's own, this process the worker."""
    container = web_container(
        make_settings, db_url, redis_server.url, handlers={MEMORY: RecordingSubscriber()}
    )
    context.install(container)
    yield container
    context.uninstall()
    container.close()


def work_off(container: App) -> None:
    """Run every queued job, as `crm worker --burst` would."""
    connection = container.queue.connection  # type: ignore[attr-defined]
    SimpleWorker(project_queues(connection), connection=connection).work(burst=True, logging_level="WARNING")


def test_with_redis_the_kick_queues_one_job_that_a_worker_runs(on_redis: App) -> None:
    recorder: RecordingSubscriber = on_redis.handlers[MEMORY]  # type: ignore[assignment]
    with TestClient(create_app(on_redis)) as client:
        answers = [post(client, n) for n in range(5)]
    queue = on_redis.queue.queues[DECISIONS]  # type: ignore[attr-defined]

    def kicked() -> bool:
        return any(job.func_name == SEQUENCE_INTAKE for job in queue.get_jobs())

    wait_for(kicked, 10, "the sequencing job on the decisions queue")
    assert logged_ids(on_redis) == set(), "answered, not yet in the log"

    work_off(on_redis)
    assert logged_ids(on_redis) == {a["event_id"] for a in answers}
    assert sorted(recorder.calls) == sorted(a["event_id"] for a in answers), "processed in the same burst"
    assert on_redis.queue.depth()[SIGNALS] == 0


@pytest.mark.slow  # a few hundred real requests and appends per backend
def test_signals_posted_while_redis_is_down_all_reach_the_log_and_are_processed_once(
    on_redis: App, redis_server: RedisServer
) -> None:
    recorder: RecordingSubscriber = on_redis.handlers[MEMORY]  # type: ignore[assignment]
    redis_server.stop()
    with TestClient(create_app(on_redis)) as client:
        answers = [post(client, n) for n in range(300)]  # all 202: staged, the kicks are lost
    promised = {a["event_id"] for a in answers}
    assert count(on_redis, t.intake) == 300 and logged_ids(on_redis) == set()

    redis_server.start()
    ctx = on_redis
    # The relay sequences the staged rows, then queues their events once the producer's outage
    # backoff has passed.
    wait_for(lambda: relay_outbox(ctx, older_than=timedelta(0)) >= 300, 30, "the relay to queue 300")
    assert logged_ids(on_redis) == promised, "the relay sequenced every staged signal"
    assert on_redis.queue.depth()[SIGNALS] == 300, "each event queued once"

    work_off(on_redis)
    assert sorted(recorder.calls) == sorted(promised), "each processed exactly once"
    assert count(on_redis, t.outbox) == 0
    assert count(on_redis, t.processed_events) == 300
