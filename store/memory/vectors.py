"""Each customer's memory vectors beside the log: the ranking half of a one-customer recall.

Chroma finds one customer's memories either with its metadata filter, which scans the collection, or by
id, one lookup per memory in a collection of millions, cold on disk for a customer not heard from in a
while (measured at 1,000,000 memories: p95 36 to 49 ms, a cold pass 63 ms). This table holds what recall
ranks and filters on for every memory of a hot collection — customer, kind, time, position, chunk and
the vector — indexed by customer, so a one-customer recall is one indexed read of that customer's rows
(the merge group in the same statement) and a numpy product; Chroma is asked only for the texts of the
few it returns.

The table mirrors the hot collection (it is not a projection of the log; `crm replay` leaves it alone):
rows are written after Chroma on every upsert and removed before Chroma on archive and forget, and the
memory projection moves its position only after both, so a crash between them is repaired when the
event is applied again. A row whose memory Chroma no longer holds is skipped when the texts are read. A
collection written before the table existed is copied into it once (`backfill`, run by the memory
projection); until a collection is marked complete, recall asks Chroma as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from store import tables as t
from store.memory.records import Kind, MemoryRecord, epoch_seconds
from store.slice import group_query

log = logging.getLogger(__name__)

# Rows per statement.
PAGE = 1_000
_V = t.memory_vectors
_SETS = t.memory_vector_sets


def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_V)
    keys = {"collection", "id"}  # ux_memory_vectors_id
    return stmt.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={c.name: stmt.excluded[c.name] for c in _V.c if c.name not in keys},
    )


_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
_COMPLETE = {
    name: dialect.insert(_SETS).on_conflict_do_nothing(index_elements=["collection"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_IS_COMPLETE = select(_SETS.c.collection).where(_SETS.c.collection == bindparam("collection"))
# The statements of a read, built once per combination of filters (building one costs more than
# running it); keyed by (kinds given, since given, until given, newest first with a limit).
_READS: dict[tuple[bool, bool, bool, bool], Any] = {}


def micros(moment: datetime) -> int:
    """Microseconds since 1970, UTC: orders memories exactly as their times do."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Candidates:
    """A customer's merge group and, of the group's memories that pass the filter, ids and vectors."""

    aliases: list[str]
    ids: list[str]
    vectors: np.ndarray  # float32, one row per id


def _read(kinds: bool, since: bool, until: bool, newest: bool) -> Any:
    key = (kinds, since, until, newest)
    stmt = _READS.get(key)
    if stmt is not None:
        return stmt
    v = _V.c
    on = [v.collection == bindparam("collection")]
    if kinds:
        on.append(v.kind.in_(bindparam("kinds", expanding=True)))
    if since:
        on.append(v.occurred_us >= bindparam("since"))
    if until:
        on.append(v.occurred_us < bindparam("until"))
    if newest:
        # The order of the Chroma path's most-recent sort: time, then log position, first chunk first.
        stmt = (
            select(v.id)
            .where(v.customer_id.in_(bindparam("customers", expanding=True)), *on)
            .order_by(v.occurred_us.desc(), v.position.desc(), v.chunk)
            .limit(bindparam("limit"))
        )
    else:
        # An outer join: the group's members come back even where they have no memories.
        group = group_query().cte("vector_group")
        on.append(v.customer_id == group.c.id)
        stmt = select(group.c.id, v.id, v.vector).select_from(group.outerjoin(_V, and_(*on)))
    _READS[key] = stmt
    return stmt


class VectorIndex:
    """The memory_vectors rows of one Chroma collection."""

    def __init__(self, engine: Engine, collection: str) -> None:
        self.engine = engine
        self.collection = collection
        self._complete = False

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, records: Sequence[MemoryRecord], embeddings: Any) -> None:
        """Write (or overwrite) the rows of these records, with the vectors Chroma was given."""
        vectors = np.asarray(embeddings, dtype="<f4")
        rows = [
            {
                "collection": self.collection,
                "id": r.id,
                "customer_id": r.customer_id,
                "kind": r.kind,
                "occurred_us": micros(r.occurred_at),
                "position": r.position,
                "chunk": r.chunk,
                "vector": vectors[i].tobytes(),
            }
            for i, r in enumerate(records)
        ]
        with self.engine.begin() as connection:
            stmt = _UPSERT[connection.dialect.name]
            for start in range(0, len(rows), PAGE):
                connection.execute(stmt, rows[start : start + PAGE])

    def delete_ids(self, ids: Sequence[str]) -> None:
        v = _V.c
        with self.engine.begin() as connection:
            for start in range(0, len(ids), PAGE):
                part = list(ids[start : start + PAGE])
                connection.execute(delete(_V).where(v.collection == self.collection, v.id.in_(part)))

    def delete_customers(self, customer_ids: Sequence[str]) -> None:
        v = _V.c
        with self.engine.begin() as connection:
            connection.execute(
                delete(_V).where(v.collection == self.collection, v.customer_id.in_(list(customer_ids)))
            )

    def clear(self) -> None:
        """Remove every row of the collection and mark it complete (it is empty, as Chroma's is)."""
        with self.engine.begin() as connection:
            connection.execute(delete(_V).where(_V.c.collection == self.collection))
            self._mark_complete(connection)

    def mark_complete(self) -> None:
        with self.engine.begin() as connection:
            self._mark_complete(connection)

    def _mark_complete(self, connection: Any) -> None:
        now = datetime.now(UTC)
        connection.execute(
            _COMPLETE[connection.dialect.name], {"collection": self.collection, "complete_at": now}
        )
        self._complete = True

    def complete(self) -> bool:
        """True once the rows mirror the whole collection (remembered once seen: it stays so)."""
        if not self._complete:
            with self.engine.connect() as connection:
                found = connection.execute(_IS_COMPLETE, {"collection": self.collection}).first()
            self._complete = found is not None
        return self._complete

    # -- reads ------------------------------------------------------------------------------------

    def candidates(
        self,
        customer_id: str,
        kinds: Sequence[Kind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Candidates:
        """The merge group of customer_id and its memories that pass the filter, in one statement.

        since/until compare whole seconds, as Chroma's `occurred_ts` filter does.
        """
        params = self._params(customer_id, kinds, since, until)
        aliases, ids, blobs = [customer_id], [], []
        with self.engine.connect() as connection:
            for alias, memory_id, blob in connection.execute(_read(*_shape(params), False), params):
                if alias not in aliases:
                    aliases.append(alias)
                if memory_id is not None:
                    ids.append(memory_id)
                    blobs.append(blob)
        joined = np.frombuffer(b"".join(blobs), dtype="<f4")
        vectors = joined.reshape(len(blobs), -1) if blobs else joined.reshape(0, 0)
        return Candidates(aliases=aliases, ids=ids, vectors=vectors)

    def newest(
        self, customer_ids: Sequence[str], limit: int, kinds: Sequence[Kind] | None = None
    ) -> list[str]:
        """Ids of these customers' `limit` most recent memories of these kinds, newest first."""
        params = self._params(None, kinds, None, None)
        params.update(customers=list(customer_ids), limit=limit)
        with self.engine.connect() as connection:
            return list(connection.execute(_read(*_shape(params), True), params).scalars())

    def _params(
        self,
        customer_id: str | None,
        kinds: Sequence[Kind] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"collection": self.collection}
        if customer_id is not None:
            params["customer_id"] = customer_id
        if kinds:
            params["kinds"] = list(kinds)
        if since is not None:
            params["since"] = epoch_seconds(since) * 1_000_000
        if until is not None:
            params["until"] = (epoch_seconds(until) + 1) * 1_000_000
        return params


def _shape(params: dict[str, Any]) -> tuple[bool, bool, bool]:
    return "kinds" in params, "since" in params, "until" in params
