"""Replies and proposals as rich renderables for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from bot.commands import ProposalView, Reply
from bot.terminal.cards import ShownCards


def proposal_panel(view: ProposalView) -> Panel:
    """A proposal as a rich panel, with the commands that act on it."""
    lines = [escape(line) for line in view.lines()]  # text as typed: "[reason]" is not markup
    if view.buttons:
        actions = dict.fromkeys(b.action for b in view.buttons)  # in order, once each
        choices = [f"{action} {view.handle}" + (" 1h" if action == "snooze" else "") for action in actions]
        lines += ["", "[dim]" + escape("  ·  ".join(choices)) + "[/dim]"]
    # The body's first line carries the handle to type (#12); the border names the proposal's id.
    return Panel("\n".join(lines), title=escape(f"{view.id} · {view.state}"), expand=False)


def state_line(view: ProposalView) -> str:
    """One line for a card already on screen whose state moved on with nothing left to act on."""
    # A numbered proposal's title begins with its handle (#12) already.
    title = view.title if view.number is not None else f"{view.id} {view.title}"
    return f"{title} · {view.state}" + (f" — {view.status}" if view.status else "")


def render_reply(
    console: Console, reply: Reply, cards: ShownCards | None = None, *, once: bool = False
) -> None:
    """Print a command's reply: its lines, then any proposals it carries.

    With `cards`, each printed card is remembered; with `once` too, a card that is already the last
    one shown for its proposal (the notify fan-out printed the same update) is not printed again.
    """
    if reply.lines:
        text = escape(reply.text)
        # Piped (`printf '/help' | crm run`, a script): each line stays one line, at any width.
        soft_wrap = not console.is_terminal
        console.print(text if reply.ok else f"[red]{text}[/red]", highlight=False, soft_wrap=soft_wrap)
    if reply.choices:  # buttons in a chat app; here, the line that picks each
        picks = [f"  {choice.line}   ({choice.label})" for choice in reply.choices]
        console.print(escape("\n".join(["Type one of:", *picks])), highlight=False, soft_wrap=True)
    for view in reply.proposals:
        if cards is None:
            console.print(proposal_panel(view))
        elif once:
            if cards.first_showing(view):
                console.print(proposal_panel(view))
        else:
            cards.record(view)
            console.print(proposal_panel(view))
    if reply.image is not None:
        console.print(f"chart: {escape(str(reply.image))}")
