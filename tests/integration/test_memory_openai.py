"""CRM_EMBEDDINGS=openai: the real OpenAI SDK against a stand-in embeddings server on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from store.memory.embeddings import OpenAIEmbedding
from store.memory.records import MemoryRecord
from store.memory.service import Memory, make_embedder
from tests.integration.memory_harness import at

DIM = 64


def _vector(text: str) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words are close, as with a real model."""
    vec = np.zeros(DIM)
    for word in text.lower().split():
        vec[int(hashlib.sha256(word.strip(".,?!").encode()).hexdigest(), 16) % DIM] += 1.0
    return (vec / (np.linalg.norm(vec) or 1.0)).tolist()


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != "Bearer sk-test":
            self.send_response(401)
            self.end_headers()
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        payload = {
            "object": "list",
            "model": body["model"],
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(inputs)
            ],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def openai_standin() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()
    server.server_close()


def test_openai_embeddings_when_the_settings_say_so(
    openai_standin: tuple[str, list[dict[str, Any]]], tmp_path: Path, make_settings: Any
) -> None:
    url, requests = openai_standin
    settings = make_settings(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=url, CRM_EMBEDDINGS="openai")
    chosen = make_embedder(settings)
    assert isinstance(chosen, OpenAIEmbedding) and chosen.model == "text-embedding-3-small"
    chosen.batch_size = 2
    memory = Memory(data_dir=tmp_path, embedder=chosen)
    texts = ["refund the duplicate charge", "hygienist works tuesdays", "logo on invoices"]
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
                occurred_at=at(2024, 1, 1),
                confidence=1.0,
            )
            for i, text in enumerate(texts)
        ]
    )

    [best] = memory.recall("please refund the charge", customer_id="cus_a", limit=1)

    assert best.id == "e0#0"
    assert all(r["path"] == "/v1/embeddings" and r["auth"] == "Bearer sk-test" for r in requests)
    assert [len(r["body"]["input"]) for r in requests] == [2, 1, 1]  # batches of 2, then the query
    assert memory.hot.name.endswith("openai-text-embedding-3-small")
    assert "sk-test" not in json.dumps(memory.hot.configuration_json)


def test_local_embeddings_are_the_default(make_settings: Any) -> None:
    settings = make_settings(OPENAI_API_KEY="sk-test")
    assert make_embedder(settings).name() == "crm-minilm-l6-int8"
