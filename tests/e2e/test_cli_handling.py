"""What a short command appends is handled like a webhook's signal, whichever process runs the jobs.

Each test runs the real `crm` processes one after the other, as a person would in a shell: the next
process shows what the first one's events led to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text

from jobs.digest import claim_slot, prepare
from store.db import make_engine
from store.uow import EventStore
from tests.e2e.test_run_and_demo import Process, offline_env
from tests.integration.jobs_harness import RedisServer

CRM = [sys.executable, "-c", "from bot.cli import main; main()"]
CUSTOMERS = "name,email,company\nJonas Becker,jonas@nordlicht.de,Nordlicht\n"
MESSAGE = {
    "type": "message.received",
    "customer": {"email": "jonas@nordlicht.de"},
    "text": "Can you send annual pricing for five seats?",
    "data": {"channel": "email", "subject": "Annual pricing", "message_id": "<p1@nordlicht.de>"},
}


def crm(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CRM + args, input=stdin, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_import_then_signal_then_run_shows_the_proposal_on_the_embedded_default(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    imported = crm(["import", "customers", "c.csv"], env, tmp_path)
    assert imported.returncode == 0, imported.stderr
    sent = crm(["signal", "-"], env, tmp_path, stdin=json.dumps(MESSAGE))
    assert sent.returncode == 0, sent.stderr
    event_id = json.loads(sent.stdout)["event_id"]

    run = Process(["run"], env, tmp_path)
    run.send("/pending")
    assert run.finish() == 0, run.text
    assert "0 waiting" not in run.text, run.text
    assert "Jonas" in run.text and "send_email" in run.text, run.text
    with make_engine(f"sqlite:///{tmp_path / 'data' / 'crm.sqlite3'}").connect() as connection:
        handlers = set(
            connection.execute(
                text("SELECT handler FROM handled_events WHERE event_id = :id"), {"id": event_id}
            ).scalars()
        )
    assert {"memory", "inbox_triage", "memory_curator"} <= handlers, "every handler of the table ran"


def test_a_signal_on_postgres_and_redis_is_handled_by_the_next_worker(tmp_path: Path, pg_url: str) -> None:
    redis = RedisServer()
    redis.start()
    try:
        env = offline_env(tmp_path, DATABASE_URL=pg_url.replace("+psycopg", ""), REDIS_URL=redis.url)
        (tmp_path / "c.csv").write_text(CUSTOMERS)
        assert crm(["import", "customers", "c.csv"], env, tmp_path).returncode == 0
        sent = crm(["signal", "-"], env, tmp_path, stdin=json.dumps(MESSAGE))
        assert sent.returncode == 0, sent.stderr
        event_id = json.loads(sent.stdout)["event_id"]
        worker = crm(["worker", "--burst"], env, tmp_path)
        assert worker.returncode == 0, worker.stderr
    finally:
        redis.stop()
    with make_engine(pg_url).connect() as connection:
        kinds = set(
            connection.execute(
                text("SELECT kind FROM proposals WHERE event_id = :id"), {"id": event_id}
            ).scalars()
        )
        outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    assert "send_email" in kinds, "the worker ran the agents on the signal `crm signal` appended"
    assert outbox == 0


def test_replay_after_a_digest_succeeds_and_an_unknown_type_is_one_line(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    assert crm(["import", "customers", "c.csv"], env, tmp_path).returncode == 0
    run = Process(["run"], env, tmp_path)
    run.send("/digest")
    assert run.finish() == 0, run.text
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'crm.sqlite3'}")
    store = EventStore(engine)
    slot = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert claim_slot(store, slot, prepare(store, slot, ZoneInfo("UTC"), tmp_path), "terminal")
    verified = crm(["replay", "--verify"], env, tmp_path)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO events (id, stream, type, version, payload, actor, source, occurred_at,"
                " recorded_at, idempotency_key) VALUES ('u1', 'x', 'gizmo.frobbed', 1, '{}',"
                " 'system', 'internal', '2026-11-02 08:00:00', '2026-11-02 08:00:00', 'gizmo:1')"
            )
        )
    failed = crm(["replay"], env, tmp_path)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "'gizmo.frobbed'" in failed.stderr and "upgrade" in failed.stderr
    assert len([line for line in failed.stderr.splitlines() if "error" in line]) == 1


def test_crm_signal_leaves_no_work_behind_in_its_outbox(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    assert crm(["import", "customers", "c.csv"], env, tmp_path).returncode == 0
    sent = crm(["signal", "-"], env, tmp_path, stdin=json.dumps(MESSAGE))
    assert sent.returncode == 0, sent.stderr
    with make_engine(f"sqlite:///{tmp_path / 'data' / 'crm.sqlite3'}").connect() as connection:
        outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
        proposals = connection.execute(text("SELECT count(*) FROM proposals")).scalar_one()
    assert outbox == 0 and proposals >= 1, "handled before the command returned"
    assert os.path.exists(tmp_path / "data" / "crm.sqlite3")
