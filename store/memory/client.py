"""Where the memory collection lives: embedded Chroma in the data dir, or a `chroma run` server.

Both are Chroma's `ClientAPI`, so everything above this module is written once. Nothing connects until
`connect()` is called; telemetry is off because it would phone home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

# Sub-directory of CRM_DATA_DIR for embedded Chroma's files.
CHROMA_DIR = "chroma"
# Hot memories (recalled every time) and archived ones (rolled up into a summary, kept for audit).
HOT = "memories"
ARCHIVE = "memories_archive"


class MemoryUnavailable(RuntimeError):
    """The Chroma server cannot be reached; the message names it and says what to check."""


def _chroma_settings() -> ChromaSettings:
    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def connect(chroma_url: str | None, data_dir: Path) -> ClientAPI:
    """An HttpClient for chroma_url when set, else a PersistentClient under data_dir/chroma."""
    if not chroma_url:
        path = data_dir / CHROMA_DIR
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
    parts = urlsplit(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise MemoryUnavailable(f"CHROMA_URL={chroma_url!r} is not an http(s)://host:port URL")
    ssl = parts.scheme == "https"
    try:
        return chromadb.HttpClient(
            host=parts.hostname,
            port=parts.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=_chroma_settings(),
        )
    except Exception as exc:  # chromadb raises plain ValueError/ConnectionError variants
        raise MemoryUnavailable(
            f"cannot reach Chroma at {chroma_url} ({exc}); start `chroma run` or unset CHROMA_URL "
            "to use embedded Chroma in CRM_DATA_DIR"
        ) from None


def collection_name(base: str, model_id: str) -> str:
    """One collection per embedding model: vectors from two models are never mixed or compared."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in model_id.lower())
    return f"{base}__{safe}"[:63]


def open_collection(client: ClientAPI, base: str, embedder: Any) -> Any:
    """Get or create the collection for this embedder, cosine distance."""
    return client.get_or_create_collection(
        name=collection_name(base, embedder.model_id),
        embedding_function=embedder,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"model": embedder.model_id},
    )
