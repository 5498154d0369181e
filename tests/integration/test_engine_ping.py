"""The Postgres pool pings a connection only after it sat idle, and still rides out a dropped one."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from store import db
from store.db import make_engine


def _kill_pooled(pg_url: str, engine: Any) -> int:
    with engine.connect() as connection:
        pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:  # what a server restart does to it
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pid


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.05)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        dead = _kill_pooled(pg_url, engine)
        time.sleep(0.1)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != dead
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A ping per checkout is a round trip on every read: within the idle allowance the pool trusts the
    # connection, and a dropped one fails its statement once, after which the pool replaces it.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 60.0)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    pings: list[Any] = []
    original = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(conn) or original(conn))
    try:
        for _ in range(5):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        engine.dispose()
