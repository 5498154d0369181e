"""What a command takes and gives back, as plain data: who asks (`Actor`) and the answer (`Reply`).

The bottom of the command layer: the command modules and every surface import it; it imports none of
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobs.views import EditableField, ProposalView

ReplyCode = Literal["ok", "refused", "conflict", "not_found", "invalid", "too_late"]


@dataclass(frozen=True)
class Actor:
    """Who is asking: the surface they used, their id there, and a name to show."""

    surface: str  # "slack" | "telegram" | "terminal"
    user_id: str
    display_name: str | None = None

    @property
    def key(self) -> str:
        """`surface:id`, the form OPERATORS uses."""
        return f"{self.surface}:{self.user_id}"

    @property
    def name(self) -> str:
        """What to show for this person."""
        return self.display_name or self.key


@dataclass(frozen=True)
class Choice:
    """One of several things a command could have meant (several customers match), to offer as a button.

    `line` is the typed command that picks it (`customer cus_… as of 2026-11-01`), run through
    `Commands.run` when tapped; `customer_id` is the customer it names.
    """

    label: str
    line: str
    customer_id: str


@dataclass(frozen=True)
class Item:
    """One line of a compact list (`/pending`), with a button that runs a typed line (`show 12`).

    Its `text` is also among the reply's `lines`, so a surface without buttons shows the list as is.
    """

    text: str
    label: str  # the button: "Show #12"
    line: str  # the typed command the button runs


@dataclass(frozen=True)
class Reply:
    """A command's answer as plain data. `ok` is False for refusals, conflicts and bad input."""

    lines: tuple[str, ...]
    ok: bool = True
    code: ReplyCode = "ok"
    proposals: tuple[ProposalView, ...] = ()
    fields: tuple[EditableField, ...] = ()  # edit without values: what may be changed
    proposal_id: str | None = None
    image: Path | None = None  # a picture to show with the text (the digest chart)
    choices: tuple[Choice, ...] = ()  # several matches: what to offer as buttons to pick one
    items: tuple[Item, ...] = ()  # a compact list: one line and one button per entry

    @property
    def text(self) -> str:
        """The lines joined, for surfaces that send one message."""
        return "\n".join(self.lines)


def reply(*lines: str, **kwargs: Any) -> Reply:
    """A Reply from lines."""
    return Reply(lines=tuple(lines), **kwargs)


def fail(code: ReplyCode, *lines: str, **kwargs: Any) -> Reply:
    """A refusing or failing Reply."""
    return Reply(lines=tuple(lines), ok=False, code=code, **kwargs)
