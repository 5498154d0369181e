"""Hybrid recall: a deterministic filter first (customer, kinds, time range), then semantic ranking.

The filter is applied before ranking, so a recall for one customer can only ever rank that customer's
memories; the results are checked against the filter again on the way out. A customer's memories are
fetched by id (the log names them) and filtered here; Chroma's `where` serves the rest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from store.memory.records import (
    RAW_KINDS,
    Kind,
    MemoryRecord,
    Recalled,
    epoch_seconds,
    memory_id,
)

if TYPE_CHECKING:
    from store.memory.service import Memory
    from store.memory.vectors import VectorIndex

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


def held(memory: Memory, first: Sequence[str], include: Sequence[str]) -> dict[str, list[Any]]:
    """Those of these chunk-0 ids that the hot collection holds, with every further chunk of theirs.

    The projection writes, archives and forgets an event's chunks together, so chunk k+1 is looked for
    only where chunk k was found: id lookups, no metadata needed. Chunks 0 and 1 are asked for at once
    because a request costs more than the ids of one-chunk memories that are not there.
    """
    found: dict[str, list[Any]] = {key: [] for key in ("ids", *include)}
    pending = [*first, *(_next_chunk(i) for i in first)]
    while pending:
        present: list[str] = []
        for start in range(0, len(pending), PAGE):
            page = memory.hot.get(ids=pending[start : start + PAGE], include=list(include))
            for key, values in found.items():
                values.extend(page[key])
            present.extend(page["ids"])
        pending = [_next_chunk(i) for i in present if not i.endswith("#0")]
    return found


def _next_chunk(record_id: str) -> str:
    event_id, chunk = record_id.rsplit("#", 1)
    return memory_id(event_id, int(chunk) + 1)


def customer_memories(
    memory: Memory,
    customer_ids: Sequence[str],
    kinds: Sequence[Kind] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    include: Sequence[str] = (),
) -> dict[str, list[Any]]:
    """The hot memories of these customers that pass the filter, as Chroma's `get` columns (ids and
    the include columns).

    With a database the ids come from the log and Chroma looks them up by id, because its metadata
    filter scans the collection (at 100,000 memories, on a loaded machine: 73 ms p50 for one customer's
    ids, 12 ms by id).
    """
    first = memory.written_ids(customer_ids)
    if first is None:
        found = memory.hot.get(where=where_filter(customer_ids, kinds, since, until), include=list(include))
        return {key: list(found[key]) for key in ("ids", *include)}
    # The filter reads the metadata, so it is fetched whether asked for or not.
    found = held(memory, first, list(dict.fromkeys(["metadatas", *include])))
    allowed = set(customer_ids)
    rows = [row for row, meta in enumerate(found["metadatas"]) if _passes(meta, allowed, kinds, since, until)]
    return {key: [found[key][row] for row in rows] for key in ("ids", *include)}


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
    index = memory.ranking_index() if customer_id is not None else None
    raw = query_embedding if query_embedding is not None else memory.embedder([query])[0]
    embedding = [float(x) for x in raw]
    ranked = None
    if index is not None and customer_id is not None:
        rows = index.candidates(customer_id, kinds, since, until)
        customer_ids: list[str] | None = rows.aliases
        test = functools.partial(_passes, allowed=set(rows.aliases), kinds=kinds, since=since, until=until)
        ranked = _top(memory, embedding, rows.ids, rows.vectors, test, limit)
    elif customer_id is not None:
        customer_ids, first = memory.aliases_and_written_ids(customer_id)
        ranked = _exact(memory, embedding, customer_ids, first, kinds, since, until, limit)
    else:
        customer_ids = None
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
    memory: Memory,
    embedding: Sequence[float],
    customer_ids: Sequence[str],
    first: Sequence[str] | None,
    kinds: Sequence[Kind] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[tuple[MemoryRecord, float]] | None:
    """Rank the customers' memories exactly when they are few (None when too many: use the index).

    `first`: Memory.written_ids of the customers (None without a database). By id, every memory of the
    customers is ranked on its vector alone and the filter is tested on the metadata of the best ones
    only, which spares reading the metadata of them all.
    """
    if first is None or len(first) > EXACT_MAX:
        where = where_filter(customer_ids, kinds, since, until)
        candidates = memory.hot.get(where=where, include=["embeddings"], limit=EXACT_MAX + 1)
        test = None
    else:
        candidates = held(memory, first, ["embeddings"])
        allowed = set(customer_ids)
        test = functools.partial(_passes, allowed=allowed, kinds=kinds, since=since, until=until)
    ids = candidates["ids"]
    if len(ids) > EXACT_MAX:
        return None
    return _top(memory, embedding, ids, candidates["embeddings"], test, limit)


def _top(
    memory: Memory,
    embedding: Sequence[float],
    ids: Sequence[str],
    vectors: Any,
    test: Callable[[dict[str, Any]], bool] | None,
    limit: int,
) -> list[tuple[MemoryRecord, float]]:
    """The `limit` best of these memories by their vectors whose metadata passes test, with texts."""
    if not ids:
        return []
    # float64, so a memory's rounded score does not depend on which others are ranked with it: float32
    # products differ in the 7th digit with the shape of the matrix, enough to change the 6th decimal.
    matrix = np.asarray(vectors, dtype=np.float64)
    query = np.asarray(embedding, dtype=np.float64)
    scores = matrix @ (query / max(float(np.linalg.norm(query)), 1e-12))
    # Highest score first; ties by id so the order never depends on storage order.
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))
    ranked: list[tuple[MemoryRecord, float]] = []
    start, size = 0, limit
    # The best few usually pass the filter; read further, in growing slices, only when they do not.
    # A memory Chroma no longer holds (archived or forgotten since its id was read) is not found.
    while start < len(order) and len(ranked) < limit:
        by_id = _texts(memory, [ids[i] for i in order[start : start + size]])
        for i in order[start : start + size]:
            if ids[i] in by_id and (test is None or test(by_id[ids[i]][1])):
                ranked.append((MemoryRecord.from_chroma(ids[i], *by_id[ids[i]]), float(scores[i])))
        start, size = start + size, min(size * 4, PAGE)
    return ranked[:limit]


def latest_summary(memory: Memory, customer_ids: Sequence[str]) -> MemoryRecord | None:
    """The newest roll-up of these customers (exact filter, no embedding)."""
    index = memory.ranking_index()
    if index is not None:
        return next(iter(_newest(memory, index, customer_ids, ["summary"], 1)), None)
    records = _records(customer_memories(memory, customer_ids, kinds=["summary"], include=TEXTS))
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
    index = memory.ranking_index()
    if index is not None:
        return [Recalled.of(r, 0.0) for r in _newest(memory, index, customer_ids, RAW_KINDS, limit)]
    records = _records(customer_memories(memory, customer_ids, kinds=RAW_KINDS, include=TEXTS))
    # Chunks of one event share its time and position: first chunk first, whatever the storage order.
    records.sort(key=lambda r: (r.occurred_at, r.position, -r.chunk), reverse=True)
    return [Recalled.of(r, 0.0) for r in records[:limit]]


def _newest(
    memory: Memory, index: VectorIndex, customer_ids: Sequence[str], kinds: Sequence[Kind], limit: int
) -> list[MemoryRecord]:
    """The `limit` newest memories of these kinds, newest first, by the rows beside the log; asks for
    more when Chroma no longer holds some of them (archived or forgotten since)."""
    asked = limit
    while True:
        ids = index.newest(customer_ids, asked, kinds)
        by_id = _texts(memory, ids)
        records = [MemoryRecord.from_chroma(i, *by_id[i]) for i in ids if i in by_id]
        if len(records) >= limit or len(ids) < asked:
            return records[:limit]
        asked *= 4


# What a memory's text is read with.
TEXTS = ("documents", "metadatas")


def _texts(memory: Memory, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """(text, metadata) of those of these memories the hot collection still holds, by id."""
    if not ids:
        return {}
    found = memory.hot.get(ids=list(ids), include=list(TEXTS))
    return {i: (d, m) for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)}


def _records(found: dict[str, list[Any]]) -> list[MemoryRecord]:
    """The records of what Chroma returned with TEXTS."""
    return [
        MemoryRecord.from_chroma(i, d, m)
        for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    ]
