"""Signed Slack Approve clicks → HTTP 200, open loop, against `crm web` on Postgres.

Run by hand:  /work/venv/bin/python -m bench.slack_clicks_bench [--rate 50] [--seconds 60]

What runs: `crm web` as its own process (Postgres, in-process job queue, Slack pointed at the stand-in
Slack API and SMTP at a loopback aiosmtpd, both in this process). Every click approves a different
pending proposal that was posted to the stand-in first, so each one does the real work after the ack:
the compare-and-set decision, chat.update, the ephemeral reply, and the email through SMTP.

Baseline, in the same run: the same app answering a signed no-op action (`crm_noop`, what a link button
sends): signature check, Bolt dispatch and ack, nothing else.

Open loop: click i is sent at start + i/rate whether or not earlier ones were answered, and its latency
is measured from that scheduled time, so a stalled server shows up as latency (no coordinated
omission). Saturation: rates rising in short steps until p99 passes 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from bench.benchkit import machine
from bot.bootstrap import bootstrap
from store.settings import load_settings
from tests.integration import slack_harness as h
from tests.standins import slack_requests as sr
from tests.standins.slack_api import SlackStandIn
from tests.standins.smtp import SmtpStandin

PG_ADMIN = os.environ.get("CRM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SATURATED_P99_S = 1.0
REQUEST_TIMEOUT_S = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(url: str, bodies: list[bytes], rate: float) -> tuple[list[float], int]:
    """Send each body at its scheduled time; (latencies from the scheduled time, non-200 count)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        start = time.perf_counter() + 0.2

        async def one(i: int, body: bytes) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            headers = sr.signed_headers(h.SECRET, body, content_type=sr.FORM)
            try:
                response = await client.post(url, content=body, headers=headers)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - due)
            errors += not ok

        await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))
    return latencies, errors


def click_bodies(container: object, slack: SlackStandIn, count: int) -> list[bytes]:
    """`count` pending proposals posted to the stand-in, and a signed-ready Approve click for each."""
    customer = h.add_customer(container)  # type: ignore[arg-type]
    notifier = container.notifier
    bodies = []
    for _ in range(count):
        pid = h.propose_email(container, customer, key=uuid.uuid4().hex)  # type: ignore[arg-type]
        ref = notifier.post(pid)[0]
        payload = sr.click(
            f"approve:{pid}",
            user=h.OPERATOR,
            response_url=slack.response_url("bench"),
            message_ts=ref.message_id,
        )
        bodies.append(sr.interactive_body(payload))
    return bodies


def noop_bodies(slack: SlackStandIn, count: int) -> list[bytes]:
    payload = sr.click(
        "https://crm.example/x",
        user=h.OPERATOR,
        response_url=slack.response_url("noop"),
        action_id="crm_noop",
    )
    body = sr.interactive_body(payload)
    return [body] * count


def summary(name: str, rate: float, latencies: list[float], errors: int) -> dict[str, float | str]:
    return {
        "name": name,
        "rate": rate,
        "n": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--steps", default="100,150,200,300,400")
    parser.add_argument(
        "--redis", help="REDIS_URL: executions go to a `crm worker` process instead of the web process"
    )
    args = parser.parse_args()

    dbname = f"crm_bench_slack_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + dbname
    data_dir = Path(f"/tmp/{dbname}")
    web = worker = None
    try:
        with SlackStandIn(bot_token=h.BOT_TOKEN) as slack, SmtpStandin() as smtp:
            port = h.free_port()
            extra = {"REDIS_URL": args.redis} if args.redis else {}
            settings = h.slack_settings(
                slack.api_url, db_url, SMTP_URL=smtp.url, PORT=port, CRM_DATA_DIR=str(data_dir), **extra
            )
            container = bootstrap(load_settings(_env_file=None, **settings))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL"))}
            if args.redis:
                import redis

                redis.Redis.from_url(args.redis).flushdb()
            env.update({k: str(v) for k, v in settings.items()})
            log = data_dir / "web.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            crm = str(Path(sys.executable).with_name("crm"))
            web = subprocess.Popen([crm, "web"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            if args.redis:
                worker_log = (data_dir / "worker.log").open("wb")
                worker = subprocess.Popen(
                    [crm, "worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT
                )
            url = f"http://127.0.0.1:{port}/slack/events"
            for _ in range(300):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            print(f"machine: {machine()}")
            steady = int(args.rate * args.seconds)
            print(f"preparing {steady} posted proposals …", flush=True)
            clicks = click_bodies(container, slack, steady)
            asyncio.run(open_loop(url, noop_bodies(slack, 20), 20))  # warm-up: connections, imports
            results = []
            latencies, errors = asyncio.run(open_loop(url, noop_bodies(slack, steady), args.rate))
            results.append(summary("no-op action", args.rate, latencies, errors))
            latencies, errors = asyncio.run(open_loop(url, clicks, args.rate))
            results.append(summary("Approve click", args.rate, latencies, errors))
            time.sleep(5)  # let executions drain before the saturation steps
            saturation = {"no-op action": None, "Approve click": None}
            for step in [float(s) for s in args.steps.split(",")]:
                n = int(step * args.step_seconds)
                for name in ("no-op action", "Approve click"):
                    if saturation[name] is not None:
                        continue
                    bodies = (
                        noop_bodies(slack, n) if name == "no-op action" else click_bodies(container, slack, n)
                    )
                    latencies, errors = asyncio.run(open_loop(url, bodies, step))
                    row = summary(name, step, latencies, errors)
                    results.append(row)
                    print(row, flush=True)
                    if row["p99_ms"] > SATURATED_P99_S * 1000 or errors:
                        saturation[name] = step
                    time.sleep(3)
            print()
            print("| action | rate/s | clicks | p50 ms | p99 ms | mean ms | non-200 |")
            print("|---|---|---|---|---|---|---|")
            for r in results:
                print(
                    f"| {r['name']} | {r['rate']:.0f} | {r['n']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                    f"| {r['mean_ms']:.1f} | {r['errors']} |"
                )
            print(f"saturation (first step with p99 > 1 s or errors): {saturation}")
            print(
                f"emails delivered: {len(smtp.messages)}; chat.update calls: {len(slack.of('chat.update'))}"
            )
            container.close()
    finally:
        for process in (web, worker):
            if process is not None:
                process.terminate()
                process.wait(15)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
