"""What a surface shows for a proposal: plain data (lines, buttons, editable fields), never chat markup.

Lives in `jobs/` because the executor and the notify fan-out build views too, and `jobs/` may not import
`bot/`. Surfaces import these names from `bot.commands`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Every button a proposal message can carry. `keep` answers "may have been sent" with "don't resend".
ButtonAction = Literal[
    "approve", "edit", "reject", "snooze", "why", "undo", "retry", "resend", "keep", "intent", "distinct"
]
BUTTON_ACTIONS: tuple[str, ...] = (
    "intent",  # the operator corrects the message's intent: "Spam", "Not spam" (arg: the intent)
    "distinct",  # "Not the same" on a merge: reject it and dismiss the possible duplicate
    "approve",
    "edit",
    "reject",
    "snooze",
    "why",
    "undo",
    "retry",
    "resend",
    "keep",
)

# Telegram limits callback_data to 64 bytes; "resend:" + a 24-character proposal id + ":" + arg fits.
MAX_BUTTON_DATA = 64
DEFAULT_SNOOZE = "1h"


@dataclass(frozen=True)
class Button:
    """One tappable action on a proposal; `data` is what a surface stores in the button and hands back."""

    action: ButtonAction
    label: str
    proposal_id: str
    arg: str | None = None  # snooze: how long ("1h")
    style: Literal["primary", "danger"] | None = None

    @property
    def data(self) -> str:
        """`action:proposal_id[:arg]` — pass it back unchanged to `Commands.press`."""
        return f"{self.action}:{self.proposal_id}" + (f":{self.arg}" if self.arg else "")

    @staticmethod
    def parse(data: str) -> tuple[str, str, str | None]:
        """(action, proposal_id, arg) from `data`; raises ValueError for anything malformed."""
        if len(data) > MAX_BUTTON_DATA:
            raise ValueError("button data too long")
        action, _, rest = data.partition(":")
        proposal_id, _, arg = rest.partition(":")
        if action not in BUTTON_ACTIONS or not proposal_id:
            raise ValueError(f"unknown button {data[:40]!r}")
        return action, proposal_id, arg or None


@dataclass(frozen=True)
class EditableField:
    """A field of a proposal the operator may change before approving."""

    name: str  # "subject", "body", or a param name such as "to", "stage", "title"
    label: str
    value: str
    multiline: bool = False


@dataclass(frozen=True)
class ProposalView:
    """A proposal as a person sees it, in any chat app. `lines()` is the whole message as plain text."""

    id: str
    state: str  # pending | snoozed | expired | rejected | refused | approved | executing | executed |
    #             failed | uncertain | undone | closed | withdrawn
    kind: str
    agent: str
    customer_id: str
    customer_name: str | None
    title: str  # one line: "Send email to Ada Lovelace (Acme)"
    body: tuple[str, ...] = ()  # the draft and the rationale, line by line
    status: str | None = None  # the outcome once decided: "Approved by alice (slack) at …, sent"
    buttons: tuple[Button, ...] = ()
    updated_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # the log position of the proposal's last change: newer renders have higher ones
    number: int | None = None  # the short handle the operator may type (`approve 12`)

    def lines(self) -> list[str]:
        """Title, body and status as plain lines."""
        return [self.title, *self.body, *([self.status] if self.status else [])]

    @property
    def handle(self) -> str:
        """What to type to name this proposal: its number (`12`), or its id when it has none."""
        return str(self.number) if self.number is not None else self.id

    @property
    def final(self) -> bool:
        """True when nothing more can be tapped (the message has lost its buttons)."""
        return not self.buttons
