"""Hybrid recall: a deterministic filter first (customer, kinds, time range), then semantic ranking.

The filter is applied before ranking, so a recall for one customer can only ever rank that customer's
memories; the results are checked against the filter again on the way out. A customer's memories are
fetched by id (the log names them) and filtered here; Chroma's `where` serves the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from store.memory.records import RAW_KINDS, Kind, MemoryRecord, Recalled, epoch_seconds, memory_id

if TYPE_CHECKING:
    from store.memory.service import Memory

logger = logging.getLogger(__name__)

# The most a caller may ask for at once: recall feeds a prompt, not a report.
MAX_LIMIT = 100
# Raw memories considered for a context slice before the budget cuts them.
CONTEXT_CANDIDATES = 8
# Filtered sets up to this size are ranked exactly in numpy instead of by Chroma's filtered HNSW search.
# A customer's memories are a few hundred; Chroma's filtered search over a big collection walks much
# of the graph (measured: 92 ms p50 for 100 of 50,000 memories, against 11 ms exact), and exact
# ranking also never misses a match the approximate index would skip.
EXACT_MAX = 2_000
# Ids per Chroma `get`: Chroma caps the size of one request.
PAGE = 1_000
# Marks text shortened to fit a context budget (the stored memory is never shortened).
ELLIPSIS = " …"


def where_filter(
    customer_ids: Sequence[str] | None,
    kinds: Sequence[Kind] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any] | None:
    """Chroma `where` for the deterministic part of a recall (None when there is nothing to filter)."""
    clauses: list[dict[str, Any]] = []
    if customer_ids is not None:
        if not customer_ids:
            raise ValueError("a customer filter needs at least one customer id")
        clauses.append({"customer_id": {"$in": list(customer_ids)}})
    if kinds:
        clauses.append({"kind": {"$in": list(kinds)}})
    if since is not None:
        clauses.append({"occurred_ts": {"$gte": epoch_seconds(since)}})
    if until is not None:
        clauses.append({"occurred_ts": {"$lte": epoch_seconds(until)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _passes(
    meta: dict[str, Any],
    allowed: set[str],
    kinds: Sequence[Kind] | None,
    since: datetime | None,
    until: datetime | None,
) -> bool:
    """The test `where_filter` asks Chroma for, on one record's metadata."""
    ts = int(meta["occurred_ts"])
    return (
        meta["customer_id"] in allowed
        and (not kinds or meta["kind"] in kinds)
        and (since is None or ts >= epoch_seconds(since))
        and (until is None or ts <= epoch_seconds(until))
    )


def customer_memories(
    memory: Memory,
    customer_ids: Sequence[str],
    kinds: Sequence[Kind] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    include: Sequence[str] = (),
    cap: int | None = None,
) -> dict[str, list[Any]]:
    """The hot memories of these customers that pass the filter, as Chroma's `get` columns.

    Returns "ids" and the include columns; stops early once more than cap pass. With a database the
    ids come from the log and Chroma looks them up by id, because its metadata filter scans the
    collection (at 100,000 memories, on a loaded machine: 73 ms p50 for one customer's ids, 12 ms by id).
    """
    first = memory.written_ids(customer_ids)
    if first is None:
        where = where_filter(customer_ids, kinds, since, until)
        found = memory.hot.get(where=where, include=list(include), limit=None if cap is None else cap + 1)
        return {key: list(found[key]) for key in ("ids", *include)}
    # The filter reads the metadata, so it is fetched whether asked for or not.
    columns = list(dict.fromkeys(["metadatas", *include]))
    allowed = set(customer_ids)
    kept: dict[str, list[Any]] = {key: [] for key in ("ids", *include)}
    pending = first
    while pending:
        later: list[str] = []
        for start in range(0, len(pending), PAGE):
            found = memory.hot.get(ids=pending[start : start + PAGE], include=columns)
            for row, meta in enumerate(found["metadatas"]):
                # The projection writes, archives and forgets an event's chunks together, and
                # chunk 0 says how many there are.
                if int(meta.get("chunk", 0)) == 0:
                    event_id = str(meta["event_id"])
                    later.extend(memory_id(event_id, c) for c in range(1, int(meta.get("chunks", 1))))
                if _passes(meta, allowed, kinds, since, until):
                    for key, values in kept.items():
                        values.append(found[key][row])
            if cap is not None and len(kept["ids"]) > cap:
                return kept
        pending = later
    return kept


def recall(
    memory: Memory,
    query: str,
    *,
    customer_id: str | None,
    kinds: Sequence[Kind] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 5,
    query_embedding: Sequence[float] | None = None,
) -> list[Recalled]:
    """The `limit` memories closest in meaning to query among those the filter lets through.

    query_embedding skips embedding the query (benchmarks measure ranking apart from embedding).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    customer_ids = memory.aliases(customer_id) if customer_id is not None else None
    raw = query_embedding if query_embedding is not None else memory.embedder([query])[0]
    embedding = [float(x) for x in raw]
    ranked = None
    if customer_ids is not None:
        candidates = customer_memories(
            memory, customer_ids, kinds, since, until, include=["embeddings"], cap=EXACT_MAX
        )
        ranked = _exact(memory, embedding, candidates, limit)
    if ranked is None:
        found = memory.hot.query(
            query_embeddings=[embedding],
            n_results=limit,
            where=where_filter(customer_ids, kinds, since, until),
            include=["documents", "metadatas", "distances"],
        )
        # Cosine distance is 1 - cosine similarity; the score is the similarity.
        ranked = [
            (MemoryRecord.from_chroma(i, d, m), 1.0 - float(distance))
            for i, d, m, distance in zip(
                found["ids"][0],
                found["documents"][0],
                found["metadatas"][0],
                found["distances"][0],
                strict=True,
            )
        ]
    allowed = set(customer_ids) if customer_ids is not None else None
    results = []
    for record, score in ranked:
        if allowed is not None and record.customer_id not in allowed:
            # Unreachable while the filter holds; if it ever did not, drop rather than leak.
            logger.error(
                "recall for %s got %s's memory %s; dropped", customer_id, record.customer_id, record.id
            )
            continue
        results.append(Recalled.of(record, round(score, 6)))
    return results


def _exact(
    memory: Memory, embedding: Sequence[float], candidates: dict[str, list[Any]], limit: int
) -> list[tuple[MemoryRecord, float]] | None:
    """Rank the filtered set exactly when it is small (None when it is too big: use the index)."""
    ids = candidates["ids"]
    if len(ids) > EXACT_MAX:
        return None
    if not ids:
        return []
    vectors = np.asarray(candidates["embeddings"], dtype=np.float32)
    query = np.asarray(embedding, dtype=np.float32)
    scores = vectors @ (query / max(float(np.linalg.norm(query)), 1e-12))
    # Highest score first; ties by id so the order never depends on storage order.
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))[:limit]
    top = [ids[i] for i in order]
    found = memory.hot.get(ids=top, include=["documents", "metadatas"])
    by_id = {
        i: MemoryRecord.from_chroma(i, d, m)
        for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    }
    return [(by_id[ids[i]], float(scores[i])) for i in order if ids[i] in by_id]


def latest_summary(memory: Memory, customer_ids: Sequence[str]) -> MemoryRecord | None:
    """The newest roll-up of these customers (exact filter, no embedding)."""
    found = customer_memories(memory, customer_ids, kinds=["summary"], include=["documents", "metadatas"])
    records = [
        MemoryRecord.from_chroma(i, d, m)
        for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    ]
    return max(records, key=lambda r: (r.occurred_at, r.position, -r.chunk), default=None)


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - len(ELLIPSIS), 0)].rstrip() + ELLIPSIS


def context_memories(memory: Memory, customer_id: str, query: str, budget_chars: int) -> list[Recalled]:
    """The latest summary, then the most relevant raw memories, while their texts fit budget_chars."""
    if budget_chars <= 0:
        return []
    customer_ids = memory.aliases(customer_id)
    chosen: list[Recalled] = []
    used = 0
    summary = latest_summary(memory, customer_ids)
    if summary is not None:
        # A summary longer than the whole budget is shown shortened (and marked) rather than dropped:
        # it is the one memory that covers everything archived.
        text = _fit(summary.text, budget_chars)
        chosen.append(Recalled.of(summary, 1.0).model_copy(update={"text": text}))
        used += len(text)
    if query.strip():
        candidates = recall(memory, query, customer_id=customer_id, kinds=RAW_KINDS, limit=CONTEXT_CANDIDATES)
    else:
        candidates = _most_recent(memory, customer_ids, CONTEXT_CANDIDATES)
    for candidate in candidates:
        if used + len(candidate.text) > budget_chars:
            continue  # a shorter, less relevant memory may still fit
        chosen.append(candidate)
        used += len(candidate.text)
    return chosen


def _most_recent(memory: Memory, customer_ids: Sequence[str], limit: int) -> list[Recalled]:
    found = customer_memories(memory, customer_ids, kinds=RAW_KINDS, include=["documents", "metadatas"])
    records = [
        MemoryRecord.from_chroma(i, d, m)
        for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    ]
    # Chunks of one event share its time and position: first chunk first, whatever the storage order.
    records.sort(key=lambda r: (r.occurred_at, r.position, -r.chunk), reverse=True)
    return [Recalled.of(r, 0.0) for r in records[:limit]]
