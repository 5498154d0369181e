"""`crm replay --memory` rebuilds the memory collection from the log, through the real CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bot.cli import app
from store.memory.embeddings import MiniLMEmbedding
from store.memory.service import Memory
from store.uow import EventStore
from tests.integration.memory_harness import at, embedder_fixture, message  # noqa: F401  (fixture by name)


def test_replay_memory_rebuilds_the_collection(
    db_url: str, store: EventStore, tmp_path: Path, embedder: MiniLMEmbedding
) -> None:
    first = message(store, "dana@acme.example", "Invoices need the PO number.", at(2024, 1, 15), "c1")
    message(store, "sam@bluebird.example", "Can I pay in two parts?", at(2024, 5, 1), "c2")
    env = {"CRM_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": db_url, "CRM_EMBEDDINGS": "local"}

    result = CliRunner().invoke(app, ["replay", "--memory"], env=env)

    assert result.exit_code == 0, result.output
    assert "memory rebuilt up to position" in result.output and "2 memories" in result.output
    memory = Memory(data_dir=tmp_path / "data", embedder=embedder, engine=store.engine)
    assert [r.event_id for r in memory.recall("purchase order", customer_id=first.stream)] == [first.id]
    again = CliRunner().invoke(app, ["replay", "--memory"], env=env)
    assert again.exit_code == 0 and "2 memories" in again.output
