"""What every long-running process hangs on the container after `bootstrap`: subscribers and surfaces.

Kept apart from `bootstrap` so short commands (`crm customer`, `crm import`) stay light: they never load
the embedding model or the agents.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.bootstrap import Container

log = logging.getLogger(__name__)


def install_subscribers(container: Container) -> list[str]:
    """Register process_event's subscribers in their order: memory first, then the agents."""
    from bot.memory_wiring import install_memory
    from jobs.propose import install as install_propose

    install_memory(container)
    install_propose(container)
    return [subscriber.name for subscriber in container.subscribers]


def runs_jobs_here(container: Container) -> bool:
    """True when this process executes its own jobs (no REDIS_URL: the in-process queue)."""
    from jobs.inprocess import InProcessJobQueue

    return isinstance(container.queue, InProcessJobQueue)


def wire(container: Container, *, subscribers: bool = True) -> Container:
    """Subscribers (for processes that run jobs) and chat surfaces (posting only; listeners are
    started by `crm bot` / `crm run`)."""
    from bot.surfaces import install_surfaces

    names = install_subscribers(container) if subscribers else []
    surfaces = install_surfaces(container)
    log.info("subscribers: %s; surfaces: %s", ", ".join(names), ", ".join(surfaces) or "none")
    return container
