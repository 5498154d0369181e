"""The undo window rides on the queue: the process that took the tap may die, any worker sends, once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from store import lifecycle as lc
from store import tables as t
from store.db import make_engine
from store.uow import EventStore
from tests.integration.jobs_harness import RedisServer, wait_for
from tests.integration.proposal_helpers import email_proposal, make_customer, record
from tests.standins.smtp import SmtpStandin

ROOT = Path(__file__).resolve().parents[2]
CRM = [sys.executable, "-c", "from bot.cli import main; main()"]

# The process that takes the tap: approves through the command layer, then dies without any cleanup.
TAPPER = """
import os, signal, sys
from bot.bootstrap import bootstrap
from bot.commands import Actor
app = bootstrap()
reply = app.commands.approve(Actor("terminal", "op"), sys.argv[1])
print(reply.text, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def outbox_size(store: EventStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(t.outbox)).scalar_one())


def stack_env(tmp_path: Path, pg_url: str, redis_url: str, smtp_url: str, undo_window: str) -> dict[str, Any]:
    """The environment of the processes of a deployment on Postgres and Redis (the test's own)."""
    return {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "PYTHONPATH": str(ROOT),
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": pg_url.replace("+psycopg", ""),
        "REDIS_URL": redis_url,
        "SMTP_URL": smtp_url,
        "OPERATORS": "terminal:op",
        "UNDO_WINDOW_SECONDS": undo_window,
        "HF_HUB_OFFLINE": "1",
    }


def test_an_approval_is_sent_once_by_a_worker_after_the_tapping_process_died(
    tmp_path: Path, pg_url: str
) -> None:
    store = EventStore(make_engine(pg_url))
    pid = record(store, email_proposal(make_customer(store)))
    redis = RedisServer()
    redis.start()
    worker: subprocess.Popen[str] | None = None
    try:
        with SmtpStandin() as smtp:
            env = stack_env(tmp_path, pg_url, redis.url, smtp.url, undo_window="2")
            tapped = subprocess.run(
                [sys.executable, "-c", TAPPER, pid], env=env, cwd=tmp_path, capture_output=True, text=True
            )
            assert tapped.returncode == -9, tapped.stderr
            assert "Approved." in tapped.stdout and "Undo until" in tapped.stdout, tapped.stdout
            assert smtp.messages == [], "nothing leaves inside the undo window"

            worker = subprocess.Popen(
                [*CRM, "worker"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            wait_for(lambda: len(smtp.messages) >= 1, 60, "the worker to send the approved email")
            time.sleep(3)  # a second send would come within the scheduler's next rounds
            assert len(smtp.messages) == 1
            with store.engine.connect() as connection:
                row = lc.get_proposal(connection, pid)
            assert row is not None and row["state"] == "executed"
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        redis.stop()
        store.engine.dispose()


def test_an_approval_made_while_redis_is_down_is_sent_within_seconds_of_its_return(
    tmp_path: Path, pg_url: str, make_settings: Any
) -> None:
    from bot.bootstrap import bootstrap
    from bot.commands import Actor

    store = EventStore(make_engine(pg_url))
    pid = record(store, email_proposal(make_customer(store)))
    redis = RedisServer()
    redis.start()
    worker: subprocess.Popen[str] | None = None
    try:
        with SmtpStandin() as smtp:
            env = stack_env(tmp_path, pg_url, redis.url, smtp.url, undo_window="0")
            worker = subprocess.Popen(
                [*CRM, "worker"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            tapper = bootstrap(
                make_settings(
                    **{k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "OPERATORS", "UNDO_WINDOW_SECONDS")}
                ),
                migrate_schema=False,
            )
            # The worker first handles the signal that made the customer (loading its models): let it
            # finish, so what is measured is the approval's way back after the outage.
            wait_for(lambda: outbox_size(store) == 0, 120, "the worker to handle the customer's signal")
            redis.kill()
            reply = tapper.commands.approve(Actor("terminal", "op"), pid)
            assert reply.ok, reply.text
            time.sleep(2)
            assert smtp.messages == []
            redis.start()
            back = time.monotonic()
            wait_for(lambda: len(smtp.messages) >= 1, 30, "the approved email after Redis returned")
            assert time.monotonic() - back < 10, "sent within seconds of Redis's return"
            time.sleep(2)
            assert len(smtp.messages) == 1
            tapper.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        redis.stop()
        store.engine.dispose()
