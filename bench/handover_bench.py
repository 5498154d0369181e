"""An email's handover alone: client and Postgres CPU per handover, one query against the general way.

Run by hand:  python -m bench.handover_bench [--n 1000] [--rounds 3]

The executor records, before each email's DATA, the email's handover and the previous email's result
in one durable transaction. What runs: a fresh Postgres database with `--n` approved email proposals
per arm and round, each started as the executor starts it (store.lifecycle, its action row written by
the projector); then, one after another on one connection, a transaction per proposal holding the
previous proposal's `action.executed` and this one's `action.handover`:
- one query: store.handover, as the executor sends it on Postgres, on a connection kept for the round
  (store.handover.Line, as the executor keeps one for a batch; the figure this bench follows);
- the general way (baseline, same run): store.lifecycle.transition_each, as on SQLite and for any
  other result (a failure, effect events): the lock and the rows read in one round trip, the rows
  planned and projected in Python, the writes and COMMIT in a second.
Rounds alternate the two arms, so drift in the machine's load hits both alike; the median round is
shown. Per handover: wall time, this process's CPU (single-threaded: the client alone), and the
Postgres backend's CPU (its /proc entry, read before and after).

execute_bench measures the whole path under load, where the machine's noise hides a change of this
size; this one measures the handover's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.benchkit import machine
from bench.execute_bench import OPERATOR, Database, proposals
from bot.commands import Commands
from store import events as ev
from store import handover
from store import lifecycle as lc
from store import proposals as sp
from store.db import make_engine, migrate
from store.settings import load_settings
from store.uow import EventStore

_TICK = 1 / 100  # /proc's clock ticks per second (USER_HZ) on Linux


def _started(store: EventStore, pids: list[str]) -> None:
    """Approve and start each proposal at attempt 1, as a decision and the executor's start do."""
    settings = load_settings(_env_file=None, OPERATORS="terminal:bench", UNDO_WINDOW_SECONDS=0)
    commands = Commands(store, settings, schedule_execution=lambda *_: None)
    for pid in pids:
        assert commands.approve(OPERATOR, pid).ok
        lease = ev.utcnow() + timedelta(minutes=30)
        started = sp.ActionStarted(
            attempt=1, connector="smtp", idempotency_key=f"crm-{pid}", lease_until=lease
        )
        planned = [(lc.on_proposal(pid, "action.started", started, lc.attempt_key(pid, 1, "started")), False)]
        assert lc.transition(store, pid, {"approved"}, lambda _row, planned=planned: planned).won


def _one_query(store: EventStore, previous: str | None, pid: str, line: handover.Line) -> bool:
    steps = [handover.Step(pid, 1, sp.ActionHandover(attempt=1))]
    if previous is not None:
        steps.insert(0, handover.Step(previous, 1, sp.ActionExecuted(attempt=1, reference=f"<{previous}@b>")))
    outcome = handover.hand_over(store, steps, line)
    assert outcome is not None
    return all(outcome.won)


def _general(store: EventStore, previous: str | None, pid: str, _line: handover.Line) -> bool:
    def step(proposal: str, event_type: str, payload: ev.Payload, what: str) -> lc.Step:
        event = lc.on_proposal(proposal, event_type, payload, lc.attempt_key(proposal, 1, what))
        return proposal, {"executing"}, lambda _row: [(event, False)]

    steps = [step(pid, "action.handover", sp.ActionHandover(attempt=1), "handover")]
    if previous is not None:
        executed = sp.ActionExecuted(attempt=1, reference=f"<{previous}@b>")
        steps.insert(0, step(previous, "action.executed", executed, "result"))
    return all(transition.won for transition in lc.transition_each(store, steps))


def _backend_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK  # utime, stime


def _round(store: EventStore, n: int, tag: str, handing: Callable[..., bool]) -> dict[str, float]:
    pids = proposals(store, n, tag)
    _started(store, pids)
    with store.engine.connect() as connection:  # the pool's one connection, given back after
        backend = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
    line = handover.Line(store)  # the executor's, for a batch's handovers (the general way has none)
    server, cpu, wall = _backend_seconds(backend), time.process_time(), time.perf_counter()
    previous = None
    for pid in pids:
        assert handing(store, previous, pid, line), "a step lost"
        previous = pid
    line.close()
    return {
        "wall": (time.perf_counter() - wall) / n * 1000,
        "client": (time.process_time() - cpu) / n * 1000,
        "server": (_backend_seconds(backend) - server) / n * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="handovers per arm and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each arm once")
    args = parser.parse_args()
    print(machine())
    database = Database()
    try:
        engine = make_engine(database.url, pool_size=1, max_overflow=0)
        migrate(engine)
        store = EventStore(engine)
        arms: dict[str, Callable[..., bool]] = {"one query": _one_query, "general way": _general}
        results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
        for i in range(args.rounds):
            for arm, handing in arms.items():
                results[arm].append(_round(store, args.n, f"{arm[:3]}{i}", handing))
        engine.dispose()
    finally:
        database.drop()
    print(f"{args.n} handovers per arm and round, {args.rounds} rounds; ms per handover, median round")
    print("| arm | wall | client CPU | Postgres CPU | every round's client CPU |")
    print("|---|---|---|---|---|")
    medians: dict[str, dict[str, Any]] = {}
    for arm, rounds in results.items():
        medians[arm] = {
            key: statistics.median(r[key] for r in rounds) for key in ("wall", "client", "server")
        }
        m = medians[arm]
        every = ", ".join(f"{r['client']:.3f}" for r in rounds)
        print(f"| {arm} | {m['wall']:.3f} | {m['client']:.3f} | {m['server']:.3f} | {every} |")
    one, general = medians["one query"], medians["general way"]
    print(
        f"general way / one query: wall {general['wall'] / one['wall']:.2f}x, "
        f"client CPU {general['client'] / one['client']:.2f}x, "
        f"Postgres CPU {general['server'] / one['server']:.2f}x"
    )


if __name__ == "__main__":
    main()
