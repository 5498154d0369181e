"""The terminal console: typed lines in, command-layer calls, printed replies out.

At a terminal it prompts (prompt_toolkit: background output lands above the `crm>` line) and holds a
dialogue for edits; fed from a pipe, it reads one command per line, prints the replies, and returns at
end of input (the caller then waits for the work it started). Typed lines go to `Commands.run`
unchanged, so `/customer acme`, `customer acme`, `approve prp_…`, `reject prp_… too pushy`,
`snooze prp_… tomorrow`, `why prp_…`, `undo prp_…` all mean what they say on every surface. Only
`edit` is handled here, because an editor and a dialogue are terminal things.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from rich.console import Console

from bot.commands import Actor, Commands, EditableField, Reply, is_recipient
from bot.terminal.cards import ShownCards
from bot.terminal.prompt import LineReader, PromptReader, StreamReader
from bot.terminal.render import render_reply

PROMPT = "crm> "
# The line that ends a multi-line value typed at the prompt (as in mail(1) and ed(1)).
END_OF_TEXT = "."
# Commands that change a proposal: the notify fan-out prints the same card, so it is shown once.
ACTIONS = frozenset(
    {"approve", "reject", "edit", "snooze", "undo", "retry", "resend", "keep", "intent", "distinct"}
)
YES = frozenset({"y", "yes"})


def local_actor() -> Actor:
    """The person at the terminal: they run the process, so they are its operator."""
    return Actor(surface="terminal", user_id="local", display_name=os.environ.get("USER") or "you")


def _names(word: str, field: str, value: str) -> bool:
    """Whether a script's `edit ID WORD …` names a field: typed as the field's name (`subject`), or
    followed by a colon or equals sign in any case (`Subject:`), or a recipient in any case before an
    address and nothing else (`To ada@acme.com`, as the chat surfaces read it). Text that merely starts
    with the word ("Subject to your OK, …") is the main text."""
    if word[-1:] in (":", "="):
        return word[:-1].lower() == field
    return word == field or (field == "to" and word.lower() == "to" and is_recipient(value.strip()))


class TerminalConsole:
    """The read-eval-print loop over one line reader."""

    def __init__(
        self,
        commands: Commands,
        console: Console,
        actor: Actor | None = None,
        cards: ShownCards | None = None,
    ) -> None:
        self.commands = commands
        self.console = console
        self.actor = actor or local_actor()
        self.cards = cards or ShownCards()

    def say(self, text: str) -> None:
        """Print text as typed (no markup: "[reason]" stays "[reason]")."""
        self.console.print(text, markup=False, highlight=False)

    def show(self, answer: Reply, *, action: bool = False) -> None:
        render_reply(self.console, answer, self.cards, once=action)

    def handle(self, line: str, reader: LineReader) -> None:
        """One typed line."""
        words = line.strip().lstrip("/").split(maxsplit=2)
        if not words:
            return
        verb = words[0].lower()
        if verb == "edit" and len(words) >= 2:
            self.edit(words[1], words[2] if len(words) > 2 else None, reader)
            return
        self.show(self.commands.run(self.actor, line.strip()), action=verb in ACTIONS)

    def edit(self, proposal_id: str, new_text: str | None, reader: LineReader) -> None:
        """`edit ID` asks for each field, then for a yes before approving; `edit ID new text` at once."""
        offer = self.commands.edit(self.actor, proposal_id)
        if not offer.ok or not offer.fields:
            self.show(offer)
            return
        main = next((f for f in offer.fields if f.multiline), offer.fields[0])
        if new_text is not None:  # a script's edit says what it wants: no dialogue
            named, _, value = new_text.partition(" ")
            field = next((f for f in offer.fields if _names(named, f.name, value)), None)
            if field is not None and not value.strip():
                self.say(
                    f"edit {proposal_id} {field.name} <new {field.label.lower()}>: the new value is missing"
                )
                return
            # `edit ID FIELD VALUE`, as on every surface; else `edit ID TEXT`: the whole of the main text
            name, text = (field.name, value.strip()) if field is not None else (main.name, new_text)
            values = {name: text.replace("\\n", "\n")}
            self.show(self.commands.edit(self.actor, proposal_id, values), action=True)
            return
        if not reader.interactive:
            self.show(offer)
            self.say(
                f"to edit from a script: edit {proposal_id} <field> <new value>, "
                f"or edit {proposal_id} <new {main.name}>"
            )
            return
        self.show(offer)
        try:
            values = {field.name: self.ask(field, reader) for field in offer.fields}
            changed = [f for f in offer.fields if values[f.name] != f.value]
            for field in changed:
                self.say(f"{field.label}: {values[field.name]}")
            question = "Approve the edited version?" if changed else "Nothing changed. Approve it as it is?"
            self.say(question)
            confirmed = reader.read("[y/N] ").strip().lower() in YES
        except EOFError:
            confirmed = False
        if not confirmed:
            self.say(f"Not approved; the proposal is still waiting (edit {proposal_id} to start again).")
            return
        self.show(self.commands.edit(self.actor, proposal_id, values), action=True)

    def ask(self, field: EditableField, reader: LineReader) -> str:
        """A new value for a field: $EDITOR or lines up to "." for long text, a prompt for a line;
        nothing typed keeps the current value."""
        if field.multiline and os.environ.get("EDITOR"):
            return edit_in_editor(field.value)
        if field.multiline:
            self.say(
                f"New {field.label.lower()}: type it, then a line holding only {END_OF_TEXT} "
                f"({END_OF_TEXT} at once keeps it as it is)"
            )
            lines = []
            while (line := reader.read("… ")).strip() != END_OF_TEXT:
                lines.append(line)
            return "\n".join(lines) if lines else field.value
        answer = reader.read(f"{field.label} [{field.value[:60]}]: ")
        return answer or field.value

    def loop(self, reader: LineReader) -> None:
        """Read commands until end of input (or `quit`)."""
        if reader.interactive:
            self.say("chatops-crm — type /help for the commands, Ctrl-D to leave")
        while True:
            try:
                line = reader.read(PROMPT)
            except EOFError:
                return
            if line.strip() in {"quit", "exit", "/quit"}:
                return
            try:
                self.handle(line, reader)
            except Exception as exc:  # a bad line must not end the session
                self.say(f"error: {exc}")


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


def run_console(
    commands: Commands, console: Console, stream: IO[str] | None = None, cards: ShownCards | None = None
) -> None:
    """Serve the console on stdin (or a stream) until end of input."""
    stream = stream or sys.stdin
    terminal = TerminalConsole(commands, console, cards=cards)
    if stream is sys.stdin and stream.isatty() and sys.stdout.isatty():
        reader = PromptReader()
        with reader.output_above_prompt():
            terminal.loop(reader)
    else:  # typed at a terminal whose output goes elsewhere (`crm run | tee log`): plain lines, a dialogue
        terminal.loop(StreamReader(stream, interactive=stream.isatty()))
