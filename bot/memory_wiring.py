"""Hooks the customer memory into process_event: the memory projection runs before the agents."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.bootstrap import Container


def install_memory(container: Container) -> None:
    """Register the memory subscriber first, so agents recall what the triggering event just added."""
    from store.memory.projection import MemorySubscriber

    if any(getattr(s, "name", None) == MemorySubscriber.name for s in container.subscribers):
        return
    container.subscribers.insert(0, MemorySubscriber(container.memory, container.store))
