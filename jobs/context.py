"""What job functions run with: the store, the queue, the settings and the event subscribers.

RQ job functions are module-level and take ids only, so the composition root installs one JobContext
per worker process (`install(ctx)`) and jobs read it with `current()`. The in-process queue runs the
same functions in threads of the process that installed the context.

A subscriber is how later layers (memory, the agents that turn events into proposals) hear about
processed events: append one to `JobContext.subscribers` in the composition root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jobs.queue import JobQueue
    from store.events import Event
    from store.settings import Settings
    from store.uow import EventStore


class Subscriber(Protocol):
    """Reacts to events as a worker processes them.

    `handle` may run more than once for the same event (a retry after a crash or a failure of a later
    subscriber), so it must be idempotent: key what it writes by the event id. Subscribers run in the
    order they were registered; an exception fails the job, which is retried with backoff.
    """

    name: str

    def wants(self, event: Event) -> bool:
        """Whether handle should see this event (cheap: usually a check of event.type)."""
        ...

    def handle(self, event: Event, ctx: JobContext) -> None:
        """Do this subscriber's work for one event."""
        ...


@dataclass
class JobContext:
    """The dependencies of job functions, built once per process by the composition root."""

    store: EventStore
    queue: JobQueue
    settings: Settings
    subscribers: list[Subscriber] = field(default_factory=list)
    # Later layers hang shared clients here (the memory store, the model client, connectors).
    extras: dict[str, Any] = field(default_factory=dict)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a subscriber after those already registered."""
        self.subscribers.append(subscriber)


class NoJobContext(RuntimeError):
    """A job ran in a process where the composition root installed no JobContext."""


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
            "no JobContext installed in this process: build one with "
            "bot.bootstrap.bootstrap(...).job_context() and pass it to jobs.context.install()"
        )
    return _installed
