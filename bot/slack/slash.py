"""Slash command text → command-layer call → Block Kit message. The syntax is Slack's; the work is not.

`/customer jonas becker as of 2026-11-01` is the typed line `customer jonas becker as of 2026-11-01`:
the command layer reads it, as it reads the same line from Telegram and the terminal. Only what a
terminal has no notion of is read here: `/customer <name> link` links the channel it was typed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.commands import Actor, Reply
from bot.slack import render as kit

if TYPE_CHECKING:
    from bot.commands import Commands

Message = dict[str, Any]

_LINK = re.compile(r"^(?P<query>.+?)\s+link$", re.IGNORECASE)
# The longest text taken from a slash command: longer is no command, and bounds what is read.
MAX_TEXT = 400
# A pick button's value that links the channel rather than runs a typed line.
LINK_PICK = "link "
# The typed lines a pick button may run: a customer among several matches, a proposal from a list,
# a merged customer to split out.
PICKABLE = ("customer ", "show ", "unmerge ")

# Where a reply's picture (the digest chart) travels in the answer, for the listener to upload: a
# response_url message cannot carry a file.
IMAGE_KEY = "_image"

# Slash commands that are the typed line of the same name (`/audit acme 7` is `audit acme 7`).
TYPED_COMMANDS = frozenset(
    {"/customer", "/pending", "/digest", "/note", "/pause", "/resume", "/audit", "/merge", "/unmerge"}
)

USAGE = {
    "/customer": "Usage: /customer <name|email|domain> [as of YYYY-MM-DD] — or /customer <name> link",
}


def _text(line: str) -> Message:
    return kit.lines_message(Reply(lines=(line,)))


class SlashCommands:
    """Reads a slash command's text and calls the matching command."""

    def __init__(self, commands: Callable[[], Commands]) -> None:
        self.commands = commands

    def answer(self, actor: Actor, name: str, text: str, channel: str | None) -> Message:
        """The message answering `/name text` typed by `actor` in `channel`."""
        text = " ".join(text.split())[:MAX_TEXT]
        if name == "/customer":
            if not text:
                return _text(USAGE["/customer"])
            link = _LINK.match(text)
            if link:
                return self.link(actor, link["query"], channel)
        if name in TYPED_COMMANDS:
            return self._message(self.commands().run(actor, f"{name[1:]} {text}"))
        return _text(f"{name} is not a command of this app.")

    def link(self, actor: Actor, query: str, channel: str | None) -> Message:
        """Link the channel the command was typed in to one customer."""
        if not channel:
            return _text("Type /customer <name> link in the channel to link.")
        return self._message(self.commands().link_channel(actor, query, channel))

    def picked(self, actor: Actor, value: str, channel: str | None) -> Message:
        """The answer to a pick button: a typed line (`customer cus_…`) or `link cus_…`."""
        if value.startswith(LINK_PICK) and channel:
            return self.link(actor, value.removeprefix(LINK_PICK), channel)
        if value.startswith(PICKABLE):
            return kit.reply_message(self.commands().run(actor, value))
        return _text("That choice has expired; run the command again.")

    @staticmethod
    def _message(reply: Reply) -> Message:
        """The reply, with one button per choice when several customers matched."""
        if reply.choices:
            return kit.choice_message(list(reply.lines[:1]), [(c.label, c.line) for c in reply.choices])
        message = kit.reply_message(reply)
        if reply.image is not None:
            message[IMAGE_KEY] = reply.image
        return message
