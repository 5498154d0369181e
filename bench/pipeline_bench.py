"""Signal → processed latency through the RQ pipeline, next to RQ's own no-op job throughput.

Run by hand: `/work/venv/bin/python bench/pipeline_bench.py [--signals 400] [--noop 1000]`.
It creates a scratch Postgres database and its own redis-server on a free loopback port, starts two
`crm worker` processes (the default in-process worker, or `--fork` ones) and measures, in the same run:

1. baseline: RQ's own throughput for no-op jobs (`os.getpid`) through the same two workers;
2. pipeline throughput: signals appended (store.record_signal + queue.enqueue_event, the intake path)
   as fast as 4 producer threads can, until every one is in processed_events;
3. pipeline latency: signals paced well below capacity, each timed from just before its append until
   its processed_events row was written (processed_at, same machine clock).

process_event runs with no subscribers (memory and agents are other issues), so this measures the
pipeline's own cost: the log append, the queue hop, the worker, and the processed-record transaction.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit import free_port, machine  # noqa: E402

from jobs.queue import SIGNALS  # noqa: E402
from jobs.redis_queue import RedisJobQueue, queue_name  # noqa: E402
from store import tables as t  # noqa: E402
from store.db import make_engine, migrate  # noqa: E402
from store.events import CustomerRef, LeadCreated  # noqa: E402
from store.uow import EventStore  # noqa: E402

PG_ADMIN = os.environ.get("CRM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
WORKERS = 2
PRODUCERS = 4
PACED_INTERVAL_S = 0.1  # well below capacity, so latency is the pipeline's, not a backlog's


def wait_until(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, fork: bool) -> None:
        self.fork = fork
        self.dbname = f"crm_bench_{uuid.uuid4().hex[:8]}"
        self.db_url = (
            PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + self.dbname
        )
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Bench:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.dbname}"')
        self.engine = make_engine(self.db_url, pool_size=PRODUCERS + 2)
        migrate(self.engine)
        self.store = EventStore(self.engine)
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        self.processes.append(redis)
        self.redis = Redis.from_url(self.redis_url)
        wait_until(self._redis_up, 10)
        self.queue = RedisJobQueue.from_url(self.redis_url)
        env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "CRM_DATA_DIR": f"/tmp/{self.dbname}",
            "PYTHONPATH": str(ROOT),
        }
        for n in range(WORKERS):
            args = [
                sys.executable,
                "-c",
                "from bot.cli import main; main()",
                "worker",
                "--no-relay",
                "--name",
                f"bench-{n}-{self.dbname}",
            ]
            if self.fork:
                args.append("--fork")
            self.processes.append(
                subprocess.Popen(
                    args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        wait_until(lambda: len(self.redis.smembers("rq:workers")) == WORKERS, 60)
        return self

    def _redis_up(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:
            return False

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def noop_throughput(self, count: int) -> float:
        queue = Queue(queue_name(SIGNALS), connection=self.redis)
        finished = f"rq:finished:{queue_name(SIGNALS)}"
        before = self.redis.zcard(finished)
        started = time.perf_counter()
        with self.redis.pipeline() as pipe:
            for _ in range(count):
                queue.enqueue_call("os.getpid", pipeline=pipe, result_ttl=600)
            pipe.execute()
        wait_until(lambda: self.redis.zcard(finished) - before >= count, 600)
        return count / (time.perf_counter() - started)

    def processed(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(t.processed_events)).scalar_one())

    def submit(self, n: int) -> tuple[str, float]:
        submitted = time.time()
        signal_ = LeadCreated(customer=CustomerRef(email=f"lead@c{n}.bench.example", name=f"Lead {n}"))
        event = self.store.record_signal("lead.created", signal_, f"bench:{n}", source="bench").event
        if not self.queue.enqueue_event(event.id):
            raise RuntimeError("redis refused the job")
        return event.id, submitted

    def pipeline_throughput(self, count: int, offset: int) -> float:
        before = self.processed()
        started = time.perf_counter()
        numbers = iter(range(offset, offset + count))
        lock = threading.Lock()

        def produce() -> None:
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                self.submit(n)

        threads = [threading.Thread(target=produce) for _ in range(PRODUCERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.append_rate = count / (time.perf_counter() - started)
        wait_until(lambda: self.processed() - before >= count, 600)
        return count / (time.perf_counter() - started)

    def paced_latency(self, count: int, offset: int) -> list[float]:
        submitted: dict[str, float] = {}
        for n in range(offset, offset + count):
            event_id, at = self.submit(n)
            submitted[event_id] = at
            time.sleep(PACED_INTERVAL_S)
        wait_until(lambda: self.processed() >= offset + count, 120)
        pe = t.processed_events.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(pe.event_id, pe.processed_at).where(pe.event_id.in_(list(submitted)))
            )
            done = {event_id: processed_at for event_id, processed_at in rows}
        return [(done[e].timestamp() - at) * 1000 for e, at in submitted.items()]


def run(args: argparse.Namespace) -> dict[str, object]:
    with Bench(fork=args.fork) as bench:
        bench.noop_throughput(100)  # warm the workers
        noop = bench.noop_throughput(args.noop)
        throughput = bench.pipeline_throughput(args.signals, offset=0)
        latencies = bench.paced_latency(args.paced, offset=args.signals)
    return {
        "worker": "forking Worker (--fork)" if args.fork else "in-process worker (default)",
        "noop_jobs_per_s": noop,
        "signals_per_s": throughput,
        "ratio": throughput / noop,
        "append_per_s": bench.append_rate,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop", type=int, default=1000, help="no-op jobs for the RQ baseline")
    parser.add_argument("--signals", type=int, default=400, help="signals for the throughput run")
    parser.add_argument("--paced", type=int, default=100, help="paced signals for the latency run")
    parser.add_argument("--fork", action="store_true", help="run the workers with --fork")
    args = parser.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC).isoformat(timespec='seconds')}")
    result = run(args)
    print(
        f"{result['worker']}, {WORKERS} workers, Postgres: RQ no-op {result['noop_jobs_per_s']:.0f} jobs/s; "
        f"signal→processed {result['signals_per_s']:.0f} signals/s ({result['ratio']:.2f}x no-op) with "
        f"{PRODUCERS} producers (appends alone {result['append_per_s']:.0f}/s); "
        f"paced latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms ({args.paced} signals, one per {PACED_INTERVAL_S * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
