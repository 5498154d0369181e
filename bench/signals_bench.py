"""POST /signals under load, next to a bare endpoint that only inserts one row per request.

Run by hand: `python bench/signals_bench.py [--seconds 10] [--rounds 2] [--clients 32 | --rate 500]`.

It creates a scratch Postgres database, then starts two real uvicorn processes on loopback ports:

- the app, exactly as `crm web` serves it (Postgres, the RQ queue on Redis, SIGNALS_SECRET set);
- the baseline: a FastAPI app with one route that reads the body and inserts it as one row with
  psycopg (a pool of connections, run off the event loop the same way), and nothing else.

Both get the same load from one aiohttp client process: `--clients` concurrent connections sending
Standard Webhooks signed signals (a new webhook-id each; customers drawn from a pool, so some signals
create a customer and some find one) for `--seconds`, alternating baseline and app for `--rounds`
rounds so that drift in the machine's load hits both. Reported: throughput, p50 and p99 latency as
the client saw them, the app/baseline ratio, and each process's CPU time per request answered (on a
shared machine the rates move with the neighbours' load; CPU per request moves less, and the app's
against the baseline's in the same run is what compares).

Back-to-back clients keep both servers saturated, so their p99 is the queue the clients keep full.
With `--rate` each target gets the same open-loop load instead: a request every 1/rate s whatever the
answers, each timed from when it was due. That gives the latency at a load below saturation; the
throughput is then the rate, and the ratio says nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit import free_port, machine  # noqa: E402

from bot.cli_base import freeze_startup_objects  # noqa: E402
from bot.inbound.verify import sign_standard_webhook  # noqa: E402
from store.db import make_engine, migrate  # noqa: E402

PG_ADMIN = os.environ.get("CRM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CRM_BENCH_REDIS", "redis://127.0.0.1:6379/3")
SECRET = "whsec_" + "YmVuY2htYXJrIHNpZ25pbmcga2V5IDMyIGJ5dGVzIQ=="
# Customers the signals are about: enough that early signals mostly create customers and later ones
# mostly find them, as a real stream does.
CUSTOMERS = 2_000
# Seconds of load before measuring, so connection set-up and pool growth are not in the figures.
WARMUP_S = 2.0
# Same ceiling as SQLAlchemy's default pool (5 + 10 overflow), so neither side waits on connections
# the other has.
BARE_POOL = 15
# Connections the open-loop client may hold: enough that requests never wait in the client at the
# rates measured, so what queues, queues in the server.
OPEN_LOOP_CONNECTIONS = 256


# -- the baseline server -----------------------------------------------------------------------------


def bare_app(dsn: str) -> FastAPI:
    """A FastAPI app whose one route inserts the raw body as one row (the cost floor of an intake)."""
    pool: queue.Queue[psycopg.Connection] = queue.Queue()
    for _ in range(BARE_POOL):
        pool.put(psycopg.connect(dsn, autocommit=True))

    def insert(webhook_id: str, body: bytes) -> None:
        connection = pool.get()
        try:
            connection.execute(
                "INSERT INTO bench_rows (webhook_id, body) VALUES (%s, %s)", (webhook_id, body.decode())
            )
        finally:
            pool.put(connection)

    app = FastAPI()

    @app.post("/signals", status_code=202)
    async def bare(request: Request) -> JSONResponse:
        body = await request.body()
        await run_in_threadpool(insert, request.headers.get("webhook-id", ""), body)
        return JSONResponse({"ok": True}, status_code=202)

    return app


def serve_bare(dsn: str, port: int) -> None:
    import uvicorn

    # Served as `crm web` serves the app: uvloop when installed, no access log, startup objects frozen.
    app = bare_app(dsn)
    freeze_startup_objects()
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False)


def run_sequencer(dsn: str, redis_url: str) -> None:
    """What `crm worker` does with the kicked sequence_intake jobs: take each job the app's kicker
    queues and move every staged signal into the log (its own process, so its CPU competes with the
    app's as in production). It waits for the kicks, as the worker does, instead of polling the table:
    polling cost ~12% of a core with nothing to do."""
    import redis
    from rq import Queue

    from jobs.intake import SEQUENCE_LINGER_S
    from jobs.queue import DECISIONS
    from jobs.redis_queue import queue_name
    from store.intake import sequence
    from store.uow import EventStore

    store = EventStore(make_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1)))
    connection = redis.Redis.from_url(redis_url)
    kicks = Queue(queue_name(DECISIONS), connection=connection).key
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    freeze_startup_objects()  # as `crm worker` does once started
    while True:
        if connection.blpop([kicks], timeout=1) is not None:
            sequence(store, linger=SEQUENCE_LINGER_S)


def backlog_of(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*) FROM intake WHERE position IS NULL").fetchone()
    return int(row[0]) if row else 0


# -- the load ----------------------------------------------------------------------------------------


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    # Every 202 of the round, warm-up included, and the CPU seconds each process spent over the same
    # span: together, CPU per request.
    answered: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.seconds += other.seconds
        self.answered += other.answered
        for name, seconds in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds

    def record(self, ok: bool, seconds: float, measured: bool) -> None:
        """One answer: counted for CPU per request, and its latency (or error) when in the measured span."""
        self.answered += ok
        if measured:
            if ok:
                self.latencies.append(seconds)
            else:
                self.errors += 1

    def cpu_ms_per_request(self, name: str) -> float:
        return self.cpu.get(name, 0.0) / self.answered * 1000 if self.answered else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000 if ordered else float("nan")


def make_signal(rng: random.Random) -> tuple[str, bytes, dict[str, str]]:
    n = rng.randrange(CUSTOMERS)
    body = {
        "type": rng.choice(["lead.created", "message.received"]),
        "customer": {"name": f"Customer {n}", "email": f"buyer{n}@company{n}.example"},
        "text": "Hi, we'd like a quote for 12 seats — can you send one by Friday?",
        "data": {"channel": "web"},
    }
    raw = json.dumps(body).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign_standard_webhook(SECRET, webhook_id, now, raw),
    }
    return webhook_id, raw, headers


async def post_signal(session: Any, url: str, rng: random.Random) -> bool:
    """POST one new signed signal; whether it was accepted (202)."""
    _, body, headers = make_signal(rng)
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return bool(response.status == 202)


async def load(url: str, clients: int, seconds: float, seed: int) -> Result:
    import aiohttp

    result = Result()
    start = time.perf_counter()
    measure_from = start + WARMUP_S
    stop = measure_from + seconds

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            ok = await post_signal(session, url, rng)
            done = time.perf_counter()
            result.record(ok, done - sent, measured=sent >= measure_from and done <= stop)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    result.seconds = seconds
    return result


async def load_at_rate(url: str, rate: float, seconds: float, seed: int) -> Result:
    """Open loop: a request every 1/rate s whatever the answers, each timed from when it was due (so a
    server that falls behind shows its whole queue in the latencies, not fewer requests)."""
    import aiohttp

    result = Result()
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + WARMUP_S
    stop = measure_from + seconds

    async def send(session: aiohttp.ClientSession, due: float) -> None:
        ok = await post_signal(session, url, rng)
        result.record(ok, loop.time() - due, measured=due >= measure_from)

    connector = aiohttp.TCPConnector(limit=OPEN_LOOP_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        in_flight: set[asyncio.Task[None]] = set()  # done ones dropped: 10 s of them filled the heap
        due = start
        while due < stop:
            await asyncio.sleep(max(0.0, due - loop.time()))
            task = asyncio.ensure_future(send(session, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            due += 1 / rate
        await asyncio.gather(*in_flight)
    result.seconds = seconds
    return result


# -- orchestration -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"server exited early: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not start")


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round and target")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: send this many requests per second to each target whatever the answers "
        "(latency at a load below saturation) instead of --clients back-to-back clients",
    )
    parser.add_argument("--serve-bare", nargs=2, metavar=("DSN", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--sequencer",
        choices=["during", "after"],
        default="during",
        help="move staged signals into the log while the load runs (as a busy worker would), or after it",
    )
    parser.add_argument("--sequence", nargs=2, metavar=("DSN", "REDIS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare[0], int(args.serve_bare[1]))
        return
    if args.sequence:
        run_sequencer(*args.sequence)
        return

    name = f"crm_bench_signals_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    migrate(engine)
    engine.dispose()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, webhook_id TEXT NOT NULL, "
            "body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()

    app_port, bare_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TELEGRAM_"))}
    app_env = {
        **env,
        "DATABASE_URL": dsn,
        "REDIS_URL": REDIS_URL,
        "SIGNALS_SECRET": SECRET,
        "PORT": str(app_port),
        "CRM_DATA_DIR": f"/tmp/{name}",
        # `crm web` mounts the Slack route; it needs a signing secret to build (unused here).
        "SLACK_SIGNING_SECRET": "bench-unused",
    }
    servers = {
        "baseline": start([sys.executable, __file__, "--serve-bare", dsn, str(bare_port)], env),
        "app": start([sys.executable, "-c", "from bot.cli import main; main()", "web"], app_env),
    }
    sequencer = [sys.executable, __file__, "--sequence", dsn, REDIS_URL]
    if args.sequencer == "during":
        servers["sequencer"] = start(sequencer, env)
    urls = {
        "baseline": f"http://127.0.0.1:{bare_port}/signals",
        "app": f"http://127.0.0.1:{app_port}/signals",
    }
    results = {"baseline": Result(), "app": Result()}
    # The load's own full collections walked every object this process imported (the app's modules
    # among them) for 85-120 ms each, mid-round: every request in flight then looked that much slower,
    # on both targets alike. Frozen, they stay out of the collector's sight, and the collector waits
    # for the end of each round (a round's garbage is a few megabytes).
    freeze_startup_objects()
    try:
        for target in ("baseline", "app"):
            wait_until_up(urls[target], servers[target])
        for round_number in range(args.rounds):
            for target in ("baseline", "app"):
                before = {name: cpu_seconds(process.pid) for name, process in servers.items()}
                gc.disable()
                if args.rate:
                    result = asyncio.run(
                        load_at_rate(urls[target], args.rate, args.seconds, seed=round_number)
                    )
                else:
                    result = asyncio.run(load(urls[target], args.clients, args.seconds, seed=round_number))
                gc.enable()
                gc.collect()
                result.cpu = {n: cpu_seconds(servers[n].pid) - before[n] for n in before}
                print(
                    f"round {round_number + 1} {target:8s}: {result.throughput:7.1f} req/s  "
                    f"p50 {result.percentile(0.5):6.1f} ms  p99 {result.percentile(0.99):7.1f} ms  "
                    f"errors {result.errors}  CPU ms/request: "
                    + " ".join(f"{n} {result.cpu_ms_per_request(n):.2f}" for n in sorted(result.cpu)),
                    flush=True,
                )
                results[target].merge(result)
        loaded = time.perf_counter()
        left = backlog_of(dsn)
        if args.sequencer == "after":
            servers["sequencer"] = start(sequencer, env)
        while backlog_of(dsn):
            time.sleep(0.1)
        caught_up = time.perf_counter() - loaded
        with psycopg.connect(dsn) as connection:
            events = connection.execute("SELECT count(*) FROM events WHERE actor = 'outside'").fetchone()
            rows = connection.execute("SELECT count(*) FROM bench_rows").fetchone()
        print(f"recorded: {events[0] if events else 0} signal events, {rows[0] if rows else 0} baseline rows")
        print(
            f"sequencing: {left} signals staged when the load stopped, all in the log {caught_up:.1f} s later"
        )
    finally:
        for process in servers.values():
            stop(process)
        redis.Redis.from_url(REDIS_URL).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base, app = results["baseline"], results["app"]
    print()
    print(machine())
    offered = f"open loop at {args.rate:g} requests/s" if args.rate else f"{args.clients} clients"
    print(
        f"{offered}, {args.rounds} rounds x {args.seconds:.0f} s per target, "
        f"sequencer {args.sequencer} the load"
    )
    print("| endpoint | req/s | p50 | p99 | errors |")
    print("|---|---|---|---|---|")
    for label, result in (("bare insert (baseline)", base), ("POST /signals", app)):
        print(
            f"| {label} | {result.throughput:.1f} | {result.percentile(0.5):.1f} ms | "
            f"{result.percentile(0.99):.1f} ms | {result.errors} |"
        )
    ratio = app.throughput / base.throughput if base.throughput else float("nan")
    if args.rate:
        print(f"app p99 {app.percentile(0.99):.1f} ms at {args.rate:g} requests/s (goal < 50 ms)")
    else:
        print(
            f"ratio app/baseline: {ratio:.2f} (goal >= 0.7); "
            f"app p99 {app.percentile(0.99):.1f} ms (goal < 50 ms)"
        )
    print(
        "CPU per request: "
        f"baseline server {base.cpu_ms_per_request('baseline'):.2f} ms, "
        f"app {app.cpu_ms_per_request('app'):.2f} ms"
        + (
            f", sequencer {app.cpu_ms_per_request('sequencer'):.2f} ms during the app rounds "
            f"({base.cpu.get('sequencer', 0.0):.1f} s of CPU during the baseline rounds)"
            if "sequencer" in app.cpu
            else ""
        )
    )
    print(f"statistics: app mean {statistics.fmean(app.latencies) * 1000:.1f} ms" if app.latencies else "")


if __name__ == "__main__":
    main()
