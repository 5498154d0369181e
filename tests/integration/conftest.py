"""Fixtures shared by the integration tests: the web app's container, a client on it, a Redis of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.bootstrap import App
from tests.integration.jobs_harness import RedisServer
from tests.integration.web_harness import settling_client, web_container


@pytest.fixture
def container(db_url: str, redis_url: str, make_settings: Any) -> Iterator[App]:
    """The web app's container on each backend, with its queue on the test Redis."""
    built = web_container(make_settings, db_url, redis_url)
    yield built
    built.close()


@pytest.fixture
def client(container: App) -> Iterator[TestClient]:
    """A client on the app; server errors come back as responses, as a real client sees them."""
    with settling_client(container, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (on a free port), which the test may stop and start."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
