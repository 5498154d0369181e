"""`Memory`: the one object the rest of the system holds. Lazy: nothing loads or connects until used."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, literal, select, union_all

from store import tables as t
from store.memory import client as chroma
from store.memory.embeddings import Embedder, MiniLMEmbedding, OpenAIEmbedding
from store.memory.extract import EXTRACTORS
from store.memory.projection import MemoryProjection
from store.memory.records import Kind, MemoryRecord, Recalled, memory_id
from store.memory.vectors import VectorIndex
from store.settings import Settings
from store.slice import group_query

if TYPE_CHECKING:
    from store.uow import EventStore

log = logging.getLogger(__name__)

# Chroma caps the ids or records of one request; reads and deletes go in pages of this size.
PAGE = 1_000


def make_embedder(settings: Settings) -> Embedder:
    """The embedding function the settings choose (local MiniLM unless CRM_EMBEDDINGS=openai)."""
    if settings.embeddings == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedding(
            model=settings.embeddings_model,
            api_key=key,
            base_url=settings.openai_base_url,
        )
    return MiniLMEmbedding()


# Built once (a fresh statement per call costs more to build and cache-key than to run): the customer's
# merge group, then the id of every event on its streams, marked 0 and 1.
_GROUP = group_query().cte("memory_group")
_GROUP_AND_IDS = union_all(
    select(literal(0).label("written"), _GROUP.c.id),
    select(literal(1), t.events.c.id).where(t.events.c.stream.in_(select(_GROUP.c.id))),
)


class Memory:
    """Customer memory on Chroma: writes from the projection, hybrid recall, retention, forgetting."""

    def __init__(
        self,
        *,
        data_dir: Path,
        chroma_url: str | None = None,
        embedder: Embedder | None = None,
        engine: Engine | None = None,
        settings: Settings | None = None,
        namespace: str = "",
    ) -> None:
        self.data_dir = data_dir
        # Prefix of the collection names: lets several stores (tests, tenants) share one Chroma server.
        self.namespace = namespace
        self.chroma_url = chroma_url
        self.embedder: Embedder = embedder or MiniLMEmbedding()
        self.engine = engine
        self.settings = settings or Settings(_env_file=None)
        self._client: Any = None
        self._collections: dict[str, Any] = {}
        self._vectors: VectorIndex | None = None

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> Memory:
        """Memory as the settings describe it (CHROMA_URL, CRM_DATA_DIR, CRM_EMBEDDINGS)."""
        return cls(
            data_dir=settings.crm_data_dir,
            chroma_url=settings.chroma_url,
            embedder=make_embedder(settings),
            engine=engine,
            settings=settings,
        )

    # -- where things live ------------------------------------------------------------------------

    @property
    def chunker(self) -> Any:
        return self.embedder.chunker

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = chroma.connect(self.chroma_url, self.data_dir)
        return self._client

    def collection(self, base: str) -> Any:
        if base not in self._collections:
            self._collections[base] = chroma.open_collection(
                self.client, self.namespace + base, self.embedder
            )
        return self._collections[base]

    @property
    def hot(self) -> Any:
        return self.collection(chroma.HOT)

    @property
    def archive(self) -> Any:
        return self.collection(chroma.ARCHIVE)

    @property
    def vectors(self) -> VectorIndex | None:
        """The hot collection's rows beside the log (store.memory.vectors); None without a database."""
        if self.engine is None:
            return None
        if self._vectors is None:
            name = chroma.collection_name(self.namespace + chroma.HOT, self.embedder.model_id)
            self._vectors = VectorIndex(self.engine, name)
        return self._vectors

    def ranking_index(self) -> VectorIndex | None:
        """The rows recall ranks a customer's memories on, once they mirror the whole collection."""
        index = self.vectors
        return index if index is not None and index.complete() else None

    @property
    def projection(self) -> MemoryProjection:
        if self.engine is None:
            raise RuntimeError("the memory projection needs the database engine")
        return MemoryProjection(self, self.engine)

    def reset(self) -> None:
        """Drop both collections (a rebuild refills them from the log)."""
        for base in (chroma.HOT, chroma.ARCHIVE):
            name = chroma.collection_name(self.namespace + base, self.embedder.model_id)
            if name in {c.name for c in self.client.list_collections()}:
                self.client.delete_collection(name)
        self._collections.clear()
        if self.vectors is not None:
            self.vectors.clear()

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, records: Sequence[MemoryRecord]) -> None:
        """Write records keyed by their ids (event id + chunk): writing twice changes nothing."""
        if not records:
            return
        documents = [r.text for r in records]
        embeddings = self.embedder(documents)
        self.hot.upsert(
            ids=[r.id for r in records],
            documents=documents,
            metadatas=[r.metadata() for r in records],
            embeddings=embeddings,
        )
        if self.vectors is not None:
            self.vectors.upsert(records, embeddings)

    def archive_ids(self, ids: list[str]) -> int:
        """Move these memories (with their vectors) from the hot collection to the archive."""
        found = self.hot.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        if not found["ids"]:
            return 0
        if self.vectors is not None:
            self.vectors.delete_ids(found["ids"])
        self.archive.upsert(
            ids=found["ids"],
            documents=found["documents"],
            metadatas=found["metadatas"],
            embeddings=found["embeddings"],
        )
        self.hot.delete(ids=found["ids"])
        return len(found["ids"])

    def delete_customers(self, customer_ids: Sequence[str]) -> int:
        """Remove every memory (hot and archived) of these customer ids; returns how many."""
        removed = 0
        where = {"customer_id": {"$in": list(customer_ids)}}
        if self.vectors is not None:
            self.vectors.delete_customers(customer_ids)
        for collection in (self.hot, self.archive):
            while True:
                ids = collection.get(where=where, limit=PAGE, include=[])["ids"]
                if not ids:
                    break
                collection.delete(ids=ids)
                removed += len(ids)
        return removed

    def forget_customer(self, customer_id: str, store: EventStore) -> int:
        """A privacy request: record it in the log and remove the customer's memories now.

        The log records `memory.forgotten` so a replay removes them again; the log's own copies of
        the texts are the event store's to redact. Returns the number of memories removed.
        """
        from store.events import NewEvent, utcnow
        from store.memory.events import MemoryForgotten

        aliases = self.aliases(customer_id)
        moment = utcnow()
        store.append(
            NewEvent(
                type="memory.forgotten",
                payload=MemoryForgotten(customers=tuple(a for a in aliases if a != customer_id)),
                stream=customer_id,
                idempotency_key=f"memory.forgotten:{customer_id}:{moment.isoformat()}",
                actor="operator",
                occurred_at=moment,
            ),
            dispatch=False,
        )
        removed = self.delete_customers(aliases)
        if self.engine is not None:
            self.projection.catch_up(store)
        return removed

    def backfill_vectors(self, progress: Callable[[int], None] | None = None) -> int:
        """Copy what recall ranks on into the rows beside the log, for a collection written before
        they existed, then mark them complete; returns the memories copied.

        The log names every memory (the projection keys each by its event's id), so the copy walks the
        events that can leave one and looks their ids up: a memory archived or forgotten meanwhile is
        at worst copied after its row was removed, and recall skips a row whose text Chroma lost.
        """
        from store.memory.recall import held

        index = self.vectors
        if index is None or self.engine is None:
            return 0
        e = t.events.c
        kinds = sorted(EXTRACTORS)
        copied, after = 0, 0
        while True:
            with self.engine.connect() as connection:
                page = connection.execute(
                    select(e.position, e.id)
                    .where(e.position > after, e.type.in_(kinds))
                    .order_by(e.position)
                    .limit(PAGE)
                ).all()
            if not page:
                break
            after = page[-1].position
            found = held(self, [memory_id(row.id) for row in page], ["metadatas", "embeddings"])
            if found["ids"]:
                records = [
                    MemoryRecord.from_chroma(i, None, m)
                    for i, m in zip(found["ids"], found["metadatas"], strict=True)
                ]
                index.upsert(records, found["embeddings"])
                copied += len(records)
            if progress is not None:
                progress(copied)
        index.mark_complete()
        return copied

    # -- reads ------------------------------------------------------------------------------------

    def aliases(self, customer_id: str) -> list[str]:
        """The customer and every id merged into it (their memories are this customer's)."""
        if self.engine is None:
            return [customer_id]
        found, frontier = [customer_id], [customer_id]
        c = t.customers.c
        with self.engine.connect() as connection:
            while frontier:
                frontier = [
                    row
                    for row in connection.execute(select(c.id).where(c.merged_into.in_(frontier))).scalars()
                    if row not in found
                ]
                found.extend(frontier)
        return found

    def aliases_and_written_ids(self, customer_id: str) -> tuple[list[str], list[str] | None]:
        """aliases(customer_id) and written_ids of them, in one statement (recall's first read)."""
        if self.engine is None:
            return [customer_id], None
        aliases, written = [customer_id], []
        with self.engine.connect() as connection:
            for is_event, value in connection.execute(_GROUP_AND_IDS, {"customer_id": customer_id}):
                if is_event:
                    written.append(memory_id(value))
                elif value != customer_id:
                    aliases.append(value)
        return aliases, written

    def written_ids(self, customer_ids: Sequence[str]) -> list[str] | None:
        """Ids of the first chunk of every memory these customers can have (None without a database).

        The projection writes an event's memory under the event's stream, keyed by the event's id, so
        the log's events on these streams name them all; events that left no memory, or whose memory
        was archived or forgotten, name ids Chroma does not hold.
        """
        if self.engine is None:
            return None
        e = t.events.c
        with self.engine.connect() as connection:
            found = connection.execute(select(e.id).where(e.stream.in_(list(customer_ids))))
            return [memory_id(event_id) for event_id in found.scalars()]

    def by_event(self, event_id: str, *, archived: bool = False) -> list[MemoryRecord]:
        """The memory (all chunks, in order) written for an event: an exact lookup, no embedding."""
        collection = self.archive if archived else self.hot
        found = collection.get(where={"event_id": event_id}, include=["documents", "metadatas"])
        records = [
            MemoryRecord.from_chroma(i, d, m)
            for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
        ]
        return sorted(records, key=lambda r: r.chunk)

    def get(self, ids: Sequence[str], *, archived: bool = False) -> list[MemoryRecord]:
        """Records by memory id (exact lookup, no embedding)."""
        collection = self.archive if archived else self.hot
        found = collection.get(ids=list(ids), include=["documents", "metadatas"])
        return [
            MemoryRecord.from_chroma(i, d, m)
            for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
        ]

    def count(self, customer_id: str | None = None, *, archived: bool = False) -> int:
        """How many memories (chunks) are held, for one customer (with merged ids) or all."""
        collection = self.archive if archived else self.hot
        if customer_id is None:
            return int(collection.count())
        where = {"customer_id": {"$in": self.aliases(customer_id)}}
        return len(collection.get(where=where, include=[])["ids"])

    def recall(
        self,
        query: str,
        *,
        customer_id: str | None,
        kinds: Sequence[Kind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 5,
    ) -> list[Recalled]:
        """Hybrid recall: filter (customer, kinds, time range), then rank by meaning within it.

        customer_id=None searches every customer and must be asked for explicitly.
        """
        from store.memory.recall import recall

        return recall(
            self, query, customer_id=customer_id, kinds=kinds, since=since, until=until, limit=limit
        )

    def context_memories(self, customer_id: str, query: str, budget_chars: int) -> list[Recalled]:
        """The customer's latest summary plus the most relevant raw memories, within budget_chars."""
        from store.memory.recall import context_memories

        return context_memories(self, customer_id, query, budget_chars)

    def close(self) -> None:
        """Release the client: embedded Chroma stops its system (its SQLite and index files) once the
        last client on that folder is closed; a server's client just forgets its connection."""
        self._collections.clear()
        client, self._client = self._client, None
        close = getattr(client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing must never fail a shutdown
                log.warning("closing the memory client failed", exc_info=True)
