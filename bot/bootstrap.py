"""The composition root: `bootstrap(settings) -> App`, the one object graph every process runs on.

Every CLI command, the web app, the worker, the scheduler and the tests get their parts from the App.
Each part is built on first use (nothing connects at import time or at bootstrap, apart from the
schema migration), and every part is built here, nowhere else: the engine, the unit of work (the event
store), the queue, the memory, the agents (model client and policy), the handler table, the executor,
the notify fan-out with the configured chat surfaces, the command layer, and the mailbox watch.

Every process that runs jobs runs the same handler table (jobs.handlers), so what happens to a signal
does not depend on which command accepted it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from jobs import handlers as handler_table
from jobs.context import install as install_job_context
from jobs.inprocess import InProcessJobQueue
from jobs.queue import JobQueue, make_queue
from store.db import make_engine, migrate
from store.events import Event
from store.settings import Settings, SettingsError, load_settings
from store.uow import EventStore

if TYPE_CHECKING:
    from rich.console import Console

    from agents.runtime import AgentRuntime
    from bot.commands import Commands
    from bot.mailbox import Mailbox
    from bot.metrics import Metrics
    from bot.terminal import TerminalSurface
    from jobs.execute import Executor
    from jobs.handlers import Handler
    from jobs.intake import IntakeKicker
    from jobs.notify import Notifier, Surface
    from store.memory.service import Memory


log = logging.getLogger(__name__)

# Connections the web app stages signals with from worker threads (bodies too large to parse in the
# event loop, emails; the rest stage in the loop: bot.web.app's AsyncStager).
INTAKE_POOL = 5


class StartupError(RuntimeError):
    """A dependency cannot be reached at start; the message says which and how to fix it."""


def data_folder(settings: Settings) -> Path:
    """CRM_DATA_DIR, created if missing; StartupError naming the setting when this user cannot."""
    folder = settings.crm_data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"CRM_DATA_DIR={folder}: the folder cannot be created ({exc.strerror or exc}); "
            "set CRM_DATA_DIR to a folder this user can write"
        ) from None
    return folder


@dataclass(frozen=True, eq=False)
class App:
    """Everything a process needs. The fields are built by `bootstrap`; the rest on first use."""

    settings: Settings
    engine: Engine
    store: EventStore
    # RQ when REDIS_URL is set, in-process threads otherwise (jobs.queue.make_queue); connects lazily.
    queue: JobQueue
    # Handler name -> function (jobs.handlers.HANDLERS); tests may swap in their own.
    handlers: Mapping[str, Handler] = field(default_factory=lambda: dict(handler_table.HANDLERS))

    # -- parts built on first use ------------------------------------------------------------------

    @cached_property
    def memory(self) -> Memory:
        """Customer memory on Chroma; the embedding model loads on the first write or recall."""
        from store.memory.service import Memory

        return Memory.from_settings(self.settings, self.engine)

    @property
    def memory_if_built(self) -> Memory | None:
        """The memory if something used it already (a health probe must not load the model)."""
        memory: Memory | None = self.__dict__.get("memory")
        return memory

    @cached_property
    def runtime(self) -> AgentRuntime:
        """The agents with their policy and model client (none without OPENAI_API_KEY)."""
        from agents.runtime import build_runtime

        return build_runtime(self.settings)

    @cached_property
    def surfaces(self) -> tuple[Surface, ...]:
        """The chat surfaces the settings configure, for posting (listeners run in `crm bot`/`crm run`)."""
        found: list[Surface] = []
        if self.settings.slack_bot_token:
            found.append(self.slack_surface)
        if self.settings.telegram_bot_token:
            from bot.telegram.surface import TelegramSurface

            found.append(TelegramSurface(self.settings))
        return tuple(found)

    @cached_property
    def notifier(self) -> Notifier:
        """Posts proposals to every surface and keeps every posted copy current."""
        from jobs.notify import Notifier

        return Notifier(self.store, list(self.surfaces))

    def add_terminal_surface(self, console: Console) -> TerminalSurface:
        """Print proposals on this process's terminal too (`crm run` with its console)."""
        from bot.terminal import TerminalSurface

        surface = TerminalSurface(console)
        self.notifier.add(surface)
        return surface

    @cached_property
    def executor(self) -> Executor:
        """Runs approved proposals through their connectors, at most once."""
        from jobs.execute import Executor, default_connectors

        return Executor(
            self.store,
            default_connectors(self.store, self.settings, self.notifier.surface),
            lease_seconds=self.settings.action_lease_seconds,
            notifier=self.notifier,
        )

    @cached_property
    def commands(self) -> Commands:
        """The channel-agnostic command layer every surface calls."""
        from bot.commands import Commands
        from jobs.execute import schedule_execution

        def schedule(proposal_id: str, row: dict[str, Any] | None) -> None:
            schedule_execution(self, proposal_id, row=row)

        return Commands(
            self.store,
            self.settings,
            schedule_execution=schedule,
            notifier=self.notifier,
            memory=lambda: self.memory,
            queue=self.queue,
        )

    @cached_property
    def mailbox(self) -> Mailbox | None:
        """The watch on the operator's mailbox (IMAP_URL), run by `crm run`, `crm bot` and `crm mail`."""
        from bot.mailbox import Mailbox

        return Mailbox.from_settings(self)

    @property
    def mailbox_if_built(self) -> Mailbox | None:
        """The mailbox if this process runs it (a health probe must not build one)."""
        mailbox: Mailbox | None = self.__dict__.get("mailbox")
        return mailbox

    @cached_property
    def metrics(self) -> Metrics:
        """Prometheus collectors over the queue, the intake inbox and the proposal lifecycle."""
        from bot.metrics import build_metrics

        return build_metrics(self.queue, self.engine)

    @cached_property
    def slack_client(self) -> Any:
        """slack_sdk's WebClient for SLACK_API_URL with the bot token."""
        from bot.slack.surface import make_web_client

        return make_web_client(self.settings)

    @cached_property
    def slack_surface(self) -> Surface:
        from bot.slack.surface import SlackSurface

        return SlackSurface(self.slack_client, self.settings.slack_channel)

    @cached_property
    def slack_bolt(self) -> Any:
        """The Bolt app (HTTP mode and Socket Mode share it); checks its token at build in Socket Mode."""
        from bot.slack.app import build_slack_app

        return build_slack_app(self, verify_token=bool(self.settings.slack_app_token))

    @cached_property
    def telegram_webhook_application(self) -> Any:
        """python-telegram-bot's Application without an Updater, for `POST /telegram/webhook`."""
        from bot.telegram.app import build_application

        return build_application(self, webhook=True)

    @cached_property
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
        return make_engine(
            self.settings.resolved_database_url,
            pool_pre_ping=False,
            pool_size=INTAKE_POOL,
            max_overflow=0,
        )

    @cached_property
    def intake_kicker(self) -> IntakeKicker:
        """Queues the job that sequences staged signals into the log (its thread starts on first kick)."""
        from jobs.intake import IntakeKicker

        return IntakeKicker(self.queue)

    # -- running jobs ------------------------------------------------------------------------------

    @property
    def runs_jobs_in_process(self) -> bool:
        """True on the embedded default: this process's own threads run its jobs (no REDIS_URL)."""
        return isinstance(self.queue, InProcessJobQueue)

    def start_jobs(self) -> None:
        """Start this process's job threads (in-process queue) and queue what the log still owes."""
        if not self.runs_jobs_in_process:
            return
        start = getattr(self.queue, "start", None)
        if start is not None:
            start()
        self.queue_owed_work()

    def queue_owed_work(self) -> None:
        """Queue everything the outbox holds at once (a process that appended it may have stopped) and
        let every handler catch up on recent events it has not handled (`crm worker` calls it too)."""
        from jobs.handlers import catch_up_handler
        from jobs.queue import HOUSEKEEPING
        from jobs.relay import relay_outbox

        relay_outbox(self, older_than=timedelta(0))
        for name in self.handlers:
            self.queue.enqueue(
                catch_up_handler,
                name,
                priority=HOUSEKEEPING,
                job_id=f"catch-up-{name}-{secrets.token_hex(4)}",
            )

    def close(self) -> None:
        """Stop the job threads and release connections (parts never built are not built now)."""
        built = self.__dict__
        kicker = built.get("intake_kicker")
        if kicker is not None:
            kicker.stop()
        stop = getattr(self.queue, "stop", None)
        if stop is not None:
            stop(timeout=5)
        intake_engine = built.get("intake_engine")
        if intake_engine is not None and intake_engine is not self.engine:
            intake_engine.dispose()
        memory = built.get("memory")
        if memory is not None:
            memory.close()
        executor = built.get("executor")
        for connector in set(executor.connectors.values()) if executor is not None else ():
            close = getattr(connector, "close", None)  # those that keep a connection open (SMTP)
            if close is not None:
                close()
        for surface in built.get("surfaces", ()):
            close = getattr(surface, "close", None)
            if close is not None:
                close()
        self.engine.dispose()


def bootstrap(
    settings: Settings | None = None,
    *,
    migrate_schema: bool = True,
    handlers: Mapping[str, Handler] | None = None,
) -> App:
    """Build the App; with migrate_schema, bring the database schema up to date first."""
    settings = settings or load_settings()
    check_operator_rights(settings)
    data_folder(settings)
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
    queue = make_queue(settings)
    app = App(
        settings=settings,
        engine=engine,
        store=EventStore(engine, settings.crm_phone_region),
        queue=queue,
        handlers=dict(handlers if handlers is not None else handler_table.HANDLERS),
    )
    app.store.after_commit = _enqueue_after_commit(queue, app.store)
    if app.runs_jobs_in_process:
        # Its jobs run in this very process, so this process's job context is this App.
        install_job_context(app)
    return app


def check_operator_rights(settings: Settings) -> None:
    """OPERATORS may only grant action kinds that exist: a misspelt one would grant nothing, silently."""
    from agents.proposal import ACTION_KINDS

    for person, kinds in settings.operator_rights.items():
        unknown = sorted((kinds or frozenset()) - set(ACTION_KINDS))
        if unknown:
            raise SettingsError(
                f"bad settings — OPERATORS: {person} may decide {', '.join(unknown)}, which is no action "
                f"kind; use * or some of {'|'.join(ACTION_KINDS)}"
            )


def _enqueue_after_commit(queue: JobQueue, store: EventStore) -> Callable[[list[Event]], None]:
    """Hand every newly dispatched event to the queue once its transaction commits.

    Decisions go to the "decisions" priority, ahead of new signals. Never raises: when the queue is
    unreachable the outbox row keeps the event, marked for the relay's next run (not after its usual
    grace); an event queued twice is a no-op (its job id is derived from its id).
    """
    from jobs.queue import DECISIONS, SIGNALS
    from jobs.relay import relay_soon

    def enqueue(events: list[Event]) -> None:
        missed = []
        for event in events:
            priority = DECISIONS if event.type in DECISION_EVENT_TYPES else SIGNALS
            try:
                queued = queue.enqueue_event(event.id, priority=priority)
            except Exception:  # the outbox is the safety net; never fail a committed write
                log.exception("could not queue event %s; the relay will", event.id)
                queued = False
            if not queued:
                missed.append(event.id)
        if missed:
            try:
                relay_soon(store.engine, missed)
            except Exception:  # the rows are in the outbox all the same; the relay finds them later
                log.exception("could not mark %d outbox row(s) for the relay", len(missed))

    return enqueue


# Events a person (or the policy) is waiting on: their jobs run before new signals'.
DECISION_EVENT_TYPES = frozenset({"proposal.decided", "action.resolved"})
