"""Helpers for the web app tests: a container on the test database and Redis, and row counts."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bot.bootstrap import App, bootstrap
from bot.web import create_app
from jobs.queue import SIGNALS
from store import tables as t
from store.intake import UNREACHABLE, sequence
from tests.inbound_support import SIGNALS_SECRET, STRIPE_SECRET

SECRETS = {"SIGNALS_SECRET": SIGNALS_SECRET, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}
# A loopback port nothing listens on: "the server is down" without stopping a shared server.
DEAD_PORT = 9
# The (host, port) a TestClient's requests come from.
LOOPBACK_CLIENT = ("127.0.0.1", 50000)


def web_container(
    make_settings: Any,
    db_url: str,
    redis_url: str | None,
    handlers: dict[str, Any] | None = None,
    **overrides: Any,
) -> App:
    """An App as `crm web` builds it, on an already migrated database.

    Its handlers are the test's (none by default: these tests are about intake, not what handles it).
    """
    values: dict[str, Any] = {"DATABASE_URL": db_url, **SECRETS, **overrides}
    if redis_url is not None:
        values.setdefault("REDIS_URL", redis_url)
    return bootstrap(make_settings(**values), migrate_schema=False, handlers=handlers or {})


def settling_client(container: App, **kwargs: Any) -> TestClient:
    """A client on the app that, after each response, sequences whatever the request staged.

    As if the sequencing job ran at once: tests of what a signal does read the log right after the
    answer. (test_intake_web covers the real path: the kicker, the job, the relay.)
    """
    # From loopback, as a local `crm web` client is: /metrics and /docs answer it without a token.
    kwargs.setdefault("client", LOOPBACK_CLIENT)
    client = TestClient(create_app(container), **kwargs)

    def settle(_response: Any) -> None:
        with contextlib.suppress(*UNREACHABLE):  # the database-down tests: nothing was staged
            sequence(container.store)

    client.event_hooks = {"request": [], "response": [settle]}
    return client


def counts(container: App) -> dict[str, int]:
    """What a request could have written: events, outbox rows, customers, inbox rows, process_event
    jobs queued (the intake's own sequencing jobs are left out: they write nothing themselves)."""
    with container.engine.connect() as connection:

        def count(table: Any) -> int:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

        found = {
            "events": count(t.events),
            "outbox": count(t.outbox),
            "customers": count(t.customers),
            "intake": count(t.intake),
        }
    found["queued"] = container.queue.depth()[SIGNALS]
    return found


NOTHING = {"events": 0, "outbox": 0, "customers": 0, "intake": 0, "queued": 0}


def signal_events(container: App) -> list[dict[str, Any]]:
    """The signal events (not the customer bookkeeping they cause), oldest first."""
    query = select(t.events).where(t.events.c.actor == "outside").order_by(t.events.c.position)
    with container.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
