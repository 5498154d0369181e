"""Fixtures shared by the HTTP intake tests: the web app's container and a client on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.bootstrap import Container
from bot.web import create_app
from tests.integration.web_harness import web_container


@pytest.fixture
def container(db_url: str, redis_url: str, make_settings: Any) -> Iterator[Container]:
    """The web app's container on each backend, with its queue on the test Redis."""
    built = web_container(make_settings, db_url, redis_url)
    yield built
    built.close()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    """A client on the app; server errors come back as responses, as a real client sees them."""
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        yield client
