"""Slash command text → command-layer call → Block Kit message. The syntax is Slack's; the work is not."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from bot import slack_blocks as kit
from bot.commands import Actor, Reply
from bot.slack import channels
from store.slice import closest_names, find_customers

if TYPE_CHECKING:
    from bot.bootstrap import App
    from bot.commands import Commands

Message = dict[str, Any]

_AS_OF = re.compile(r"^(?P<query>.+?)\s+as\s+of\s+(?P<day>.+)$", re.IGNORECASE)
_LINK = re.compile(r"^(?P<query>.+?)\s+link$", re.IGNORECASE)
# The longest query taken from a slash command: longer is no customer name, and bounds the lookup.
MAX_QUERY = 200

USAGE = {
    "/customer": "Usage: /customer <name|email|domain> [as of YYYY-MM-DD] — or /customer <name> link",
    "/note": "Usage: /note <customer> <text> — or /note <customer name>: <text>",
}


def _text(line: str) -> Message:
    return kit.lines_message(Reply(lines=(line,)))


class SlashCommands:
    """Reads a slash command's text and calls the matching command."""

    def __init__(self, container: App, commands: Callable[[], Commands]) -> None:
        self.container = container
        self.commands = commands

    def answer(self, actor: Actor, name: str, text: str, channel: str | None) -> Message:
        """The message answering `/name text` typed by `actor` in `channel`."""
        text = " ".join(text.split())[: MAX_QUERY * 2]
        commands = self.commands()
        if name == "/customer":
            return self.customer(actor, text, channel)
        if name == "/pending":
            return kit.reply_message(commands.pending(actor))
        if name == "/digest":
            digest = getattr(commands, "digest", None)
            if digest is None:
                return _text("The digest is not available yet in this version.")
            return kit.reply_message(digest(actor))
        if name == "/note":
            return self.note(actor, text)
        if name in ("/pause", "/resume"):
            agent = None if text.lower() in ("", "all") else text
            run = commands.pause if name == "/pause" else commands.resume
            return kit.reply_message(run(actor, agent))
        return _text(f"{name} is not a command of this app.")

    def customer(self, actor: Actor, text: str, channel: str | None) -> Message:
        """`/customer acme`, `/customer acme as of 2026-10-01`, `/customer acme link`."""
        if not text:
            return _text(USAGE["/customer"])
        link = _LINK.match(text)
        if link:
            return self.link(actor, link["query"][:MAX_QUERY], channel)
        as_of: date | None = None
        past = _AS_OF.match(text)
        if past:
            try:
                as_of = date.fromisoformat(past["day"])
            except ValueError:
                return _text(f"{past['day']!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-10-01.")
            text = past["query"]
        query = text[:MAX_QUERY]
        reply = self.commands().customer(actor, query, as_of)
        if not reply.ok:
            return kit.reply_message(reply)
        matches = self._matches(query)
        if len(matches) > 1:
            suffix = f":{as_of.isoformat()}" if as_of else ""
            return kit.choice_message(
                [f"{len(matches)} customers match {query!r}; which one?"],
                [(_label(m), f"customer:{m['id']}{suffix}") for m in matches],
            )
        return kit.reply_message(reply)

    def link(self, actor: Actor, query: str, channel: str | None) -> Message:
        """Link the channel the command was typed in to one customer."""
        if not channel:
            return _text("Type /customer <name> link in the channel to link.")
        matches = self._matches(query)
        if not matches:
            return _text(self._none(query))
        if len(matches) > 1:
            return kit.choice_message(
                [f"{len(matches)} customers match {query!r}; link this channel to which one?"],
                [(_label(m), f"link:{m['id']}") for m in matches],
            )
        return self._link(actor, matches[0]["id"], channel)

    def _link(self, actor: Actor, customer_id: str, channel: str) -> Message:
        result = channels.link_channel(self.container, customer_id, channel, actor.key)
        return _text(result.line)

    def picked(self, actor: Actor, value: str, channel: str | None) -> Message:
        """The answer to a pick button: `customer:<id>[:<day>]` or `link:<id>`."""
        what, _, rest = value.partition(":")
        customer_id, _, day = rest.partition(":")
        if what == "link" and customer_id and channel:
            return self._link(actor, customer_id, channel)
        if what == "customer" and customer_id:
            try:
                as_of = date.fromisoformat(day) if day else None
            except ValueError:
                as_of = None
            return kit.reply_message(self.commands().customer(actor, customer_id, as_of))
        return _text("That choice has expired; run the command again.")

    def note(self, actor: Actor, text: str) -> Message:
        """`/note acme called, wants a demo` or `/note Acme Corp: called, wants a demo`."""
        first, _, rest = text.partition(" ")
        before, colon, after = text.partition(":")
        query, note = first.rstrip(":"), rest
        # "Acme Corp: …" names a customer with a space; "acme re: pricing" does not, so check.
        if colon and before.strip() and after.strip() and self._matches(before.strip()[:MAX_QUERY]):
            query, note = before, after
        if not query.strip() or not note.strip():
            return _text(USAGE["/note"])
        reply: Reply = self.commands().note(actor, query.strip()[:MAX_QUERY], note.strip())
        return kit.reply_message(reply)

    def _matches(self, query: str) -> list[dict[str, Any]]:
        with self.container.engine.connect() as connection:
            return find_customers(connection, query)

    def _none(self, query: str) -> str:
        with self.container.engine.connect() as connection:
            near = closest_names(connection, query)
        return f"No customer matches {query!r}" + (f"; closest: {', '.join(near)}" if near else "") + "."


def _label(match: dict[str, Any]) -> str:
    name = match.get("name") or match["id"]
    company = match.get("company")
    return f"{name} ({company})" if company and company != name else str(name)
