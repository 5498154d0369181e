"""The channel-agnostic command layer: every surface (Slack, Telegram, terminal) calls these and only renders.

Each command takes an `Actor` and returns a `Reply` — plain lines, optionally proposal views with their
buttons or editable fields, never chat markup. Authorisation against OPERATORS happens HERE, not in the
surfaces: a non-operator's decision is refused and the attempt is logged as an event.

How a surface uses it:
    commands = app.commands                                   # one per process (bot.bootstrap)
    reply = commands.press(actor, button.data)                # a button tap
    reply = commands.run(actor, "customer acme as of 2024-05-01")    # a typed line or slash command
    reply = commands.edit(actor, proposal_id)                 # -> reply.fields to show in a form
    reply = commands.edit(actor, proposal_id, {"body": "…"})  # -> approves the edited version
After a decision the command layer itself refreshes every posted copy of the proposal through the
notify fan-out; the surface only shows `reply` to the person who tapped (e.g. an ephemeral message).
Typed text (a line, a note, an edit, a reason) is taken without NUL characters or lone surrogates, which
a chat app's JSON can carry and no Postgres text column holds (store.storable.storable_text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from bot.command_chat import ChatCommands
from bot.command_impl import CommandImpl
from bot.replies import Actor, Choice, Item, Reply, ReplyCode, fail, reply
from jobs.connectors.email import can_take
from jobs.views import Button, EditableField, ProposalView
from store.storable import storable_text

__all__ = [
    "Actor",
    "Button",
    "Choice",
    "Commands",
    "EditableField",
    "Item",
    "ProposalView",
    "Reply",
    "ReplyCode",
    "fail",
    "is_recipient",
    "reply",
]


def is_recipient(text: str) -> bool:
    """Whether typed text is one email address an edit of `to` would take (a surface reading a typed
    edit asks, as the command layer checks it again)."""
    return can_take(text)


class Commands:
    """The commands, bound to one store, settings, execution scheduler and notify fan-out.

    `schedule_execution(proposal_id, row)` enqueues `execute(proposal_id)` (the job pipeline's queue
    with priority "decisions", or the in-process executor); `row` is the proposal as the decision left
    it, or None. `notifier` is `jobs.notify.Notifier`.
    """

    def __init__(
        self,
        store: Any,
        settings: Any,
        *,
        schedule_execution: Callable[[str, dict[str, Any] | None], object] | None = None,
        notifier: Any = None,
        clock: Callable[[], datetime] | None = None,
        memory: Callable[[], Any] | None = None,
        queue: Any = None,
    ) -> None:
        parts: dict[str, Any] = {
            "schedule_execution": schedule_execution,
            "notifier": notifier,
            "clock": clock,
            "memory": memory,
            "queue": queue,
        }
        self._impl = CommandImpl(store, settings, **parts)
        self._chat = ChatCommands(store, settings, **parts)

    # -- decisions on a proposal -------------------------------------------------------------------
    def approve(self, actor: Actor, proposal_id: str) -> Reply:
        """Approve a pending proposal (compare-and-set: the loser is told who decided first and when)."""
        return self._impl.approve(actor, proposal_id)

    def edit(self, actor: Actor, proposal_id: str, values: Mapping[str, str] | None = None) -> Reply:
        """Without values: the editable fields. With values: approve the edited version (both kept)."""
        storable = None if values is None else {name: storable_text(value) for name, value in values.items()}
        return self._impl.edit(actor, proposal_id, storable)

    def reject(self, actor: Actor, proposal_id: str, reason: str | None = None) -> Reply:
        """Reject a pending proposal; a reason is kept as a correction for next time."""
        return self._impl.reject(actor, proposal_id, None if reason is None else storable_text(reason))

    def snooze(self, actor: Actor, proposal_id: str, until: datetime | str) -> Reply:
        """Put a pending proposal away until a time (`datetime`, "30m", "2h", "1d" or ISO-8601)."""
        return self._impl.snooze(actor, proposal_id, until)

    def why(self, actor: Actor, proposal_id: str) -> Reply:
        """The sources, rules and costs behind a proposal."""
        return self._impl.why(actor, proposal_id)

    def undo(self, actor: Actor, proposal_id: str) -> Reply:
        """Cancel an approved send inside its undo window, or compensate an executed internal update."""
        return self._impl.undo(actor, proposal_id)

    def retry(self, actor: Actor, proposal_id: str) -> Reply:
        """Run a failed action again."""
        return self._impl.retry(actor, proposal_id)

    def resend(self, actor: Actor, proposal_id: str, send: bool = True) -> Reply:
        """Answer "may have been sent": send it again (`send=True`) or leave it (`send=False`)."""
        return self._impl.resend(actor, proposal_id, send)

    # -- reads and housekeeping --------------------------------------------------------------------
    def customer(self, actor: Actor, query: str, as_of: date | datetime | None = None) -> Reply:
        """One customer's context slice, now or as of a past date; several matches come as `choices`."""
        return self._impl.customer(actor, query, as_of)

    def pending(self, actor: Actor) -> Reply:
        """Proposals waiting for a decision, oldest first, one line each with a "show" button."""
        return self._impl.pending(actor)

    def show(self, actor: Actor, proposal_id: str) -> Reply:
        """One proposal's whole card with its buttons (by id, number or a unique piece of the id)."""
        return self._impl.show(actor, proposal_id)

    def note(self, actor: Actor, query: str, text: str) -> Reply:
        """Add a note to a customer."""
        return self._impl.note(actor, query, storable_text(text))

    def pause(self, actor: Actor, agent: str | None = None) -> Reply:
        """Stop an agent (or all agents, `agent=None`) from proposing."""
        return self._impl.pause(actor, agent)

    def resume(self, actor: Actor, agent: str | None = None) -> Reply:
        """Let a paused agent (or all agents) propose again."""
        return self._impl.resume(actor, agent)

    def digest(self, actor: Actor) -> Reply:
        """Today's digest now: the text, the first pending proposals with their buttons, the chart."""
        return self._impl.digest(actor)

    def merge(self, actor: Actor, first: str, second: str) -> Reply:
        """Merge the two customers the queries name; the older keeps the record; Undo on the card."""
        return self._impl.merge(actor, first, second)

    def unmerge(self, actor: Actor, query: str = "") -> Reply:
        """Take a merged customer out again; without a query, the merged customers as `choices`."""
        return self._impl.unmerge(actor, query)

    def not_same(self, actor: Actor, proposal_id: str) -> Reply:
        """Answer a merge proposal "Not the same": rejected, and the possible duplicate dismissed."""
        return self._impl.not_same(actor, proposal_id)

    def audit(self, actor: Actor, query: str | None = None, days: int = 7) -> Reply:
        """Who decided what, when, and what it cost, over the last `days` days (one customer's or all)."""
        return self._impl.audit(actor, query, days)

    def help(self, actor: Actor) -> Reply:
        """The commands, one per line."""
        return self._impl.help(actor)

    # -- entry points for surfaces -----------------------------------------------------------------
    def press(self, actor: Actor, button_data: str) -> Reply:
        """A button tap: `Button.data` as handed back by the chat app."""
        return self._impl.press(actor, button_data)

    def run(self, actor: Actor, line: str) -> Reply:
        """A typed line (`approve prp_…`, `customer acme as of 2024-05-01`, `note acme: …`).

        The one grammar of every surface: a Slack slash command or a Telegram `/command` is its name
        and text as one line (`/customer jonas becker as of 2026-11-01`).
        """
        return self._impl.run(actor, storable_text(line))

    # -- who is who, and what only a chat app has ---------------------------------------------------
    def is_operator(self, actor: Actor) -> bool:
        """Whether OPERATORS lists this person (their messages are commands, not a customer writing)."""
        return self._chat.is_operator(actor)

    def link_channel(self, actor: Actor, query: str, channel_id: str) -> Reply:
        """Link a Slack channel to the one customer `query` names; several matches come as `choices`."""
        return self._chat.link_channel(actor, query, channel_id)

    def channel_customer(self, channel_id: str) -> str | None:
        """The customer a Slack channel is linked to, if any."""
        return self._chat.channel_customer(channel_id)

    def is_posted_copy(self, proposal_id: str, surface: str, chat_id: str, message_id: str) -> bool:
        """Whether this chat message is one the notify fan-out posted (and so keeps current itself)."""
        return self._chat.is_posted_copy(proposal_id, surface, chat_id, message_id)
