"""Sequencing staged signals into the log: signals/s, and SQL statements per signal.

Run by hand: `python -m bench.sequence_bench [--signals 4000]`.

What runs: a scratch Postgres database; `--signals` signals are staged in the intake inbox (as
`POST /signals` does), then `store.intake.sequence` moves them into the log in its batches (customer
resolution, projections, outbox) and the time is taken. Two rounds: "new" (every signal a customer
never seen, a third of them sharing a company domain) and "known" (the same people writing again, the
common case of a running business). The sequencer's own CPU time per signal is printed too (the
server's is not in it): on a shared machine it moves less than the rate does. Statements are counted
with SQLAlchemy's cursor events; an executemany counts once (psycopg sends its rows in one pipeline).

Baseline, in the same run: the same number of rows written to the log's own table shape with one
multi-row INSERT per batch and no bookkeeping (no resolution, no projections, no outbox, no lock) —
the floor a sequencer cannot go below on this machine and server.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from sqlalchemy import event, insert

from bench.benchkit import machine
from bench.execute_bench import Database
from store import events as ev
from store import tables as t
from store.db import make_engine, migrate
from store.intake import SEQUENCE_BATCH, sequence, stage
from store.uow import EventStore


def staged(engine: Any, n: int, phase: str) -> None:
    for i in range(n):
        ref = ev.CustomerRef(name=f"Person {i}", email=f"person{i}@company{i % (n // 3 or 1)}.example")
        signal = ev.MessageReceived(customer=ref, text=f"Hello, a question about order {i}")
        stage(engine, "message.received", signal, f"bench:{phase}:{i}", source="bench")


def baseline(engine: Any, n: int) -> float:
    """Rows of the log's shape inserted in batches, nothing else."""
    payload = {"customer": {"email": "a@b.example"}, "text": "Hello", "data": {}}
    began = time.perf_counter()
    for start in range(0, n, SEQUENCE_BATCH):
        rows = [
            {
                "id": str(uuid.uuid4()),
                "stream": "cus_bench",
                "type": "message.received",
                "version": 1,
                "payload": payload,
                "actor": "outside",
                "source": "bench",
                "occurred_at": ev.utcnow(),
                "recorded_at": ev.utcnow(),
                "idempotency_key": f"baseline:{start + j}",
            }
            for j in range(min(SEQUENCE_BATCH, n - start))
        ]
        with engine.begin() as connection:
            connection.execute(insert(t.events), rows)
    return n / (time.perf_counter() - began)


def run(n: int) -> dict[str, Any]:
    database = Database()
    try:
        engine = make_engine(database.url, pool_size=4)
        migrate(engine)
        store = EventStore(engine)
        statements = [0]
        counting = [False]

        @event.listens_for(engine, "before_cursor_execute")
        def count(*_: Any) -> None:
            if counting[0]:
                statements[0] += 1

        result: dict[str, Any] = {"signals": n}
        for phase in ("new", "known"):
            staged(engine, n, phase)
            statements[0], counting[0] = 0, True
            began, cpu = time.perf_counter(), time.process_time()
            moved = sequence(store)
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
            counting[0] = False
            assert moved == n, f"{moved} of {n} sequenced"
            result[phase] = {"per_s": n / elapsed, "statements": statements[0] / n, "cpu_ms": 1000 * cpu / n}
        result["baseline_per_s"] = baseline(engine, n)
        engine.dispose()
        return result
    finally:
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=4000)
    args = parser.parse_args()
    print(machine())
    result = run(args.signals)
    print(json.dumps(result, indent=1))
    floor = result["baseline_per_s"]
    print(
        "| signals | sequenced/s | SQL statements per signal | sequencer CPU ms per signal "
        "| bare batched INSERT/s | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for phase in ("new", "known"):
        figures = result[phase]
        print(
            f"| {phase} customers | {figures['per_s']:,.0f} | {figures['statements']:.2f} "
            f"| {figures['cpu_ms']:.3f} | {floor:,.0f} | {figures['per_s'] / floor:.2f} |"
        )
    print(machine())


if __name__ == "__main__":
    main()
