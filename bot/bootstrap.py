"""The composition root: builds the object graph from settings. Nothing connects until it is used."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from jobs.context import JobContext, Subscriber
from jobs.context import install as install_job_context
from jobs.inprocess import InProcessJobQueue
from jobs.intake import IntakeKicker
from jobs.queue import JobQueue, make_queue
from store.db import make_engine, migrate
from store.events import Event
from store.memory import events as _memory_events  # noqa: F401  (registers memory.* event types)
from store.settings import Settings, load_settings
from store.uow import EventStore

if TYPE_CHECKING:
    from store.memory.service import Memory


log = logging.getLogger(__name__)

# Connections the web app stages signals with from worker threads (bodies too large to parse in the
# event loop, emails; the rest stage in the loop: bot.web.app's AsyncStager).
INTAKE_POOL = 5


class StartupError(RuntimeError):
    """A dependency cannot be reached at start; the message says which and how to fix it."""


@dataclass
class Container:
    """Everything a process needs, built once. Later layers hang their parts on `extras`."""

    settings: Settings
    engine: Engine
    store: EventStore
    # RQ when REDIS_URL is set, in-process threads otherwise (jobs.queue.make_queue); connects lazily.
    queue: JobQueue = field(default_factory=InProcessJobQueue)
    # Event subscribers run by process_event, in this order (memory first, then the agents).
    subscribers: list[Subscriber] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def job_context(self) -> JobContext:
        """The context job functions run with; install it with jobs.context.install() in a worker."""
        return JobContext(
            store=self.store,
            queue=self.queue,
            settings=self.settings,
            subscribers=self.subscribers,
            extras=self.extras,
        )

    @property
    def memory(self) -> Memory:
        """Customer memory (store.memory), built on first use; Chroma and the model load later still."""
        if "memory" not in self.extras:
            from store.memory.service import Memory

            self.extras["memory"] = Memory.from_settings(self.settings, self.engine)
        memory: Memory = self.extras["memory"]
        return memory

    @property
    def intake_engine(self) -> Engine:
        """The engine the web routes stage signals with from worker threads (store.intake.stage).

        On Postgres its own pool without pre-ping: the ping is a round trip per request, a third of a
        staging's cost under load; a connection the server dropped is retried once instead. No
        overflow: a connection past pool_size is closed when returned, so a burst would open (fork a
        server process) and close one per request; requests past the pool wait for a connection.
        SQLite has no ping to save: the main engine.
        """
        if self.engine.dialect.name != "postgresql":
            return self.engine
        if "intake_engine" not in self.extras:
            self.extras["intake_engine"] = make_engine(
                self.settings.resolved_database_url,
                pool_pre_ping=False,
                pool_size=INTAKE_POOL,
                max_overflow=0,
            )
        engine: Engine = self.extras["intake_engine"]
        return engine

    @property
    def intake_kicker(self) -> IntakeKicker:
        """Queues the job that sequences staged signals into the log (its thread starts on first kick)."""
        # setdefault is atomic: two first requests at once still share one kicker (a spare is never started).
        kicker: IntakeKicker = self.extras.setdefault("intake_kicker", IntakeKicker(self.queue))
        return kicker

    def close(self) -> None:
        kicker = self.extras.get("intake_kicker")
        if kicker is not None:
            kicker.stop()
        stop = getattr(self.queue, "stop", None)
        if stop is not None:
            stop(timeout=5)
        intake_engine = self.extras.get("intake_engine")
        if intake_engine is not None:
            intake_engine.dispose()
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
    container = Container(
        settings=settings,
        engine=engine,
        store=EventStore(engine, settings.crm_phone_region),
        queue=make_queue(settings),
    )
    container.store.after_commit = _enqueue_after_commit(container.queue)
    if isinstance(container.queue, InProcessJobQueue):
        # Its jobs run in this very process, so this process's job context is this container's
        # (subscribers appended to container.subscribers later are seen: the list is shared).
        install_job_context(container.job_context())
    return container


def _enqueue_after_commit(queue: JobQueue) -> Callable[[list[Event]], None]:
    """Hand every newly dispatched event to the queue once its transaction commits.

    Never raises: when the queue is unreachable the outbox row keeps the event and the relay
    re-enqueues it later; an event queued twice is a no-op (its job id is derived from its id).
    """

    def enqueue(events: list[Event]) -> None:
        for event in events:
            try:
                queue.enqueue_event(event.id)
            except Exception:  # the outbox is the safety net; never fail a committed write
                log.exception("could not queue event %s; the relay will", event.id)

    return enqueue
