"""Fixtures of the memory tests: the model loaded once per session, a real `chroma run` server on
loopback, and a `Memory` on either backend (the same contract suite runs against both)."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from store import events as ev
from store.memory.embeddings import MiniLMEmbedding
from store.memory.service import Memory
from store.uow import EventStore

CHROMA_CLI = Path(sys.executable).with_name("chroma")
# Seconds for `chroma run` to answer its heartbeat on a busy shared machine.
SERVER_START_TIMEOUT = 60


@functools.cache
def shared_embedder() -> MiniLMEmbedding:
    """The model, loaded once per test process whichever module asks first."""
    return MiniLMEmbedding().load()


@pytest.fixture(scope="session", name="embedder")
def embedder_fixture() -> MiniLMEmbedding:
    return shared_embedder()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", name="chroma_server")
def chroma_server_fixture() -> Iterator[str]:
    """A real Chroma server (`chroma run`) on a free loopback port for the session; its URL."""
    if not CHROMA_CLI.exists():
        pytest.fail(f"the chroma CLI is missing at {CHROMA_CLI}; pip install chromadb")
    path = Path(tempfile.mkdtemp(prefix="crm-chroma-"))
    port = free_port()
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    log = (path / "server.log").open("wb")
    process = subprocess.Popen(
        [str(CHROMA_CLI), "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"chroma run exited with {process.returncode}: {(path / 'server.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chroma run did not answer its heartbeat within {SERVER_START_TIMEOUT}s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["embedded", "server"], name="backend")
def backend_fixture(request: pytest.FixtureRequest) -> str:
    """The same memory tests against embedded Chroma and a `chroma run` server."""
    return str(request.param)


@pytest.fixture(name="memory_factory")
def memory_factory_fixture(
    backend: str, tmp_path: Path, embedder: MiniLMEmbedding, request: pytest.FixtureRequest
) -> Iterator[MemoryFactory]:
    """Builds Memory objects on this test's backend; each test gets its own collections."""
    url = request.getfixturevalue("chroma_server") if backend == "server" else None
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    built: list[Memory] = []

    def factory(
        engine: Engine | None = None, embedding: MiniLMEmbedding | None = None, kind: type[Memory] = Memory
    ) -> Memory:
        memory = kind(
            data_dir=tmp_path / "data",
            chroma_url=url,
            embedder=embedding or embedder,
            engine=engine,
            namespace=namespace,
        )
        built.append(memory)
        return memory

    yield factory  # type: ignore[misc]
    if built:
        built[0].reset()
    for memory in built:
        memory.close()


class MemoryFactory:  # for type hints only
    def __call__(
        self,
        engine: Engine | None = None,
        embedding: MiniLMEmbedding | None = None,
        kind: type[Memory] = Memory,
    ) -> Memory: ...


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def message(
    store: EventStore, email: str, text: str, when: datetime, key: str, subject: str | None = None
) -> ev.Event:
    """Record an inbound email from `email` as the intake layer would; returns the event."""
    signal = ev.MessageReceived(
        customer=ev.CustomerRef(email=email),
        text=text,
        data={"channel": "email", "subject": subject} if subject else {"channel": "email"},
    )
    return store.record_signal("message.received", signal, key, source="email", occurred_at=when).event


def note(store: EventStore, customer_id: str, text: str, when: datetime, key: str) -> ev.Event:
    """Record an operator's note on a customer."""
    return store.append(
        ev.NewEvent(
            type="note.added",
            payload=ev.NoteAdded(text=text, author="operator"),
            stream=customer_id,
            idempotency_key=key,
            occurred_at=when,
        )
    ).event
