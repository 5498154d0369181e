"""First sync of a large mailbox and new mail → proposal latency with IDLE, against a real Dovecot.

Run by hand: `.venv/bin/python bench/imap_bench.py [--messages 10000] [--samples 50] [--backend sqlite]`.
It starts its own Dovecot on a free loopback port (tests/standins/dovecot.py; needs `dovecot-imapd`),
fills one user's INBOX with MULTIAPPEND, and measures in the same run:

1. baseline: a bare imapclient session fetching every message (`BODY.PEEK[]`, batches of the watcher's
   size) and doing nothing with them: messages/s;
2. first sync: the App's mailbox watch taking the same messages (parse, record in the log, position)
   until it reports "watching": messages/s, and its ratio to the baseline (goal >= 0.5x);
3. latency: with the watch in IDLE and the triage agent handling each message in process, one new
   message APPENDed at a time, timed from just before the APPEND until its proposal is recorded
   (p50, p99; goal p50 < 1 s), and until the message is in the log (the watch's share). The triage is
   warmed up by one message first.

Nothing else runs in the process; each part has a database of its own, SQLite in a temporary directory,
or scratch Postgres databases (dropped at the end) with `--backend postgres`. (Sharing one let the
latency part's job threads triage the first sync's whole backlog while it measured.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit import machine  # noqa: E402

from bot.bootstrap import App, bootstrap  # noqa: E402
from bot.mailbox.watcher import FETCH_BATCH  # noqa: E402
from jobs import handlers as handler_table  # noqa: E402
from store import mailbox_positions as positions  # noqa: E402
from store import tables as t  # noqa: E402
from store.settings import load_settings  # noqa: E402
from tests.standins.dovecot import Dovecot, message, running_dovecot  # noqa: E402

PG_ADMIN = os.environ.get("CRM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
APPEND_CHUNK = 500  # messages per MULTIAPPEND command
PACE_S = 0.3  # between latency samples: the watch is idle again before the next message


def wait_until(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(0.005)


def fill(dovecot: Dovecot, user: str, count: int) -> None:
    client = dovecot.client(user)
    try:
        for start in range(0, count, APPEND_CHUNK):
            batch = [
                message(
                    sender=f"Customer {i} <c{i % 500}@customer{i % 97}.example>",
                    subject=f"Order {i}",
                    body=f"Hello, a question about order {i}: can you confirm the delivery date?",
                    message_id=f"<bench-{i}@customer.example>",
                )
                for i in range(start, min(start + APPEND_CHUNK, count))
            ]
            client.multiappend("INBOX", batch)
    finally:
        client.logout()


def bare_fetch(dovecot: Dovecot, user: str) -> tuple[int, float]:
    """Every message fetched with imapclient alone: (messages, seconds)."""
    started = time.perf_counter()
    client = dovecot.client(user)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search(["ALL"]))
    fetched = 0
    for start in range(0, len(uids), FETCH_BATCH):
        batch = client.fetch(uids[start : start + FETCH_BATCH], ["BODY.PEEK[]"])
        fetched += sum(1 for item in batch.values() if item.get(b"BODY[]"))
    client.logout()
    return fetched, time.perf_counter() - started


def count_events(app: App, event_type: str) -> int:
    with app.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.type == event_type)
        return int(connection.execute(query).scalar_one())


def watch(app: App) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    mailbox = app.mailbox
    assert mailbox is not None
    mailbox.say = lambda line: None
    thread = threading.Thread(target=mailbox.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def inbox_state(app: App) -> str | None:
    mailbox = app.mailbox
    assert mailbox is not None
    found = {s.folder: s.state for s in positions.statuses(app.engine, mailbox.config.account)}
    return found.get("INBOX")


def first_sync(dovecot: Dovecot, user: str, database_url: str, data_dir: Path, count: int) -> float:
    settings = load_settings(
        _env_file=None, CRM_DATA_DIR=str(data_dir), DATABASE_URL=database_url, IMAP_URL=dovecot.url(user)
    )
    app = bootstrap(settings, handlers={})
    started = time.perf_counter()
    stop, thread = watch(app)
    try:
        wait_until(lambda: inbox_state(app) == "watching", 3600)
        elapsed = time.perf_counter() - started
        recorded = count_events(app, "message.received")
        assert recorded == count, f"recorded {recorded} of {count}"
    finally:
        stop.set()
        thread.join(timeout=30)
        app.close()
    return elapsed


def latency(dovecot: Dovecot, database_url: str, data_dir: Path, samples: int) -> list[tuple[float, float]]:
    """Per new message: (seconds until it is in the log, seconds until its proposal is recorded)."""
    user = dovecot.new_user("lat")
    triage = handler_table.INBOX_TRIAGE
    settings = load_settings(
        _env_file=None, CRM_DATA_DIR=str(data_dir), DATABASE_URL=database_url, IMAP_URL=dovecot.url(user)
    )
    app = bootstrap(settings, handlers={triage: handler_table.HANDLERS[triage]})
    app.start_jobs()
    stop, thread = watch(app)
    client = dovecot.client(user)
    timings = []
    try:
        wait_until(lambda: inbox_state(app) == "watching", 60)
        for i in range(samples + 1):  # the first warms the triage up and is not counted
            received = count_events(app, "message.received")
            proposed = count_events(app, "proposal.recorded")
            sent = time.perf_counter()
            client.append("INBOX", message(subject=f"Question {i}", body="How much is the team plan?"))
            wait_until(lambda n=received: count_events(app, "message.received") > n, 120)
            logged = time.perf_counter() - sent
            wait_until(lambda n=proposed: count_events(app, "proposal.recorded") > n, 120)
            if i:
                timings.append((logged, time.perf_counter() - sent))
            time.sleep(PACE_S)
    finally:
        client.logout()
        stop.set()
        thread.join(timeout=30)
        app.close()
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def scratch_database(backend: str, directory: str, name: str) -> Iterator[str]:
    """A fresh database's URL: a SQLite file in `directory`, or a Postgres database dropped afterwards."""
    if backend != "postgres":
        yield f"sqlite:///{directory}/{name}.sqlite3"
        return
    scratch = f"crm_imap_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{scratch}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp, running_dovecot() as dovecot:
        user = dovecot.new_user("bulk")
        started = time.perf_counter()
        fill(dovecot, user, args.messages)
        print(f"filled INBOX with {args.messages} messages in {time.perf_counter() - started:.1f} s")
        fetched, bare = bare_fetch(dovecot, user)
        bare_rate = fetched / bare
        print(f"baseline, bare imapclient FETCH: {fetched} messages in {bare:.2f} s = {bare_rate:.0f}/s")
        with scratch_database(args.backend, tmp, "sync") as database_url:
            synced = first_sync(dovecot, user, database_url, Path(tmp) / "data", args.messages)
        rate = args.messages / synced
        print(
            f"first sync ({args.backend}): {args.messages} messages in {synced:.2f} s = {rate:.0f}/s "
            f"({rate / bare_rate:.3f}x the bare FETCH; goal >= 0.5x)"
        )
        with scratch_database(args.backend, tmp, "latency") as database_url:
            timings = latency(dovecot, database_url, Path(tmp) / "data-latency", args.samples)
        logged, proposed = ([one[k] for one in timings] for k in (0, 1))
        print(
            f"new mail -> proposal with IDLE, {len(timings)} samples: "
            f"p50 {statistics.median(proposed) * 1000:.0f} ms, "
            f"p99 {percentile(proposed, 0.99) * 1000:.0f} ms (goal p50 < 1 s); "
            f"of which new mail -> in the log: p50 {statistics.median(logged) * 1000:.0f} ms, "
            f"p99 {percentile(logged, 0.99) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
