"""The terminal console: typed lines in, command-layer calls, printed replies out.

Interactive, it prompts and opens `$EDITOR` for edits; fed from a pipe, it reads one command per line,
prints the replies, and returns at end of input (the caller then waits for the work it started).
Typed lines go to `Commands.run` unchanged, so `/customer acme`, `customer acme`, `approve prp_…`,
`reject prp_… too pushy`, `snooze prp_… tomorrow`, `why prp_…`, `undo prp_…` all mean what they say
on every surface. Only `edit` is handled here, because an editor is a terminal thing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape

from bot.commands import Actor, Commands, EditableField
from bot.terminal.render import render_reply

PROMPT = "crm> "


def local_actor() -> Actor:
    """The person at the terminal: they run the process, so they are its operator."""
    return Actor(surface="terminal", user_id="local", display_name=os.environ.get("USER") or "you")


class TerminalConsole:
    """The read-eval-print loop over one input stream."""

    def __init__(self, commands: Commands, console: Console, actor: Actor | None = None) -> None:
        self.commands = commands
        self.console = console
        self.actor = actor or local_actor()

    def handle(self, line: str, interactive: bool) -> None:
        """One typed line."""
        words = line.strip().lstrip("/").split(maxsplit=2)
        if not words:
            return
        if words[0] == "edit" and len(words) >= 2:
            self.edit(words[1], words[2] if len(words) > 2 else None, interactive)
            return
        render_reply(self.console, self.commands.run(self.actor, line.strip()))

    def edit(self, proposal_id: str, new_text: str | None, interactive: bool) -> None:
        """`edit ID` opens the editable fields; `edit ID new text` replaces the main text at once."""
        offer = self.commands.edit(self.actor, proposal_id)
        if not offer.ok or not offer.fields:
            render_reply(self.console, offer)
            return
        main = next((f for f in offer.fields if f.multiline), offer.fields[0])
        if new_text is not None:
            values = {main.name: new_text.replace("\\n", "\n")}
        elif interactive:
            values = {field.name: self.ask(field) for field in offer.fields}
        else:
            render_reply(self.console, offer)
            self.console.print(f"to edit from a script: edit {proposal_id} <new {main.name}>")
            return
        render_reply(self.console, self.commands.edit(self.actor, proposal_id, values))

    def ask(self, field: EditableField) -> str:
        """A new value for a field: $EDITOR for long text, a prompt for a line; Enter keeps it."""
        if field.multiline and os.environ.get("EDITOR"):
            return edit_in_editor(field.value)
        answer = self.console.input(escape(f"{field.label} [{field.value[:60]}]: "))
        return answer or field.value

    def loop(self, stream: Iterable[str], interactive: bool) -> None:
        """Read commands until end of input (or `quit`)."""
        lines = self._prompted() if interactive else iter(stream)
        if interactive:
            self.console.print("chatops-crm — type /help for the commands, Ctrl-D to leave")
        for line in lines:
            if line.strip() in {"quit", "exit", "/quit"}:
                return
            try:
                self.handle(line, interactive)
            except Exception as exc:  # a bad line must not end the session
                self.console.print(f"[red]error:[/red] {escape(str(exc))}")

    def _prompted(self) -> Iterator[str]:
        while True:
            try:
                yield self.console.input(PROMPT)
            except EOFError:
                return


def edit_in_editor(text: str) -> str:
    """Open text in $EDITOR and return what was saved."""
    with tempfile.NamedTemporaryFile("w+", suffix=".txt", delete=False, encoding="utf-8") as handle:
        handle.write(text)
        path = handle.name
    try:
        subprocess.run([*shlex.split(os.environ["EDITOR"]), path], check=False)
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    finally:
        os.unlink(path)


def run_console(commands: Commands, console: Console, stream: IO[str] | None = None) -> None:
    """Serve the console on stdin (or a stream) until end of input."""
    stream = stream or sys.stdin
    TerminalConsole(commands, console).loop(stream, interactive=stream.isatty())
