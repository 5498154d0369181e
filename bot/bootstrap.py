"""The composition root: builds the object graph from settings. Nothing connects until it is used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from store.db import make_engine, migrate
from store.settings import Settings, load_settings
from store.uow import EventStore


class StartupError(RuntimeError):
    """A dependency cannot be reached at start; the message says which and how to fix it."""


@dataclass
class Container:
    """Everything a process needs, built once. Later layers hang their parts on `extras`."""

    settings: Settings
    engine: Engine
    store: EventStore
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(settings: Settings | None = None, *, migrate_schema: bool = True) -> Container:
    """Build the graph; with migrate_schema, bring the database schema up to date first."""
    settings = settings or load_settings()
    settings.crm_data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    if migrate_schema:
        try:
            migrate(engine)
        except OperationalError as exc:
            where = engine.url.render_as_string(hide_password=True)
            raise StartupError(
                f"cannot reach the database at {where} ({exc.orig}); "
                "check DATABASE_URL, or unset it to use SQLite in CRM_DATA_DIR"
            ) from None
    return Container(settings=settings, engine=engine, store=EventStore(engine, settings.crm_phone_region))
