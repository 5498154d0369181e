"""The daily digest on a big log, and `crm run`'s start-up time and idle memory.

Run by hand: `/work/venv/bin/python bench/digest_bench.py [--events 1000000] [--proposals 5000]`.

1. Digest: a dedicated Postgres database gets N synthetic events with COPY (the replay benchmark's
   generator: about one customer per 20 events) and the projections from `crm replay`, plus a few
   thousand proposals in every state. Then, in the same run:
   - baseline: `SELECT count(*) FROM events`, the cheapest thing that touches the whole log;
   - the digest (`jobs.digest.build_digest`) and its chart (`render_chart`), five times each.
   The digest must not grow with the log: it reads projections only (goal < 1 s).
2. `crm run` from a fresh data directory, stdin a pipe kept open: seconds until it says it is running
   and its resident memory once idle (goal < 250 MB), next to a bare `python -c pass` in the same run.

The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from replay_bench import ADMIN_DSN, load, machine

from jobs import digest as digests
from store import replay
from store.db import make_engine, migrate

NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
STATES = ("pending", "pending", "approved", "executed", "executed", "rejected", "expired", "snoozed")


def add_proposals(dsn: str, count: int) -> None:
    """Proposals in every state over the last three weeks, attached to existing customers."""
    rng = random.Random(11)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM customers WHERE merged_into IS NULL LIMIT 20000")
        customers = [row[0] for row in cursor.fetchall()]
        columns = (
            "id, customer_id, agent, kind, state, verdict, rules, proposed, decision, decided_by, "
            "decided_at, cost_usd, attempts, created_at, updated_at, position"
        )
        with cursor.copy(f"COPY proposals ({columns}) FROM STDIN") as copy:
            for n in range(count):
                created = NOW - timedelta(minutes=rng.randrange(0, 21 * 24 * 60))
                state = STATES[n % len(STATES)]
                decided = (
                    None
                    if state in {"pending", "snoozed"}
                    else created + timedelta(minutes=rng.randrange(1, 600))
                )
                copy.write_row(
                    (
                        f"prp_bench{n:08d}",
                        rng.choice(customers),
                        rng.choice(
                            ("inbox_triage", "billing_monitor", "renewal_nudges", "lead_qualification")
                        ),
                        rng.choice(("send_email", "create_task", "add_note")),
                        state,
                        "approval",
                        json.dumps([]),
                        json.dumps({"rationale": "bench", "confidence": 0.8, "cost": {"usd": 0.001}}),
                        None if decided is None else rng.choice(("approved", "edited", "rejected")),
                        None if decided is None else "slack:U1",
                        decided,
                        0.001,
                        0,
                        created,
                        decided or created,
                        0,
                    )
                )
        cursor.execute("ANALYZE")


def timed(run: object, times: int = 5) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


def bench_digest(events: int, proposals: int) -> None:
    name = f"crm_bench_digest_{os.getpid()}"
    base = ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        migrate(engine)
        print(f"loaded {events:,} events with COPY in {load(dsn, events):.1f}s")
        started = time.perf_counter()
        replay.replay(engine)
        print(f"projections rebuilt in {time.perf_counter() - started:.1f}s")
        add_proposals(dsn, proposals)
        with engine.connect() as connection:
            customers = connection.exec_driver_sql("SELECT count(*) FROM customers").scalar_one()
        print(f"{customers:,} customers, {proposals:,} proposals")

        def scan() -> None:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()

        def build() -> None:
            with engine.connect() as connection:
                digests.build_digest(connection, NOW, ZoneInfo("Europe/Berlin"))

        chart_dir = Path(tempfile.mkdtemp())

        def chart() -> None:
            with engine.connect() as connection:
                series = digests.chart_series(connection, NOW, ZoneInfo("Europe/Berlin"))
            digests.render_chart(series, chart_dir / "digest.png")

        baseline, built, drawn = timed(scan), timed(build), timed(chart)
        med = statistics.median
        print(f"baseline SELECT count(*) FROM events: median {med(baseline) * 1000:.0f} ms")
        print(
            f"digest data: median {med(built) * 1000:.0f} ms, max {max(built) * 1000:.0f} ms "
            f"({med(built) / med(baseline):.2f}x the log count)"
        )
        print(f"digest chart: median {med(drawn) * 1000:.0f} ms, max {max(drawn) * 1000:.0f} ms")
        total = med(built) + med(drawn)
        print(f"digest total: {total * 1000:.0f} ms (goal < 1000 ms): {'met' if total < 1 else 'MISSED'}")
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_startup(port: int) -> None:
    started = time.perf_counter()
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    time.sleep(1)
    bare_rss = rss_mb(bare.pid)
    bare.wait()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "CRM_DATA_DIR": data, "PORT": str(port)}
        for name in ("DATABASE_URL", "REDIS_URL", "CHROMA_URL", "SLACK_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"):
            env.pop(name, None)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", "from bot.cli import main; main()", "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "chatops-crm is running" in line:
                break
        ready = time.perf_counter() - started
        time.sleep(5)  # idle: scheduler and web up, nothing to do
        idle_rss = rss_mb(process.pid)
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)
    print(f"bare python: {bare_rss:.0f} MB resident")
    print(f"crm run: first prompt after {ready:.2f}s; idle resident memory {idle_rss:.0f} MB (goal < 250 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--proposals", type=int, default=5_000)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"machine: {machine()}")
    bench_startup(args.port)
    bench_digest(args.events, args.proposals)


if __name__ == "__main__":
    main()
