"""Telegram renderings of the command layer's plain data: HTML parse-mode text and inline keyboards.

Pure functions: a `ProposalView` or `Reply` in, `(html, keyboard)` out. Nothing here decides anything;
the command layer already chose the lines and the buttons. Every piece of outside text goes through
`escape`, so names full of `_`, `*`, `<`, `&` or emoji cannot break a message (HTML parse mode treats
only `<`, `>` and `&` specially; Markdown characters mean nothing there).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.commands import Button, Choice, EditableField, Item, ProposalView, Reply

PARSE_MODE = "HTML"
NOT_AUTHORISED = "Not authorised"
# Telegram's limits (core.telegram.org/bots/api): a message text holds 4,096 characters after entity
# parsing, callback_data 1-64 bytes of UTF-8, an answerCallbackQuery text 200 characters.
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_ANSWER = 200
# Plain-text budget for a message, below MAX_TEXT to leave room for the title, status and marks.
TEXT_BUDGET = 3800
# One body line longer than this is cut (a pasted email thread must not push the buttons off screen).
MAX_LINE = 1500
# A reply shows at most this many proposals, each as its own message with its own keyboard.
MAX_PROPOSALS_SHOWN = 8
# A customer search offers at most this many matches as buttons.
MAX_PICKS = 8
# What Snooze offers; the command layer reads "1h" / "4h" / "1d".
SNOOZE_CHOICES: tuple[tuple[str, str], ...] = (("1 hour", "1h"), ("4 hours", "4h"), ("1 day", "1d"))

# Telegram-only callbacks (the proposal buttons carry `Button.data` unchanged, e.g. `approve:prp_…`):
EDIT_APPROVE = "ea"  # ea:<edit id> — approve the edited version shown back to the operator
EDIT_CANCEL = "ec"  # ec:<edit id> — drop it, the original stays pending
PICK_CUSTOMER = "cu"  # cu:<typed line> — a line to run: one of several customers, or `show 12` from /pending
SNOOZE_MENU = "sm"  # sm:<proposal id> — show the snooze choices in place of the buttons
BACK = "bk"  # bk:<proposal id> — back from the snooze choices to the proposal's buttons
LOCAL_PREFIXES = frozenset({EDIT_APPROVE, EDIT_CANCEL, PICK_CUSTOMER, SNOOZE_MENU, BACK})

BACK_LABEL = "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK} Back"

_STATE_MARK = {
    "approved": "✅",
    "executing": "⏳",
    "executed": "✅",
    "rejected": "🚫",
    "refused": "🚫",
    "failed": "⚠️",
    "uncertain": "⚠️",
    "expired": "💤",
    "withdrawn": "📧",
    "snoozed": "💤",
    "undone": "↩️",
    "closed": "☑️",
}


def escape(text: str) -> str:
    """Text made safe for HTML parse mode: `&`, `<` and `>` become entities; nothing else needs it."""
    return html.escape(text, quote=False)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def callback(data: str) -> str:
    """callback_data checked against Telegram's 64-byte limit (a longer one is refused with a 400)."""
    if not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
        raise ValueError(f"callback_data must be 1-{MAX_CALLBACK_DATA} bytes: {data[:80]!r}")
    return data


def split_callback(data: str) -> tuple[str, str]:
    """(prefix, rest) of a Telegram-only callback; ("", data) for a proposal button's `Button.data`."""
    prefix, sep, rest = data.partition(":")
    if sep and prefix in LOCAL_PREFIXES and rest:
        return prefix, rest
    return "", data


@dataclass(frozen=True)
class Message:
    """One Telegram message to send: HTML text and an optional inline keyboard."""

    html: str
    keyboard: InlineKeyboardMarkup | None = None

    def send_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Bot.send_message` / `edit_message_text` (minus the chat)."""
        return {
            "text": self.html,
            "parse_mode": PARSE_MODE,
            "reply_markup": self.keyboard,
            "disable_web_page_preview": True,
        }


def _budgeted(lines: Sequence[str], budget: int = TEXT_BUDGET) -> list[str]:
    """Plain lines cut to fit the budget, each long line clipped; a final "…" marks a cut."""
    out: list[str] = []
    used = 0
    for line in lines:
        line = clip(line, MAX_LINE)
        if used + len(line) + 1 > budget:
            out.append("…")
            break
        out.append(line)
        used += len(line) + 1
    return out


def proposal_html(view: ProposalView) -> str:
    """A proposal: title, who and what, the draft and rationale, then the outcome once decided."""
    who = view.customer_name or view.customer_id
    header = [
        f"<b>{escape(clip(view.title, 300))}</b>",
        f"<i>{escape(clip(f'{who} · {view.kind} · proposed by {view.agent}', 300))}</i>",
    ]
    body = [escape(line) for line in _budgeted(view.body)]
    status: list[str] = []
    if view.status:
        mark = _STATE_MARK.get(view.state, "\N{INFORMATION SOURCE}\ufe0f")
        status = ["", f"{mark} <b>{escape(clip(view.status, 300))}</b>"]
    return "\n".join([*header, *([""] if body else []), *body, *status])


def _button(label: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(clip(label, 64), callback_data=callback(data))


def proposal_keyboard(view: ProposalView) -> InlineKeyboardMarkup | None:
    """The proposal's buttons: decisions on the first row, Snooze / Why? next, the rest below."""
    if not view.buttons:
        return None
    decisions: list[InlineKeyboardButton] = []
    secondary: list[InlineKeyboardButton] = []
    after: list[InlineKeyboardButton] = []
    for button in view.buttons:
        if button.action == "snooze" and button.arg is None:
            secondary.append(_button(button.label, f"{SNOOZE_MENU}:{button.proposal_id}"))
        elif button.action in ("approve", "edit", "reject", "distinct"):
            decisions.append(_button(button.label, button.data))
        elif button.action in ("snooze", "why"):
            secondary.append(_button(button.label, button.data))
        else:
            after.append(_button(button.label, button.data))
    rows = [row for row in (decisions, secondary, after) if row]
    return InlineKeyboardMarkup(rows)


def snooze_keyboard(proposal_id: str) -> InlineKeyboardMarkup:
    """The snooze choices, with a way back to the proposal's buttons."""
    choices = [
        _button(label, Button("snooze", label, proposal_id, arg=arg).data) for label, arg in SNOOZE_CHOICES
    ]
    return InlineKeyboardMarkup([choices, [_button(BACK_LABEL, f"{BACK}:{proposal_id}")]])


def proposal_message(view: ProposalView) -> Message:
    """The whole proposal message: text and keyboard."""
    return Message(proposal_html(view), proposal_keyboard(view))


def lines_html(lines: Sequence[str]) -> str:
    """Plain lines as one escaped message ("(nothing to show)" when empty)."""
    shown = _budgeted(list(lines))
    return "\n".join(escape(line) for line in shown) or "(nothing to show)"


def reply_messages(reply: Reply) -> list[Message]:
    """A command's reply: its lines, then each proposal it carries as its own message with buttons."""
    messages = [Message(lines_html(reply.lines))] if reply.lines or not reply.proposals else []
    shown = reply.proposals[:MAX_PROPOSALS_SHOWN]
    messages.extend(proposal_message(view) for view in shown)
    if len(reply.proposals) > len(shown):
        messages.append(Message(escape(f"… and {len(reply.proposals) - len(shown)} more")))
    return messages


def pick_keyboard(choices: Sequence[Choice]) -> InlineKeyboardMarkup:
    """One button per choice to pick among several matches of /customer; a tap runs its typed line."""
    rows = [[_button(choice.label, _pick_data(choice))] for choice in choices[:MAX_PICKS]]
    return InlineKeyboardMarkup(rows)


def items_keyboard(items: Sequence[Item]) -> InlineKeyboardMarkup:
    """One button per line of a compact list (/pending: "Show #12"); a tap runs the item's typed line."""
    rows = [[_button(item.label, f"{PICK_CUSTOMER}:{item.line}")] for item in items if _fits(item.line)]
    return InlineKeyboardMarkup(rows)


def _fits(line: str) -> bool:
    return len(f"{PICK_CUSTOMER}:{line}".encode()) <= MAX_CALLBACK_DATA


def _pick_data(choice: Choice) -> str:
    data = f"{PICK_CUSTOMER}:{choice.line}"
    # callback_data holds 64 bytes; an id too long for the whole line still names the customer.
    return (
        data if len(data.encode()) <= MAX_CALLBACK_DATA else f"{PICK_CUSTOMER}:customer {choice.customer_id}"
    )


def edit_prompt_html(view: ProposalView | None, field: EditableField) -> str:
    """The ForceReply prompt: what is being edited, and the current text to start from."""
    title = escape(view.title) if view else "the proposal"
    return (
        f"✏️ Reply to this message with the new {escape(field.label.lower())} for <b>{title}</b>.\n"
        f"Current text:\n<pre>{escape(clip(field.value, TEXT_BUDGET - 400))}</pre>"
    )


def reject_prompt_html(view: ProposalView) -> str:
    """The reply prompt Reject sends: why, so the agent learns (Slack asks the same in a modal)."""
    return (
        f"🚫 Why reject <b>{escape(clip(view.title, 300))}</b>?\n"
        "Reply to this message with the reason; the agent takes it into account next time. "
        "Reply <code>-</code> to reject without a reason."
    )


def edited_preview(edit_id: int, field: EditableField, new_value: str) -> Message:
    """The edited version shown back with Approve / Cancel."""
    text = (
        f"✏️ <b>Edited {escape(field.label.lower())}</b>\n"
        f"<pre>{escape(clip(new_value, TEXT_BUDGET - 200))}</pre>\n"
        "Approve sends this version; Cancel leaves the proposal as it was."
    )
    keyboard = InlineKeyboardMarkup(
        [
            [
                _button("Approve edited", f"{EDIT_APPROVE}:{edit_id}"),
                _button("Cancel", f"{EDIT_CANCEL}:{edit_id}"),
            ]
        ]
    )
    return Message(text, keyboard)


def answer_text(reply: Reply) -> str:
    """The short toast answering a button tap (answerCallbackQuery allows 200 characters)."""
    first = reply.lines[0] if reply.lines else ("Done" if reply.ok else "Not possible")
    if reply.code == "refused":
        first = f"{NOT_AUTHORISED}. {first}"
    return clip(first, MAX_ANSWER)
