"""Signal → proposal posted on the embedded default, one signal at a time, with where the time goes.

Run by hand: `python -m bench.signal_path_bench [--signals 120]`.

What runs: `bootstrap()` on the embedded default (SQLite in a scratch data dir, in-process queue,
embedded Chroma, no model) with a terminal surface printing to memory, jobs started as `crm run` does.
Each signal is a dev-split message from the labelled corpus (tests/fixtures/corpus/dev.jsonl), sent
through `accept_signal` (the path of `crm signal` and the demo), timed from the call until every
handler of its event has recorded it (the proposal, if any, is posted by then: posting is the last
step of the agent's handler). The first signal loads the models and is not counted. The bench learns
that the last handler recorded from a wrapper around `jobs.handlers.record_handled`, after its commit.
`--poll` asks the database every millisecond instead, as the bench did until the thirteenth round:
those reads share the interpreter and the SQLite file with the worker, and cost it 15-18 ms a signal.

Breakdown: each handler of the table is timed (memory: embedding and Chroma; each agent), and inside
the agents the context build (customer slice, recall), the proposal pipeline (classification, drafting,
policy), recording and posting. "queue and bookkeeping" is what is left: the intake, the outbox hop
to a worker thread, handled-event records.

Baseline, in the same run: the classifier's embedding of the same texts alone (agents.classifier),
the one step no path can skip; the ratio says what the rest of the path costs on top.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.benchkit import machine
from bot.bootstrap import bootstrap
from bot.inbound.signals import accept_signal
from jobs import handlers as jh
from jobs import propose
from store.settings import load_settings

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus" / "dev.jsonl"
SPENT: dict[str, list[float]] = defaultdict(list)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name].append(time.perf_counter() - began)

    return run


def instrument() -> dict[str, jh.Handler]:
    """The handler table with every handler timed, and the agent's steps timed inside it."""
    propose.agent_context = timed("agent: context (slice, recall)", propose.agent_context)  # type: ignore[assignment]
    propose.append_classified = timed("agent: audit record", propose.append_classified)  # type: ignore[assignment]
    propose.learn_corrections = timed("agent: corrections", propose.learn_corrections)  # type: ignore[assignment]
    propose.route = timed("agent: record, policy verdict, post", propose.route)  # type: ignore[assignment]
    return {name: timed(f"handler: {name}", handler) for name, handler in jh.HANDLERS.items()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def signals(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line)["signal"] for line in CORPUS.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["type"] == "message.received"][:n]


class Recorded:
    """The handlers each event has recorded so far, told by a wrapper around
    jobs.handlers.record_handled (which run_handlers calls after each handler, once it committed)."""

    def __init__(self) -> None:
        self._by_event: dict[str, set[str]] = defaultdict(set)
        self._changed = threading.Condition()

    def install(self) -> None:
        record = jh.record_handled

        def recorded(ctx: Any, handler: str, event: Any, *args: Any, **kwargs: Any) -> None:
            record(ctx, handler, event, *args, **kwargs)
            with self._changed:
                self._by_event[event.id].add(handler)
                self._changed.notify_all()

        jh.record_handled = recorded  # type: ignore[assignment]

    def wait(self, app: Any, event_id: str, event_type: str, timeout: float = 30.0) -> None:
        wanted = set(jh.handlers_of(event_type))
        with self._changed:
            if not self._changed.wait_for(lambda: wanted <= self._by_event[event_id], timeout):
                raise SystemExit(f"event {event_id} was not handled within {timeout} s")


def wait_polling(app: Any, event_id: str, event_type: str, timeout: float = 30.0) -> None:
    """--poll: ask the database every millisecond (the reads compete with the worker they time)."""
    wanted = set(jh.handlers_of(event_type))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.store.engine.connect() as connection:
            if wanted <= jh.handled_by(connection, event_id):
                return
        time.sleep(0.001)
    raise SystemExit(f"event {event_id} was not handled within {timeout} s")


def run(n: int, poll: bool = False) -> None:
    print(machine())
    wait_handled: Callable[..., None] = wait_polling
    if not poll:
        recorded = Recorded()
        recorded.install()
        wait_handled = recorded.wait
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(_env_file=None, CRM_DATA_DIR=data, OPERATORS="terminal:bench")
        app = bootstrap(settings, handlers=instrument())
        app.add_terminal_surface(Console(file=io.StringIO(), width=100))
        app.start_jobs()
        bodies = signals(n + 1)
        totals: list[float] = []
        try:
            for i, signal in enumerate(bodies):
                body = json.dumps(signal).encode()
                began = time.perf_counter()
                accepted = accept_signal(app, body, f"bench:{i}")
                wait_handled(app, accepted.event_id, signal["type"])
                elapsed = time.perf_counter() - began
                if i == 0:
                    SPENT.clear()  # the first signal loads the models
                    continue
                totals.append(elapsed)
        finally:
            app.close()
        from agents.classifier.embedder import embed

        texts = [signal["text"] for signal in bodies[1:]]
        baseline = []
        for text in texts:
            began = time.perf_counter()
            embed([text + " "])  # a text the cache has not seen
            baseline.append(time.perf_counter() - began)

    count = len(totals)
    told = "polling the database every millisecond" if poll else "told by record_handled"
    print(f"{count} signals, one at a time (embedded default: SQLite, in-process queue, embedded Chroma)")
    print(f"handled: {told}")
    print("| step | mean ms per signal | share |")
    print("|---|---|---|")
    total_mean = statistics.fmean(totals) * 1000
    accounted = 0.0
    for name, spent in sorted(SPENT.items()):
        per_signal = sum(spent) / count * 1000
        if name.startswith("handler"):
            accounted += per_signal
        print(f"| {name} | {per_signal:.1f} | {per_signal / total_mean:.0%} |")
    rest = total_mean - accounted
    print(f"| queue and bookkeeping (the rest) | {rest:.1f} | {rest / total_mean:.0%} |")
    p50, p95 = percentile(totals, 0.5) * 1000, percentile(totals, 0.95) * 1000
    b50 = percentile(baseline, 0.5) * 1000
    print(f"signal → handled: p50 {p50:.0f} ms, p95 {p95:.0f} ms, mean {total_mean:.0f} ms")
    print(f"baseline, the classifier's embedding alone: p50 {b50:.0f} ms (ratio p50 {p50 / b50:.1f}x)")
    print(machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=120)
    parser.add_argument(
        "--poll", action="store_true", help="learn of a handled signal by polling the database"
    )
    args = parser.parse_args()
    run(args.signals, args.poll)


if __name__ == "__main__":
    main()
