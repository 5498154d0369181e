"""Customer memory on Chroma: offline embeddings, provenance, hybrid recall and retention.

Importing the package registers the memory event types with the log and nothing else; Chroma and the
embedding model are loaded by `Memory` on first use.
"""

from store.memory import events as _events  # noqa: F401  (registers memory.* event types)
from store.memory.records import KINDS, Kind, MemoryRecord, Recalled, memory_id

__all__ = ["KINDS", "Kind", "MemoryRecord", "Recalled", "memory_id"]
