"""Shared fixtures: real SQLite and Postgres databases, a real Redis db, test settings.

A test that needs Postgres or Redis fails when the server is missing; nothing is skipped.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import Engine

from store.db import make_engine, migrate
from store.settings import Settings, load_settings
from store.uow import EventStore
from tests.policies import without_quiet_hours
from tests.standins.dovecot import Dovecot, DovecotMissing, running_dovecot

PG_ADMIN_DSN = os.environ.get("CRM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("CRM_TEST_REDIS", "redis://127.0.0.1:6379/13")


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres is not reachable at {PG_ADMIN_DSN} ({exc}); start it (see .ci/run)")


def _sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


@pytest.fixture(autouse=True)
def _shipped_classifier() -> Iterator[None]:
    """Each test ends with the shipped classifier alone. The classifier is process-wide: a correction
    one test taught it (an `intent.corrected` event handled, or learn_from) would change what the
    inbox triage proposes in every test after it in the same process."""
    yield
    model = sys.modules.get("agents.classifier.model")  # not imported by a test that never classified
    if model is not None:
        model.forget_corrections()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated Postgres database that per-test databases are copied from."""
    name = f"crm_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_sqlalchemy_url(name))
    migrate(engine)
    engine.dispose()
    yield name
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _fresh_database(template: str) -> Iterator[str]:
    name = f"crm_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _sqlalchemy_url(name)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated Postgres database for one test, dropped afterwards."""
    with _fresh_database(pg_template) as url:
        yield url


@pytest.fixture
def other_pg_url(pg_template: str) -> Iterator[str]:
    """A second one, to compare two ways of writing the same rows (the log refuses to be emptied)."""
    with _fresh_database(pg_template) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on Postgres (DESIGN.md: one contract suite, every backend)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> EventStore:
    return EventStore(engine)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database reserved for tests, flushed before and after."""
    client = redis_lib.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis_lib.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL} ({exc}); start it (see .ci/run)")
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings for a test: isolated data dir, no `.env`, nothing from the developer's environment, and the
    shipped policy without quiet hours (a test that approves an email must not fail at night)."""

    def factory(**values: object) -> Settings:
        values.setdefault("CRM_DATA_DIR", str(tmp_path / "data"))
        values.setdefault("CRM_POLICY_FILE", str(without_quiet_hours(tmp_path)))
        return load_settings(_env_file=None, **values)

    return factory


class SettingsFactory:  # for type hints only
    def __call__(self, **values: object) -> Settings: ...


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot IMAP server on loopback for the whole session (each test takes its own user)."""
    try:
        with running_dovecot() as server:
            yield server
    except DovecotMissing as exc:
        pytest.fail(str(exc))
