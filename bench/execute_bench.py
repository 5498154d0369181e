"""Decision → executed: latency (p50/p99) and executed actions per second with 2 workers.

Run by hand:  python -m bench.execute_bench [--n 300] [--rate 15] [--rounds 5]

What runs: a fresh Postgres database, the real command layer (`Commands.approve`, the compare-and-set
decision), the real scheduler and in-process job queue with 2 worker threads, and the real executor
(checkpoint → connector → result, each an appended event). Two connectors:
- noop: a connector that does nothing, so the figures are the lifecycle's own cost for an action on
  the outside world (a start checkpoint before the connector, the result after);
- internal: the real internal connector adding a note, an action that acts only through the log and
  so is started, run and recorded in one transaction (jobs/execute.py);
- smtp: the real EmailConnector against aiosmtpd on loopback, keeping its SMTP sessions open between
  emails as it does in production (the server's count of connections is printed beside the result).
  The server runs in a thread of this process by default, sharing the interpreter with the workers;
  `--smtp-server process` runs it in a process of its own, as a real SMTP server is.
The undo window is 0 here: it is a deliberate wait, not a cost.

Latency: decisions at a steady `--rate` per second (below saturation), each measured from the
decision event's timestamp to the `action.executed` event's, both read back from the log.
Throughput: `--n` proposals approved first, then queued all at once; executed actions per second
from the first enqueue to the last result.
Baseline, in the same run: the same connector object's `run` called `--n` times by 2 threads with no
log, no queue, no checkpoints (for SMTP: the same kept sessions, one per thread, and the same email
built and sent in full: until the sixteenth round its body was shorter than the burst's); the ratio
says what exactly-once bookkeeping costs on top. `--rounds` bursts alternate with as many baseline
runs, so that drift in the machine's load hits both alike; the round with the median ratio is
reported, with every round's ratio beside it. A round is short (300 bare SMTP sends take ~0.3 s), so
one stall moves its ratio by a tenth (nine SMTP rounds of one run: 0.558 to 0.710); the median of
five, the default, is steadier than of three.
CPU, for both: milliseconds per action of this process (the workers, the bench, and for SMTP the
in-process server, which shares the interpreter) and of the rest of the machine (Postgres, above all),
so the bookkeeping's own CPU is the difference to the bare connector's. Their ratio, all CPU of the
bare connector over all CPU of the burst, is the ratio the runs would show if CPU were all that
limits both (2 CPUs shared by the workers, Postgres and the SMTP server, on the machines measured).

A backlog is executed in batches (jobs/execute.py: up to 1 + BATCH_MORE actions started in one
transaction); the latency phase, below saturation, runs one action at a time. The last table runs
one worker back to back over `--n` approved proposals with no queue, the no-op connector, batches
off (the baseline) and on, and gives the client CPU per action.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from sqlalchemy import func, select

from bench.benchkit import machine, machine_busy_seconds
from bot.bootstrap import App
from bot.cli_base import freeze_startup_objects
from bot.commands import Actor, Commands
from jobs.connectors.base import ActionRequest, ActionResult, Handover
from jobs.context import install, uninstall
from jobs.execute import BATCH_MORE, Executor, default_connectors, schedule_execution
from jobs.inprocess import InProcessJobQueue
from store import events as ev
from store import lifecycle as lc
from store import tables as t
from store.db import make_engine, migrate, one_of
from store.settings import load_settings
from store.uow import EventStore
from tests.standins.smtp import SmtpStandin

PG_ADMIN = os.environ.get("CRM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
OPERATOR = Actor("terminal", "bench", "Bench")
WORKERS = 2
POLL_SECONDS = 0.1
# Every action's content, the bare connector's as well: the baseline sends the same email.
TO = "ada@acme.test"
EMAIL = {"subject": "Hello", "body": "Hi Ada,\n\nJust checking in.\n\nBest"}
NOTE = {"text": "Prefers calls"}


class NoopConnector:
    """Does nothing and says so: the lifecycle's own overhead."""

    name = "noop"
    dedupes = True

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        return ActionResult(reference="noop")


def _serve_smtp(pipe: Any) -> None:
    """The body of SmtpProcess's child: serve, answering each request with what was received so far,
    until told to stop."""
    with SmtpStandin() as smtp:
        pipe.send(smtp.url)
        while pipe.recv() != "stop":
            pipe.send((len(smtp.messages), smtp.connections))


class SmtpProcess:
    """The aiosmtpd stand-in in a process of its own, as a real SMTP server is: its CPU is then not
    this interpreter's."""

    def __init__(self) -> None:
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(target=_serve_smtp, args=(child,))

    def __enter__(self) -> SmtpProcess:
        self._process.start()
        self.url = self._pipe.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._pipe.send("stop")
        self._process.join(timeout=10)

    def received(self) -> tuple[int, int]:
        """(messages, connections) the server has had so far."""
        self._pipe.send("count")
        messages, connections = self._pipe.recv()
        return messages, connections


def received(smtp: SmtpStandin | SmtpProcess) -> tuple[int, int]:
    """(messages, connections) an SMTP stand-in has had so far, wherever it runs."""
    if isinstance(smtp, SmtpProcess):
        return smtp.received()
    return len(smtp.messages), smtp.connections


class CpuSpan:
    """CPU spent from now on: this process's (user and system: workers, bench and any in-process
    server) and the rest of the machine's (the database, above all)."""

    def __init__(self) -> None:
        self.process, self.system, self.machine = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, usage.ru_stime, machine_busy_seconds()

    def per(self, n: int) -> dict[str, float]:
        """Milliseconds per action: `process`, its `system` part, and `rest` of the machine."""
        process, system, busy = self._now()
        spent = process - self.process
        return {
            "process": spent / n * 1000,
            "system": (system - self.system) / n * 1000,
            "rest": max(0.0, busy - self.machine - spent) / n * 1000,
        }


def cpu_allows(cpu: dict[str, float], bare_cpu: dict[str, float]) -> float:
    """The ratio the machine's CPU allows: the bare connector's CPU per action, all processes, over the
    bookkept one's; the ratio the runs would show if CPU were all that limits both."""
    return (bare_cpu["process"] + bare_cpu["rest"]) / (cpu["process"] + cpu["rest"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Database:
    """A throwaway Postgres database."""

    def __init__(self) -> None:
        self.name = f"crm_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        self.url = f"{base}/{self.name}"

    def drop(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def proposals(store: EventStore, n: int, tag: str, kind: str = "send_email") -> list[str]:
    signal = ev.LeadCreated(customer=ev.CustomerRef(name="Ada Lovelace", email=f"ada+{tag}@acme.test"))
    customer = store.record_signal("lead.created", signal, f"bench:{tag}", source="bench").event.stream
    payload = {
        "agent": "bench",
        "kind": kind,
        "customer_id": customer,
        "params": {"to": TO, **EMAIL} if kind == "send_email" else NOTE,
        "draft": EMAIL if kind == "send_email" else None,
        "rationale": "bench",
        "sources": [],
        "confidence": 0.9,
        "cost": {"usd": 0.0},
        "drafted_from_template": True,
        "event_id": None,
    }
    return [
        lc.record_proposal(store, payload, verdict="approval", rules=[], key=f"bench:{tag}:{i}")[0]
        for i in range(n)
    ]


def timings(store: EventStore, pids: list[str]) -> tuple[list[float], float, float]:
    """(decision → executed seconds per proposal, first decision time, last executed time) from the log."""
    decided: dict[str, float] = {}
    executed: dict[str, float] = {}
    wanted = set(pids)
    for event in store.read_all():
        if event.stream in wanted and event.type == "proposal.decided":
            decided[event.stream] = event.recorded_at.timestamp()
        elif event.stream in wanted and event.type == "action.executed":
            executed[event.stream] = event.recorded_at.timestamp()
    missing = wanted - set(executed)
    if missing:
        raise SystemExit(f"{len(missing)} proposals were not executed")
    return [executed[p] - decided[p] for p in pids], min(decided.values()), max(executed.values())


class Told:
    """The executor's notifier (jobs.notify's place in the product, which refreshes the proposal's chat
    message after each result): told of each recorded result, in the worker, after its commit. The
    bench waits on it rather than reading the database: its reads shared the interpreter with the
    workers it timed (a count over the burst's ids every POLL_SECONDS was a tenth of a 1,500-email
    burst's interpreter time). The figures still come from the log's timestamps."""

    def __init__(self) -> None:
        self._recorded: set[str] = set()
        self._waiting: set[str] = set()  # of those waited for, the ones not recorded yet
        self._changed = threading.Condition()

    def refresh(self, proposal_id: str) -> None:
        with self._changed:
            self._recorded.add(proposal_id)
            self._waiting.discard(proposal_id)
            if not self._waiting:
                self._changed.notify_all()

    def notice(self, lines: list[str]) -> None:
        """A failure or an uncertain send: timings() then finds the proposal not executed and says so."""

    def wait_for(self, pids: list[str], timeout: float = 600) -> None:
        with self._changed:
            self._waiting = set(pids) - self._recorded
            if not self._changed.wait_for(lambda: not self._waiting, timeout):
                raise SystemExit(f"timed out waiting for executions ({len(self._waiting)} left)")


def wait_until_done(store: EventStore, pids: list[str], timeout: float = 600) -> None:
    """Wait until every proposal is executed: one count every POLL_SECONDS (`--poll`, as earlier rounds
    measured; see Told). The count is kept small (reading each proposal in turn once the last ones were
    done took up to a fifth of the workers' time in a burst)."""
    p = t.proposals.c
    done = select(func.count()).where(one_of(p.id, "ids", "postgresql"), p.state == "executed")
    deadline = time.monotonic() + timeout
    while True:
        with store.engine.connect() as connection:
            if connection.execute(done, {"ids": pids}).scalar_one() == len(pids):
                return
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for executions")
        time.sleep(POLL_SECONDS)


def run_mode(
    mode: str, n: int, rate: float, rounds_wanted: int = 1, smtp_server: str = "thread", poll: bool = False
) -> dict[str, Any]:
    database = Database()
    smtp: SmtpStandin | SmtpProcess | None = None
    if mode == "smtp":
        smtp = SmtpProcess() if smtp_server == "process" else SmtpStandin()
        smtp.__enter__()
    try:
        engine = make_engine(database.url, pool_size=10)
        migrate(engine)
        store = EventStore(engine)
        settings = load_settings(
            _env_file=None,
            DATABASE_URL=database.url,
            OPERATORS="terminal:bench",
            UNDO_WINDOW_SECONDS=0,
            SMTP_URL=smtp.url if smtp else None,
            MAIL_FROM="ops@example.test",
        )
        connectors: dict[str, Any] = default_connectors(store, settings, lambda name: None)
        kind = "add_note" if mode == "internal" else "send_email"
        connector = NoopConnector() if mode == "noop" else connectors[kind]
        connectors[kind] = connector
        told = Told()
        executor = Executor(store, connectors, notifier=told)

        def wait(pids: list[str]) -> None:
            if poll:
                wait_until_done(store, pids)
            else:
                told.wait_for(pids)

        queue = InProcessJobQueue(threads=WORKERS)
        app = App(settings=settings, engine=engine, store=store, queue=queue, handlers={})
        app.__dict__["executor"] = executor  # the bench's connectors, not the settings'
        install(app)
        # As `crm worker` does once started: full collections that walked everything loaded took
        # 65-73 ms each, mid-phase, in this process.
        freeze_startup_objects()

        def schedule(pid: str, row: dict[str, Any] | None = None) -> None:
            schedule_execution(app, pid, row=row)

        # Latency: steady decisions below saturation.
        latency_pids = proposals(store, n, f"{mode}-lat", kind)
        commands = Commands(store, settings, schedule_execution=schedule)
        start = time.monotonic()
        for i, pid in enumerate(latency_pids):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            assert commands.approve(OPERATOR, pid).ok
        wait(latency_pids)
        latencies, _, _ = timings(store, latency_pids)

        # Throughput: approve everything first, then queue all at once.
        def burst(tag: str) -> tuple[float, dict[str, float]]:
            pids = proposals(store, n, tag, kind)
            # Each decision's scheduling is held back with the row it hands over, as a decision does.
            held: list[tuple[str, dict[str, Any] | None]] = []
            holding = Commands(store, settings, schedule_execution=lambda pid, row: held.append((pid, row)))
            for pid in pids:
                assert holding.approve(OPERATOR, pid).ok
            cpu = CpuSpan()
            began = time.time()
            for pid, row in held:
                schedule(pid, row)
            wait(pids)
            spent = cpu.per(n)
            _, _, last = timings(store, pids)
            return n / (last - began), spent

        # Baseline: the bare connector, same concurrency, no bookkeeping.
        request = ActionRequest(
            proposal_id="prp_bench",
            kind=kind,
            agent="bench",
            customer_id="c",
            params={"to": TO, **EMAIL} if kind == "send_email" else NOTE,
            draft=EMAIL if kind == "send_email" else None,
            idempotency_key="crm-bench",
            attempt=1,
        )
        bare: Callable[[int], Any] = lambda _i: connector.run(request, lambda: None)  # noqa: E731

        def bare_round() -> tuple[float, dict[str, float]]:
            cpu = CpuSpan()
            began = time.perf_counter()
            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(bare, range(n)))
            return n / (time.perf_counter() - began), cpu.per(n)

        # Rounds alternate the two, so that drift in the machine's load hits both alike.
        rounds = [(burst(f"{mode}-burst{i}"), bare_round()) for i in range(rounds_wanted)]
        middle = sorted(rounds, key=lambda r: r[0][0] / r[1][0])[len(rounds) // 2]
        (throughput, burst_cpu), (bare_rate, bare_cpu) = middle
        queue.stop(timeout=5)
        uninstall()
        engine.dispose()
        delivered, connections = received(smtp) if smtp else (None, None)
        return {
            "mode": mode,
            "n": n,
            "rate": rate,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000,
            "throughput": throughput,
            "bare": bare_rate,
            "cpu": burst_cpu,
            "bare_cpu": bare_cpu,
            "ratios": [r[0][0] / r[1][0] for r in rounds],
            "delivered": delivered,
            "connections": connections,
        }
    finally:
        if smtp:
            smtp.__exit__(None, None, None)
        database.drop()


def back_to_back(n: int, batch_more: int) -> dict[str, float]:
    """One worker executing n approved proposals in a loop, no queue: wall and CPU ms per action."""
    database = Database()
    engine = make_engine(database.url, pool_size=10)
    try:
        migrate(engine)
        store = EventStore(engine)
        settings = load_settings(
            _env_file=None, DATABASE_URL=database.url, OPERATORS="terminal:bench", UNDO_WINDOW_SECONDS=0
        )
        executor = Executor(store, {"send_email": NoopConnector()}, batch_more=batch_more)
        pids = proposals(store, n, "loop")
        commands = Commands(store, settings, schedule_execution=lambda pid, row: None)
        for pid in pids:
            assert commands.approve(OPERATOR, pid).ok
        began, cpu = time.perf_counter(), time.process_time()
        for pid in pids:
            executor.execute(pid)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        wait_until_done(store, pids, timeout=5)
        return {"wall_ms": wall / n * 1000, "cpu_ms": cpu / n * 1000}
    finally:
        engine.dispose()
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="proposals per phase and mode")
    parser.add_argument("--rate", type=float, default=15.0, help="decisions per second in the latency phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="throughput rounds per mode, each a burst then the bare connector; the median ratio is shown",
    )
    parser.add_argument(
        "--modes",
        default="noop,internal,smtp",
        help="connectors to measure, comma-separated (noop, internal, smtp)",
    )
    parser.add_argument("--no-loop", action="store_true", help="skip the one-worker back-to-back table")
    parser.add_argument(
        "--smtp-server",
        choices=("thread", "process"),
        default="thread",
        help="where the SMTP stand-in runs: a thread of this process (sharing its interpreter with the "
        "workers) or a process of its own, as a real server is",
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="learn that a phase is done by counting its executed proposals every 0.1 s, as rounds before "
        "the fourteenth did, instead of being told by the executor (see Told)",
    )
    args = parser.parse_args()
    print(machine())
    print(f"{WORKERS} workers, Postgres, n={args.n} per phase, latency phase at {args.rate}/s")
    where = "a process of its own" if args.smtp_server == "process" else "a thread of this process"
    print(f"SMTP stand-in: {where}")
    print("Done: " + ("counted every 0.1 s (--poll)" if args.poll else "told by the executor of each result"))
    print(f"Throughput: {args.rounds} rounds, each a burst of n then the bare connector; the round with the")
    print("median ratio is shown, and every round's ratio after it.")
    print(
        "| connector | decision → executed p50 | p99 | executed/s (2 workers) | bare connector/s | ratio "
        "| every round's ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    results = []
    for mode in args.modes.split(","):
        r = run_mode(mode, args.n, args.rate, args.rounds, args.smtp_server, args.poll)
        results.append(r)
        print(
            f"| {mode} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['throughput']:.1f} | "
            f"{r['bare']:.0f} | {r['throughput'] / r['bare']:.3f} | "
            + ", ".join(f"{ratio:.3f}" for ratio in r["ratios"])
            + " |"
            + (
                f" (server received {r['delivered']} for {(1 + 2 * args.rounds) * args.n} sends"
                f" over {r['connections']} connections)"
                if r["delivered"] is not None
                else ""
            )
        )
    print()
    print(
        "CPU ms per action in the median round's burst (the bare connector's: the same sends, no "
        "bookkeeping):"
    )
    print(
        "| connector | this process | of it, system | rest of the machine | bare connector: this process "
        "| bare connector: rest | ratio the CPU allows |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        cpu, bare_cpu = r["cpu"], r["bare_cpu"]
        print(
            f"| {r['mode']} | {cpu['process']:.2f} | {cpu['system']:.2f} | {cpu['rest']:.2f} | "
            f"{bare_cpu['process']:.2f} | {bare_cpu['rest']:.2f} | {cpu_allows(cpu, bare_cpu):.3f} |"
        )
    print(
        "The ratio the CPU allows: the bare connector's CPU per action (this process and the rest) over the "
        "burst's;\nthe ratio the runs would show if CPU were all that limits both."
    )
    if args.no_loop:
        return
    print()
    print(f"One worker back to back, no-op connector, {args.n} actions, no queue:")
    print("| batches | wall ms per action | client CPU ms per action |")
    print("|---|---|---|")
    rows = {more: back_to_back(args.n, more) for more in (0, BATCH_MORE)}
    for more, r in rows.items():
        label = "off (one at a time, the baseline)" if more == 0 else f"on (up to {more + 1})"
        print(f"| {label} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} |")
    print(f"CPU ratio batched / one at a time: {rows[BATCH_MORE]['cpu_ms'] / rows[0]['cpu_ms']:.2f}")


if __name__ == "__main__":
    main()
