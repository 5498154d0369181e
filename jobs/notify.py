"""The `Surface` interface chat apps implement, and the fan-out that keeps every posted message current.

A surface (Slack, Telegram, terminal) only translates: it posts a `ProposalView`, edits a posted message
in place, sends a chat reply to a customer, and tells the operator something. Every posted message is
recorded as an event (`proposal.message_posted`), so after a decision or an execution each copy of the
proposal, on every surface, can be updated in place.

Surfaces are called synchronously from worker threads; an async client (python-telegram-bot) wraps its
coroutines (e.g. `asyncio.run_coroutine_threadsafe(...).result(timeout)`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jobs.render_proposal import view_of
from jobs.views import ProposalView
from store import lifecycle as sp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessageRef:
    """Where a message went: enough to edit it later."""

    surface: str  # "slack" | "telegram" | "terminal"
    chat_id: str  # Slack channel id, Telegram chat id, "-" for the terminal
    message_id: str  # Slack `ts`, Telegram `message_id` (as text)


@runtime_checkable
class Surface(Protocol):
    """A chat app the operator uses. Implementations hold no business rules (DESIGN.md invariant 8)."""

    name: str  # "slack" | "telegram" | "terminal"; also the surface part of OPERATORS entries

    def post_proposal(self, view: ProposalView) -> MessageRef | None:
        """Post a proposal with its buttons to the operator's chat; the reference to edit it later."""
        ...

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        """Edit a posted proposal message in place (a final view has no buttons)."""
        ...

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        """Send `text` to a customer's chat; returns the platform's message id. Raise on failure."""
        ...

    def post_notice(self, lines: list[str]) -> None:
        """Tell the operator something that is not a proposal (expiries, "may have been sent")."""
        ...


def post_copy(store: Any, surface: Surface, view: ProposalView) -> MessageRef | None:
    """Post one more copy of a proposal on a surface (a digest, a reminder) and record it, so the
    copy is kept current like the first one. Raises what the surface raises."""
    ref = surface.post_proposal(view)
    if ref is not None:
        sp.claim_render(store.engine, ref.surface, ref.chat_id, ref.message_id, view.version)
        sp.record_message(store, view.id, ref.surface, ref.chat_id, ref.message_id)
    return ref


class SurfaceError(RuntimeError):
    """A surface could not post or edit; the fan-out logs it and carries on with the other surfaces."""


class Notifier:
    """Posts proposals to every registered surface and refreshes every message of a proposal."""

    def __init__(self, store: Any, surfaces: list[Surface] | None = None) -> None:
        self.store = store
        self.surfaces: list[Surface] = list(surfaces or [])

    def add(self, surface: Surface) -> None:
        """Register a surface (each surface does this when it starts)."""
        if all(existing.name != surface.name for existing in self.surfaces):
            self.surfaces.append(surface)

    def surface(self, name: str) -> Surface | None:
        """The registered surface called `name`, if any."""
        return next((s for s in self.surfaces if s.name == name), None)

    def post(self, proposal_id: str) -> list[MessageRef]:
        """Post a proposal to every surface that has not shown it yet; records each message as an event."""
        view = self.view(proposal_id)
        if view is None:
            return []
        already = {m["surface"] for m in sp.messages_of(self.store.engine, proposal_id)}
        posted: list[MessageRef] = []
        for surface in self.surfaces:
            if surface.name in already:
                continue  # a redelivered event must not post a second copy
            try:
                ref = post_copy(self.store, surface, view)
            except Exception:  # one broken surface must not hide the proposal from the others
                log.exception("posting proposal %s to %s failed", proposal_id, surface.name)
                continue
            if ref is not None:
                posted.append(ref)
        return posted

    def refresh(self, proposal_id: str) -> int:
        """Update every posted message of a proposal in place; returns how many were updated.

        Several processes refresh the same message (the web process after a tap, the worker after the
        execution), and their edits can reach the chat app in any order. Each edit first claims its
        version (store.lifecycle.claim_render): an older one is dropped; and one that finds, after its
        edit, that a newer version was claimed meanwhile shows the newest again, in case it landed last.
        """
        view = self.view(proposal_id)
        if view is None:
            return 0
        updated = 0
        for message in sp.messages_of(self.store.engine, proposal_id):
            surface = self.surface(message["surface"])
            if surface is None:
                continue
            ref = MessageRef(message["surface"], message["chat_id"], message["message_id"])
            try:
                updated += self._render(surface, ref, view)
            except Exception:
                log.exception("updating proposal %s on %s failed", proposal_id, surface.name)
        return updated

    def _render(self, surface: Surface, ref: MessageRef, view: ProposalView) -> int:
        engine = self.store.engine
        if not sp.claim_render(engine, ref.surface, ref.chat_id, ref.message_id, view.version):
            return 0  # the message shows a newer version already
        surface.update_proposal(ref, view)
        if sp.rendered_version(engine, ref.surface, ref.chat_id, ref.message_id) > view.version:
            newest = self.view(view.id)
            if newest is not None:
                surface.update_proposal(ref, newest)
        return 1

    def notice(self, lines: list[str]) -> None:
        """Send a notice to every surface."""
        for surface in self.surfaces:
            try:
                surface.post_notice(lines)
            except Exception:
                log.exception("notice to %s failed", surface.name)

    def view(self, proposal_id: str) -> ProposalView | None:
        """The current view of a proposal, from its projection row."""
        with self.store.engine.connect() as connection:
            row = sp.get_proposal(connection, proposal_id)
            if row is None:
                return None
            return view_of(row, sp.customer_name(connection, row["customer_id"]))
