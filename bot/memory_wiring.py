"""Hooks the customer memory into process_event, when the memory layer is present."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.bootstrap import Container


def install_memory(container: Container) -> None:
    """Register the memory subscriber (filled in by the memory layer)."""
