"""The terminal `Surface` (jobs.notify): proposals printed as panels, each changed card printed once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from bot.commands import ProposalView
from bot.terminal.cards import ShownCards
from bot.terminal.render import proposal_panel, state_line
from jobs.notify import MessageRef

TERMINAL_CHAT = "-"


class TerminalSurface:
    """Prints proposals as panels, and their updates in place of an edit (a terminal cannot edit)."""

    name = "terminal"

    def __init__(self, console: Console | None = None, cards: ShownCards | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.cards = cards or ShownCards()  # shared with the console: an action's card prints once
        self._lock = threading.Lock()  # workers post from their threads; keep panels whole
        self._counter = 0

    def _print(self, renderable: Any) -> None:
        with self._lock:
            self.console.print(renderable)

    def post_proposal(self, view: ProposalView) -> MessageRef | None:
        self.cards.record(view)
        self._print(proposal_panel(view))
        with self._lock:
            self._counter += 1
            return MessageRef(surface=self.name, chat_id=TERMINAL_CHAT, message_id=str(self._counter))

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        on_screen = self.cards.shown(view.id)
        if not self.cards.first_showing(view):  # the console may have printed this very card already
            return
        if on_screen and not view.buttons:
            # approved → executed and the like: the card is above; one line says what became of it
            self._print(escape(state_line(view)))
        else:
            self._print(proposal_panel(view))

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        self._print(Panel(escape(text), title=escape(f"chat reply to {chat_id}"), expand=False))
        return idempotency_key

    def post_notice(self, lines: list[str]) -> None:
        self._print(escape("\n".join(lines)))

    def post_image(self, path: Path, caption: str) -> None:
        self._print(escape(f"{caption}: chart saved to {path}"))
