"""Memory benchmark (run by hand): recall latency against a raw Chroma query, embedding throughput,
resident memory with the model loaded.

    /work/venv/bin/python bench/memory_bench.py [--sizes 10000,100000] [--queries 200]

Recall is timed with precomputed query vectors (embedding is reported on its own), for one customer's
filter and for all customers, next to `collection.query` with the same vector and filter in the same run,
interleaved so both see the same machine load. Memory vectors are precomputed too: a few thousand real
embeddings of synthetic CRM texts, jittered to fill the larger collections.
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


def fill(memory: Memory, size: int, base: np.ndarray, docs: list[str]) -> list[str]:
    rng = np.random.default_rng(size)
    customers = [f"cus_{i:05d}" for i in range(max(1, size * CUSTOMERS_PER_10K // 10_000))]
    for start in range(0, size, CHROMA_BATCH):
        idx = np.arange(start, min(size, start + CHROMA_BATCH))
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
    return customers


def _at(i: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i)


def time_recall(
    memory: Memory, customers: list[str], queries: np.ndarray, filtered: bool
) -> dict[str, float]:
    ours, raw = [], []
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
        raw.append((t1 - t0) * 1000)
        ours.append((t2 - t1) * 1000)
    return {
        "ours_p50": pct(ours, 0.5),
        "ours_p95": pct(ours, 0.95),
        "raw_p50": pct(raw, 0.5),
        "raw_p95": pct(raw, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
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
            memory = Memory(data_dir=Path(tmp), embedder=embedder)
            t0 = time.perf_counter()
            customers = fill(memory, size, base, docs)
            fill_s = time.perf_counter() - t0
            for filtered in (True, False):
                r = time_recall(memory, customers, query_vecs, filtered)
                scope = f"one customer (~{size // len(customers)})" if filtered else "all customers"
                print(
                    f"{size:>7} memories, {scope:>22}: "
                    f"recall p50 {r['ours_p50']:.2f} ms p95 {r['ours_p95']:.2f} ms"
                    f" | raw p50 {r['raw_p50']:.2f} ms p95 {r['raw_p95']:.2f} ms"
                    f" | ratio p95 {r['ours_p95'] / r['raw_p95']:.2f}"
                )
            print(f"{size:>7} memories: insert {fill_s:.1f}s ({size / fill_s:.0f}/s), RSS {rss_mb():.0f} MB")
            memory.close()


if __name__ == "__main__":
    main()
