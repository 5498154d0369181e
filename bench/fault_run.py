"""Faults and fuzz against the real processes: duplicate taps, killed workers, Redis and Postgres outages.

Run by hand (from the repository root):
    .venv/bin/python -m bench.fault_run [--taps 100] [--executions 1000] [--ingests 5000] [--outage 30]
        [--pg-outage 30] [--fuzz 1400] [--json OUT]

What runs (bench/fault_stack.py): `crm web`, two `crm worker`s and `crm scheduler` as processes, on a
Postgres database and a redis-server of the run's own, with the stand-in Slack and Telegram servers and a
loopback SMTP server. Scenarios, in order, on the same deployment:
1. taps: every proposal posted to Slack and Telegram, then an Approve tap on each surface for each,
   all at once (signed `POST /slack/events` and `POST /telegram/webhook`);
2. executions: `--executions` send_email proposals approved with no undo window while each worker is
   SIGKILLed once mid-run and started again;
3. redis: `--ingests` signed `POST /signals`, with redis-server SIGKILLed for `--outage` seconds in the
   middle (the same port comes back, empty: no persistence); one in 20 is redelivered with its webhook-id;
4. postgres: ingests and Slack Approve taps while every connection to the run's database is cut with
   `pg_terminate_backend` once a second for `--pg-outage` seconds. The machine's Postgres is shared, so
   the run does not restart it: this cuts its own database's connections only;
5. fuzz: about `--fuzz` requests, generated from the OpenAPI document (schemathesis) and made by hand
   (bench/fault_fuzz.py).

Each scenario reports attempts, accepted (2xx), refused (4xx), duplicates, lost, 5xx (503 listed apart:
the one 5xx allowed, for a dependency that is down) and processes left dead. Duplicates: emails received
more than once, a proposal decided twice, a redelivered signal given a new event id. Lost: an approved
proposal with no email that is not marked uncertain (uncertain = the operator is asked), a 202'd signal
missing from the events table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from agents.proposal import Draft
from bench.benchkit import machine
from bench.fault_fuzz import fuzz
from bench.fault_stack import ACTION_LEASE_SECONDS, Stack
from bot.replies import Actor
from tests.inbound_support import signal_body, signed_headers
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as th
from tests.standins import slack_requests as sr

BENCH = Actor("terminal", "bench", "Bench")
FINAL = ("executed", "uncertain", "failed", "rejected", "expired", "undone", "closed")
SETTLE_S = 150.0  # how long the run waits for the last executions and the outbox to drain
REDELIVER_EVERY = 20


@dataclass
class Result:
    scenario: str
    attempts: int = 0
    accepted: int = 0
    refused: int = 0
    duplicates: int = 0
    lost: int = 0
    server_errors: int = 0  # 5xx other than 503
    unavailable: int = 0  # 503
    transport_errors: int = 0
    dead: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, status: int | None) -> None:
        self.attempts += 1
        if status is None:
            self.transport_errors += 1
        elif status < 300:
            self.accepted += 1
        elif status == 503:
            self.unavailable += 1
        elif status >= 500:
            self.server_errors += 1
        elif status >= 400:
            self.refused += 1


async def send(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response | None:
    try:
        return await client.post(path, content=body, headers=headers)
    except httpx.HTTPError:
        return None


def new_client(stack: Stack) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=stack.url, timeout=30, limits=limits)


# ---- proposals -------------------------------------------------------------------------------------


def make_proposals(stack: Stack, tag: str, n: int) -> dict[str, str]:
    """n pending send_email proposals, each with its own subject token; token -> proposal id."""
    container = stack.container
    assert container is not None
    customer = th.add_customer(container, name=f"Ada {tag}", email_=f"ada-{tag}@acme.example")
    made = {}
    for i in range(n):
        token = f"{tag}-{i}"
        draft = Draft(subject=f"Checking in [{token}]", body="Hi Ada, how is the trial going?")
        made[token] = th.propose(container, customer, key=f"{tag}:{i}", draft=draft)
    return made


def emails_by_token(stack: Stack, tag: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for message in stack.smtp.messages:
        subject = str(message["Subject"] or "")
        if f"[{tag}-" in subject:
            seen[subject.split("[", 1)[1].split("]", 1)[0]] += 1
    return seen


def states(stack: Stack, pids: list[str]) -> Counter[str]:
    rows = stack.rows("SELECT state, count(*) FROM proposals WHERE id = ANY(:ids) GROUP BY state", ids=pids)
    return Counter({state: int(n) for state, n in rows})


def settle(stack: Stack, pids: list[str], timeout: float = SETTLE_S) -> Counter[str]:
    """Wait until every proposal is final (or timeout: a tap refused can leave one pending); their states."""
    deadline = time.monotonic() + timeout
    while True:
        tally = states(stack, pids)
        if sum(n for s, n in tally.items() if s not in FINAL) == 0:
            return tally
        if time.monotonic() > deadline:
            return tally
        time.sleep(1)


def judge_emails(result: Result, stack: Stack, tag: str, tokens: dict[str, str], tally: Counter[str]) -> None:
    """Duplicates and losses of a set of approved proposals, at the SMTP server and in the table."""
    seen = emails_by_token(stack, tag)
    result.duplicates += sum(n - 1 for n in seen.values() if n > 1)
    decided_twice = stack.scalar(
        "SELECT count(*) FROM (SELECT stream FROM events WHERE type = 'proposal.decided' "
        "AND stream = ANY(:ids) GROUP BY stream HAVING count(*) > 1) AS twice",
        ids=list(tokens.values()),
    )
    result.duplicates += int(decided_twice or 0)
    uncertain = {
        pid
        for (pid,) in stack.rows(
            "SELECT id FROM proposals WHERE id = ANY(:ids) AND state = 'uncertain'", ids=list(tokens.values())
        )
    }
    approved = {
        pid
        for (pid,) in stack.rows(
            "SELECT id FROM proposals WHERE id = ANY(:ids) AND state <> 'pending'", ids=list(tokens.values())
        )
    }
    missing = [t for t, pid in tokens.items() if pid in approved and t not in seen and pid not in uncertain]
    result.lost += len(missing)
    result.notes.append(
        f"proposal states {dict(tally)}; emails {sum(seen.values())} for {len(seen)} proposals"
    )
    if missing:
        result.notes.append(f"approved with no email and not uncertain: {sorted(missing)[:5]}")
    if decided_twice:
        result.notes.append(f"{decided_twice} proposals decided twice")


# ---- 1. duplicate taps across two surfaces --------------------------------------------------------


def approve_value(stack: Stack, pid: str) -> str:
    """The Approve button's value on the Slack message of pid."""
    for call in reversed(stack.slack.of("chat.postMessage")):
        found = _find_approve(call.body, pid)
        if found:
            return found
    return f"approve:{pid}"


def _find_approve(node: Any, pid: str) -> str | None:
    if isinstance(node, dict):
        value = node.get("value")
        if isinstance(value, str) and value.startswith("approve:") and pid in value:
            return value
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            found = _find_approve(item, pid)
            if found:
                return found
    return None


def telegram_tap(stack: Stack, message_id: int, update_id: int) -> bytes:
    message = th.message(stack.telegram, th.OPS_CHAT, message_id)
    data = th.buttons_of(message)["Approve"]
    update = {
        "update_id": update_id,
        "callback_query": {
            "id": f"fault{update_id}",
            "from": th.OPERATOR,
            "message": message,
            "chat_instance": "-5432109876543210987",
            "data": data,
        },
    }
    return json.dumps(update).encode()


async def taps(stack: Stack, n: int) -> Result:
    result = Result("1. duplicate Approve taps, Slack + Telegram")
    container = stack.container
    assert container is not None
    tokens = make_proposals(stack, "tap", n)
    requests: list[tuple[str, bytes, dict[str, str]]] = []
    for i, pid in enumerate(tokens.values()):
        refs = {ref.surface: ref for ref in container.notifier.post(pid)}
        slack_body = sr.interactive_body(
            sr.click(
                approve_value(stack, pid),
                user=sh.OPERATOR,
                response_url=stack.slack.response_url(f"tap{i}"),
                message_ts=str(refs["slack"].message_id),
            )
        )
        tg_body = telegram_tap(stack, int(refs["telegram"].message_id), 900_000 + i)
        requests.append(
            ("/slack/events", slack_body, sr.signed_headers(sh.SECRET, slack_body, content_type=sr.FORM))
        )
        requests.append(
            (
                "/telegram/webhook",
                tg_body,
                {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": th.WEBHOOK_SECRET},
            )
        )
    async with new_client(stack) as client:
        responses = await asyncio.gather(*(send(client, p, b, h) for p, b, h in requests))
    for response in responses:
        result.count(response.status_code if response is not None else None)
    tally = settle(stack, list(tokens.values()))
    judge_emails(result, stack, "tap", tokens, tally)
    return result


# ---- 2. kill -9 of workers during executions --------------------------------------------------------


def executions(stack: Stack, n: int) -> Result:
    result = Result("2. kill -9 of each worker during executions")
    container = stack.container
    assert container is not None
    tokens = make_proposals(stack, "exe", n)
    pids = list(tokens.values())
    outcomes: list[bool] = []

    def approve_all(part: list[str]) -> None:
        for pid in part:
            outcomes.append(container.commands.approve(BENCH, pid).ok)

    threads = [threading.Thread(target=approve_all, args=(pids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for name, share in (("worker1", 0.25), ("worker2", 0.6)):
        deadline = time.monotonic() + SETTLE_S
        while sum(emails_by_token(stack, "exe").values()) < share * n and time.monotonic() < deadline:
            time.sleep(0.05)
        stack.kill(name)
        result.notes.append(f"{name} SIGKILLed after {sum(emails_by_token(stack, 'exe').values())} emails")
        time.sleep(1)
        stack.start(name)
    for thread in threads:
        thread.join()
    result.attempts = len(outcomes)
    result.accepted = sum(outcomes)
    result.refused = len(outcomes) - result.accepted
    tally = settle(stack, pids)
    judge_emails(result, stack, "exe", tokens, tally)
    return result


# ---- 3 and 4: ingests under a Redis outage, and under cut Postgres connections ---------------------


@dataclass
class Ingests:
    """What `POST /signals` answered: event ids of the 202s, and the redeliveries' verdicts."""

    accepted: dict[str, str] = field(default_factory=dict)  # webhook-id -> event id
    redelivered_new_id: int = 0


async def ingest(
    client: httpx.AsyncClient, result: Result, seen: Ingests, tag: str, i: int, *, redeliver: bool
) -> None:
    body = signal_body(
        "lead.created",
        customer={"name": f"Lead {tag} {i}", "email": f"lead-{tag}-{i}@fault.example"},
        text="hi",
    )
    webhook_id = f"msg_{tag}_{i}_{uuid.uuid4().hex[:8]}"
    for attempt in range(2 if redeliver else 1):
        response = await send(client, "/signals", body, signed_headers(body, webhook_id))
        result.count(response.status_code if response is not None else None)
        if response is None or response.status_code != 202:
            return
        event_id = response.json()["event_id"]
        if attempt == 0:
            seen.accepted[webhook_id] = event_id
        elif event_id != seen.accepted[webhook_id]:
            seen.redelivered_new_id += 1


async def paced_ingests(
    stack: Stack, result: Result, seen: Ingests, tag: str, n: int, seconds: float
) -> None:
    """n ingests spread evenly over `seconds` (open loop: a slow answer does not hold the next send)."""
    async with new_client(stack) as client:
        start = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i * seconds / n - time.monotonic()))
            await ingest(client, result, seen, tag, i, redeliver=i % REDELIVER_EVERY == 0)

        await asyncio.gather(*(one(i) for i in range(n)))


def judge_ingests(stack: Stack, result: Result, seen: Ingests) -> None:
    """Lost: a 202'd event id not in the events table once the sequencer has caught up (or SETTLE_S)."""
    ids = list(seen.accepted.values())
    began = time.monotonic()
    while True:
        found = {e for (e,) in stack.rows("SELECT id FROM events WHERE id = ANY(:ids)", ids=ids)}
        if len(found) == len(set(ids)) or time.monotonic() - began > SETTLE_S:
            break
        time.sleep(2)
    waited = time.monotonic() - began
    result.lost += len(set(ids) - found)
    result.duplicates += seen.redelivered_new_id
    left = int(stack.scalar("SELECT count(*) FROM outbox") or 0)
    result.notes.append(
        f"{len(ids)} event ids answered 202, {len(found)} in the events table {waited:.0f} s after the last"
    )
    result.notes.append(f"outbox rows (events not yet handled by the workers) then: {left}")


async def redis_outage(stack: Stack, n: int, outage: float) -> Result:
    result = Result(f"3. Redis killed, down {outage:.0f} s, during ingests")
    seen = Ingests()

    async def outage_in_the_middle() -> None:
        await asyncio.sleep(outage)
        stack.redis.kill()
        await asyncio.sleep(outage)
        await asyncio.to_thread(stack.redis.start)

    await asyncio.gather(paced_ingests(stack, result, seen, "redis", n, 3 * outage), outage_in_the_middle())
    await asyncio.sleep(5)  # the workers' reconnect
    result.dead = stack.dead()
    judge_ingests(stack, result, seen)
    return result


async def postgres_cuts(stack: Stack, n: int, taps_n: int, seconds: float) -> Result:
    result = Result(f"4. Postgres connections cut every 1 s for {seconds:.0f} s, ingests + taps")
    seen = Ingests()
    container = stack.container
    assert container is not None
    tokens = make_proposals(stack, "pg", taps_n)
    clicks = []
    for i, pid in enumerate(tokens.values()):
        container.notifier.post(pid)
        payload = sr.click(
            approve_value(stack, pid), user=sh.OPERATOR, response_url=stack.slack.response_url(f"pg{i}")
        )
        clicks.append(sr.interactive_body(payload))
    cuts = 0

    async def cut() -> None:
        nonlocal cuts
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cuts += await asyncio.to_thread(stack.terminate_backends)
            await asyncio.sleep(1)

    async def tap_all() -> None:
        async with new_client(stack) as client:
            for body in clicks:
                await asyncio.sleep(seconds / max(1, len(clicks)))
                headers = sr.signed_headers(sh.SECRET, body, content_type=sr.FORM)
                response = await send(client, "/slack/events", body, headers)
                result.count(response.status_code if response is not None else None)

    await asyncio.gather(paced_ingests(stack, result, seen, "pg", n, seconds), cut(), tap_all())
    result.notes.append(f"{cuts} connections terminated")
    await asyncio.sleep(5)
    result.dead = stack.dead()
    judge_ingests(stack, result, seen)
    tally = settle(stack, list(tokens.values()), timeout=60)
    pending = [i for i, pid in enumerate(tokens.values()) if _state(stack, pid) == "pending"]
    told = {c.path for c in stack.slack.of("response_url")}
    silent = [i for i in pending if not any(f"pg{i}" in path.split("/")[-1] for path in told)]
    result.notes.append(
        f"taps left pending {len(pending)}, of which with no reply to the operator {len(silent)}"
    )
    result.lost += len(silent)
    judge_emails(result, stack, "pg", tokens, tally)
    return result


def _state(stack: Stack, pid: str) -> str:
    return str(stack.scalar("SELECT state FROM proposals WHERE id = :id", id=pid))


# ---- the run --------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | attempts | accepted | refused (4xx) | duplicates | lost | 5xx | 503 | no answer "
        "| processes left dead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.attempts} | {r.accepted} | {r.refused} | {r.duplicates} | {r.lost} | "
            f"{r.server_errors} | {r.unavailable} | {r.transport_errors} | {len(r.dead)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=100, help="proposals tapped on both surfaces")
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--ingests", type=int, default=5000, help="signals in the Redis scenario")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Redis stays down")
    parser.add_argument("--pg-outage", type=float, default=30.0, help="seconds of cut Postgres connections")
    parser.add_argument("--fuzz", type=int, default=1400, help="fuzzed and malformed requests")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON here")
    args = parser.parse_args()
    started = time.monotonic()
    figures = machine()
    print(f"machine: {figures}", flush=True)
    results: list[Result] = []
    with Stack() as stack:
        scenarios = [
            lambda: asyncio.run(taps(stack, args.taps)),
            lambda: executions(stack, args.executions),
            lambda: asyncio.run(redis_outage(stack, args.ingests, args.outage)),
            lambda: asyncio.run(postgres_cuts(stack, args.ingests // 5, args.taps, args.pg_outage)),
            lambda: fuzz(stack, args.fuzz),
        ]
        for scenario in scenarios:
            result: Result = scenario()
            time.sleep(2)
            result.dead = sorted(set(result.dead) | set(stack.dead()))
            results.append(result)
            print(f"{result.scenario}: {json.dumps(asdict(result))}", flush=True)
        restarts = {k: v for k, v in stack.restarts.items() if v}
    elapsed = time.monotonic() - started
    print()
    print(table(results))
    print(
        f"\nscale: {vars(args)}; restarts done by the run: {restarts}; "
        f"ACTION_LEASE_SECONDS={ACTION_LEASE_SECONDS}; {elapsed:.0f} s"
    )
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(
                {
                    "machine": figures,
                    "scale": vars(args),
                    "seconds": round(elapsed),
                    "results": [asdict(r) for r in results],
                },
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
