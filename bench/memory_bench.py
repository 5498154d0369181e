"""Memory benchmark (run by hand): recall latency against a raw Chroma query, embedding throughput,
resident memory with the model loaded.

    /work/venv/bin/python bench/memory_bench.py [--sizes 10000,100000] [--queries 200] [--keep DIR]

Recall is timed with precomputed query vectors (embedding is reported on its own), for one customer's
filter and for all customers, next to `collection.query` with the same vector and filter in the same run,
interleaved so all see the same machine load. For one customer it is timed three ways: "ours" ranks the
customer's vectors kept beside the log (store.memory.vectors, in a SQLite database beside the collection,
which also holds one event per memory) and asks Chroma for the texts of the best five only, "by id" finds
the memories by id from the log and asks Chroma for their vectors (the path before the rows beside the
log), "by filter" uses Chroma's metadata filter (a memory without a database). A build written before the
rows existed is copied into them first, as the memory projection does, and the copy is timed. Memory
vectors are precomputed too: a few thousand real embeddings of synthetic CRM texts, jittered to fill the
larger collections.
--keep DIR keeps each size's collection and log in DIR/<size> and carries on from what is there, so a
million memories can be built over several runs.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from benchkit import machine
from sqlalchemy import Engine, func, insert, select

from store import tables as t
from store.db import make_engine, migrate
from store.memory.embeddings import MiniLMEmbedding
from store.memory.recall import recall
from store.memory.records import MemoryRecord
from store.memory.service import Memory

SUBJECTS = ["invoice", "renewal", "booking", "refund", "SMS reminders", "API access", "VAT", "onboarding"]
ASKS = [
    "asked about",
    "complained about",
    "wants a discount on",
    "needs help with",
    "praised",
    "is confused by",
]
DETAILS = [
    "before Friday",
    "for the Antwerp depot",
    "on the mobile app",
    "for 25 seats",
    "next quarter",
    "again",
]
UNIQUE_TEXTS = 1_000  # real embeddings; larger collections reuse them with jitter
CUSTOMERS_PER_10K = 100  # about 100 memories per customer, a busy customer's history
CHROMA_BATCH = 2_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Customer {rng.choice(ASKS)} the {rng.choice(SUBJECTS)} {rng.choice(DETAILS)} (ticket {i})."
        for i in range(n)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(
    memory: Memory, engine: Engine, upto: int, size: int, base: np.ndarray, docs: list[str]
) -> list[str]:
    """Fill the collection and the log up to upto of size (from what they hold); the customers."""
    customers = [f"cus_{i:05d}" for i in range(max(1, size * CUSTOMERS_PER_10K // 10_000))]
    held = int(memory.hot.count())
    # A partial build is resumed from its last whole batch (upserts make the overlap harmless).
    first = held - held % CHROMA_BATCH
    rng = np.random.default_rng(size + first)
    for start in range(first, upto, CHROMA_BATCH):
        idx = np.arange(start, min(upto, start + CHROMA_BATCH))
        vecs = base[idx % len(base)] + rng.normal(0, 0.03, (len(idx), base.shape[1]))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        records = [
            MemoryRecord(
                id=f"ev{i}#0",
                customer_id=customers[i % len(customers)],
                event_id=f"ev{i}",
                position=int(i) + 1,
                kind="message" if i % 3 else "note",
                event_type="message.received",
                text=docs[i % len(docs)],
                occurred_at=_at(int(i)),
                confidence=1.0,
            )
            for i in idx
        ]
        memory.hot.upsert(
            ids=[r.id for r in records],
            documents=[r.text for r in records],
            metadatas=[r.metadata() for r in records],
            embeddings=vecs.tolist(),
        )
    log(engine, upto, customers)
    return customers


def log(engine: Engine, size: int, customers: list[str]) -> None:
    """One event per memory on its customer's stream, as the projection would have read them."""
    with engine.connect() as connection:
        held = int(connection.execute(select(func.count()).select_from(t.events)).scalar_one())
    for start in range(held, size, 10 * CHROMA_BATCH):
        rows = [
            {
                "position": i + 1,
                "id": f"ev{i}",
                "stream": customers[i % len(customers)],
                "type": "message.received",
                "version": 1,
                "payload": {},
                "actor": "bench",
                "source": "bench",
                "occurred_at": _at(i),
                "recorded_at": _at(i),
                "idempotency_key": f"bench:{i}",
            }
            for i in range(start, min(size, start + 10 * CHROMA_BATCH))
        ]
        with engine.begin() as connection:
            connection.execute(insert(t.events), rows)


def _at(i: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i)


class ById(Memory):
    """Recall as it was before the rows beside the log: ids from the log, vectors from Chroma."""

    def ranking_index(self) -> None:
        return None


def time_recall(
    memory: Memory,
    by_id: Memory,
    by_filter: Memory,
    customers: list[str],
    queries: np.ndarray,
    filtered: bool,
) -> dict[str, float]:
    """Percentiles of raw Chroma, recall ("ours") and, for one customer, recall by id and by metadata
    filter."""
    ours, raw, before, ids = [], [], [], []
    rng = random.Random(1)
    for q in queries:
        customer = rng.choice(customers) if filtered else None
        vector = q.tolist()
        t0 = time.perf_counter()
        memory.hot.query(
            query_embeddings=[vector],
            n_results=5,
            where={"customer_id": {"$in": [customer]}} if customer else None,
            include=["documents", "metadatas", "distances"],
        )
        t1 = time.perf_counter()
        recall(memory, "", customer_id=customer, limit=5, query_embedding=vector)
        t2 = time.perf_counter()
        if customer:
            recall(by_id, "", customer_id=customer, limit=5, query_embedding=vector)
            t3 = time.perf_counter()
            recall(by_filter, "", customer_id=customer, limit=5, query_embedding=vector)
            before.append((time.perf_counter() - t3) * 1000)
            ids.append((t3 - t2) * 1000)
        raw.append((t1 - t0) * 1000)
        ours.append((t2 - t1) * 1000)
    figures = {"ours": ours, "raw": raw, "before": before or [0.0], "ids": ids or [0.0]}
    return {f"{name}_p{q}": pct(values, q / 100) for name, values in figures.items() for q in (50, 95)}


def time_alone(memory: Memory, customers: list[str], queries: np.ndarray) -> tuple[float, float]:
    """p50 and p95 of recall for one customer with nothing run between the queries (the same customers
    and vectors as time_recall, which runs after it). Run first, right after the collection is opened,
    it is the cold case: each customer's memories read from disk, as for a customer not heard from
    since the process started."""
    timings = []
    rng = random.Random(1)
    for q in queries:
        customer = rng.choice(customers)
        t0 = time.perf_counter()
        recall(memory, "", customer_id=customer, limit=5, query_embedding=q.tolist())
        timings.append((time.perf_counter() - t0) * 1000)
    return pct(timings, 0.5), pct(timings, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep (and resume) the collections in this directory")
    parser.add_argument("--no-build", action="store_true", help="time what --keep holds, adding nothing")
    args = parser.parse_args()
    print(f"machine: {machine()}")

    before = rss_mb()
    embedder = MiniLMEmbedding()
    t0 = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t0
    embedder(["warm up"])
    loaded = rss_mb()
    docs = texts(UNIQUE_TEXTS)
    t0 = time.perf_counter()
    base = np.array(embedder.encode(docs))
    embed_s = time.perf_counter() - t0
    after_embed = rss_mb()
    t0 = time.perf_counter()
    for text in docs[:200]:
        embedder([text])
    single_ms = (time.perf_counter() - t0) / 200 * 1000
    print(
        f"model load {load_s:.2f}s; RSS {before:.0f} MB before, {loaded:.0f} MB loaded, "
        f"{after_embed:.0f} MB after embedding {UNIQUE_TEXTS} texts"
    )
    rate = UNIQUE_TEXTS / embed_s
    print(f"embedding: {rate:.0f} texts/s batched ({embed_s:.2f}s), {single_ms:.1f} ms per query")

    query_vecs = np.array(embedder.encode(texts(args.queries, seed=99)))
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            where = (args.keep or Path(tmp)) / str(size)
            engine = make_engine(f"sqlite:///{where / 'crm.db'}")
            migrate(engine)
            memory = Memory(data_dir=where, embedder=embedder, engine=engine)
            by_id = ById(data_dir=where, embedder=embedder, engine=engine)
            by_filter = Memory(data_dir=where, embedder=embedder)
            held = int(memory.hot.count())
            t0 = time.perf_counter()
            customers = fill(memory, engine, held if args.no_build else size, size, base, docs)
            fill_s = time.perf_counter() - t0
            count = int(memory.hot.count())
            if memory.ranking_index() is None:
                t0 = time.perf_counter()
                copied = memory.backfill_vectors(
                    lambda n: print(f"  {n} vectors copied", end="\r", flush=True)
                )
                copy_s = time.perf_counter() - t0
                print(f"\n{copied} vectors copied beside the log in {copy_s:.1f}s ({copied / copy_s:.0f}/s)")
            alone_p50, alone_p95 = time_alone(memory, customers, query_vecs)
            print(
                f"{count:>7} memories, one customer, first pass (cold, nothing in between): "
                f"p50 {alone_p50:.2f} ms p95 {alone_p95:.2f} ms"
            )
            for filtered in (True, False):
                r = time_recall(memory, by_id, by_filter, customers, query_vecs, filtered)
                scope = f"one customer (~{count // len(customers)})" if filtered else "all customers"
                before = (
                    f" | by id p50 {r['ids_p50']:.2f} ms p95 {r['ids_p95']:.2f} ms"
                    f" | by filter p50 {r['before_p50']:.2f} ms p95 {r['before_p95']:.2f} ms"
                    if filtered
                    else ""
                )
                print(
                    f"{count:>7} memories, {scope:>22}: "
                    f"recall p50 {r['ours_p50']:.2f} ms p95 {r['ours_p95']:.2f} ms{before}"
                    f" | raw p50 {r['raw_p50']:.2f} ms p95 {r['raw_p95']:.2f} ms"
                    f" | ratio p95 {r['ours_p95'] / r['raw_p95']:.2f}"
                )
            added = count - held
            print(
                f"{count:>7} memories: {added} inserted in {fill_s:.1f}s "
                f"({added / max(fill_s, 1e-9):.0f}/s), "
                f"RSS {rss_mb():.0f} MB, {machine()}"
            )
            memory.close()
            by_id.close()
            by_filter.close()
            engine.dispose()


if __name__ == "__main__":
    main()
