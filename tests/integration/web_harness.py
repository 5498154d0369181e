"""Helpers for the web app tests: a container on the test database and Redis, and row counts."""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import func, select

from bot.bootstrap import Container, bootstrap
from store import tables as t
from tests.inbound_support import SIGNALS_SECRET, STRIPE_SECRET

SECRETS = {"SIGNALS_SECRET": SIGNALS_SECRET, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}
# A loopback port nothing listens on: "the server is down" without stopping a shared server.
DEAD_PORT = 9


def web_container(make_settings: Any, db_url: str, redis_url: str | None, **overrides: Any) -> Container:
    """A container as `crm web` builds it, on an already migrated database."""
    values: dict[str, Any] = {"DATABASE_URL": db_url, **SECRETS, **overrides}
    if redis_url is not None:
        values.setdefault("REDIS_URL", redis_url)
    return bootstrap(make_settings(**values), migrate_schema=False)


def counts(container: Container) -> dict[str, int]:
    """What a request could have written: events, outbox rows, customers, and jobs queued."""
    with container.engine.connect() as connection:

        def count(table: Any) -> int:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

        found = {"events": count(t.events), "outbox": count(t.outbox), "customers": count(t.customers)}
    found["queued"] = sum(container.queue.depth().values())
    return found


NOTHING = {"events": 0, "outbox": 0, "customers": 0, "queued": 0}


def signal_events(container: Container) -> list[dict[str, Any]]:
    """The signal events (not the customer bookkeeping they cause), oldest first."""
    query = select(t.events).where(t.events.c.actor == "outside").order_by(t.events.c.position)
    with container.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
