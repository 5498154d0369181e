"""What job functions run with: the parts of the composition root's App that jobs use.

RQ job functions are module-level and take ids only, so each worker process installs its App once
(`install(app)`) and jobs read it with `current()`. The in-process queue runs the same functions in
threads of the process that installed it. `JobContext` is the part of the App jobs may see: jobs sit
below `bot/`, where the App is built (DESIGN.md layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agents.runtime import AgentRuntime
    from jobs.execute import Executor
    from jobs.handlers import Handler
    from jobs.notify import Notifier
    from jobs.queue import JobQueue
    from store.memory.service import Memory
    from store.settings import Settings
    from store.uow import EventStore


class JobContext(Protocol):
    """The dependencies of job functions (bot.bootstrap.App provides them, each built on first use)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> EventStore: ...

    @property
    def queue(self) -> JobQueue: ...

    @property
    def handlers(self) -> Mapping[str, Handler]: ...

    @property
    def memory(self) -> Memory: ...

    @property
    def runtime(self) -> AgentRuntime: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def executor(self) -> Executor: ...


class NoJobContext(RuntimeError):
    """A job ran in a process where the composition root installed no App."""


_installed: JobContext | None = None


def install(ctx: JobContext) -> None:
    """Make ctx the context of every job this process runs (replaces any earlier one)."""
    global _installed
    _installed = ctx


def uninstall() -> None:
    """Forget the installed context (tests, and processes that shut their worker down)."""
    global _installed
    _installed = None


def current() -> JobContext:
    """The installed context, or NoJobContext saying how to install one."""
    if _installed is None:
        raise NoJobContext(
            "no App installed in this process: build one with bot.bootstrap.bootstrap(settings) "
            "and pass it to jobs.context.install()"
        )
    return _installed
