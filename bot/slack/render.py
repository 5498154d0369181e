"""Block Kit renderings of the command layer's plain data: proposal messages, replies and modals.

Pure functions: a `ProposalView` or `Reply` in, Slack `text` + `blocks` (or a modal `view`) out. Nothing
here decides anything; the command layer already chose the lines and the buttons.
"""

from __future__ import annotations

import json
from typing import Any

from bot.commands import Button, EditableField, Item, ProposalView, Reply

Block = dict[str, Any]

# Slack's limits (api.slack.com/reference/block-kit): a message holds at most 50 blocks, a section's
# text at most 3,000 characters, a button label 75, a modal title 24, a plain_text_input 3,000.
MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_LABEL = 75
MAX_MODAL_TITLE = 24
MAX_INPUT = 3000
# The fallback `text` of a message (notifications, screen readers); Slack truncates at 40,000.
MAX_FALLBACK = 3000
# A reply lists at most this many proposals with their buttons (each takes up to 5 blocks).
MAX_PROPOSALS_SHOWN = 8
# What "Snooze…" offers; the command layer reads "30m" / "2h" / "1d".
SNOOZE_CHOICES: tuple[tuple[str, str], ...] = (("1 hour", "1h"), ("4 hours", "4h"), ("1 day", "1d"))

# Every interactive element's action_id starts with this, so one listener (a regex) takes them all.
ACTION_PREFIX = "crm"
# Link buttons still send block_actions; Slack shows a warning unless they are acknowledged.
NOOP_ACTION = "crm_noop"
EDIT_CALLBACK = "crm_edit"
REJECT_CALLBACK = "crm_reject"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
FIELD_INPUT = "value"

_STATE_MARK = {
    "approved": ":white_check_mark:",
    "executing": ":hourglass_flowing_sand:",
    "executed": ":white_check_mark:",
    "rejected": ":no_entry_sign:",
    "refused": ":no_entry_sign:",
    "failed": ":warning:",
    "uncertain": ":warning:",
    "expired": ":zzz:",
    "withdrawn": ":email:",
    "snoozed": ":zzz:",
    "undone": ":leftwards_arrow_with_hook:",
    "closed": ":ballot_box_with_check:",
}


def escape(text: str) -> str:
    """Text made safe for mrkdwn: `&`, `<` and `>` escaped, so `<!channel>` or links cannot be injected."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION), "verbatim": True}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, MAX_SECTION)}]}


def _plain(text: str, limit: int = MAX_LABEL) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def action_id(button: Button) -> str:
    """Unique within a message (Slack refuses duplicates): `crm:approve`, `crm:snooze:1h`."""
    return f"{ACTION_PREFIX}:{button.action}" + (f":{button.arg}" if button.arg else "")


def _elements(view: ProposalView) -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = []
    for button in view.buttons:
        if button.action == "snooze":
            elements.append(_snooze_menu(button))
            continue
        element: dict[str, Any] = {
            "type": "button",
            "action_id": action_id(button),
            "text": _plain(button.label),
            "value": button.data,
        }
        if button.style:
            element["style"] = button.style
        elements.append(element)
    return elements


def _snooze_menu(button: Button) -> dict[str, Any]:
    options = [
        {"text": _plain(label), "value": Button("snooze", label, button.proposal_id, arg=arg).data}
        for label, arg in SNOOZE_CHOICES
    ]
    return {
        "type": "static_select",
        "action_id": f"{ACTION_PREFIX}:snooze",
        "placeholder": _plain(button.label or "Snooze"),
        "options": options,
    }


def proposal_blocks(view: ProposalView) -> list[Block]:
    """A proposal: what happens and to whom, the customer, draft and rationale, the outcome, buttons."""
    blocks: list[Block] = [_section(f"*{escape(view.title)}*")]
    who = f"{view.customer_name} ({view.customer_id})" if view.customer_name else view.customer_id
    blocks.append(_context(f"Customer: {escape(who)} · #{escape(view.id)}"))
    if view.body:
        blocks.append(_section("\n".join(escape(line) for line in view.body)))
    cost = view.extra.get("cost")
    if cost:
        blocks.append(_context(f"Cost: {escape(str(cost))}"))
    if view.status:
        mark = _STATE_MARK.get(view.state, ":information_source:")
        blocks.append(_context(f"{mark} {escape(view.status)}"))
    elements = _elements(view)
    if elements:
        blocks.append({"type": "actions", "block_id": f"proposal:{view.id}", "elements": elements})
    return blocks


def proposal_message(view: ProposalView) -> dict[str, Any]:
    """`text` + `blocks` for chat.postMessage / chat.update of a proposal."""
    return {"text": fallback(view.lines()), "blocks": proposal_blocks(view)}


def fallback(lines: list[str] | tuple[str, ...]) -> str:
    """The plain `text` Slack shows in notifications and where blocks cannot be drawn."""
    return clip("\n".join(lines), MAX_FALLBACK) or "(empty)"


def reply_message(reply: Reply) -> dict[str, Any]:
    """A command's reply: its lines (a compact list one line each, with its button), then each proposal
    it carries with its buttons."""
    blocks: list[Block] = []
    listed = {item.text for item in reply.items}
    lines = [line for line in reply.lines if line not in listed]
    if lines:
        blocks.append(_section("\n".join(escape(line) for line in lines)))
    blocks.extend(_item_section(index, item) for index, item in enumerate(reply.items[: MAX_BLOCKS - 2]))
    shown = reply.proposals[:MAX_PROPOSALS_SHOWN]
    for view in shown:
        blocks.append({"type": "divider"})
        blocks.extend(proposal_blocks(view))
    if len(reply.proposals) > len(shown):
        blocks.append(_context(f"… and {len(reply.proposals) - len(shown)} more"))
    text_lines = list(reply.lines) + [view.title for view in reply.proposals]
    return {"text": fallback(text_lines), "blocks": blocks[:MAX_BLOCKS]}


def _item_section(index: int, item: Item) -> Block:
    """One line of a compact list with its button beside it (a tap runs `item.line`, as a pick does)."""
    block = _section(escape(item.text))
    block["accessory"] = {
        "type": "button",
        "action_id": f"{ACTION_PREFIX}_pick:{index}",
        "text": _plain(item.label),
        "value": clip(item.line, 2000),
    }
    return block


def lines_message(reply: Reply) -> dict[str, Any]:
    """Only a reply's lines (the proposal itself is refreshed in place elsewhere)."""
    lines = list(reply.lines) or ["Done."]
    return {"text": fallback(lines), "blocks": [_section("\n".join(escape(line) for line in lines))]}


def choice_message(lines: list[str], choices: list[tuple[str, str]]) -> dict[str, Any]:
    """Lines and one button per choice (label, value): several customers match, pick one."""
    elements = [
        {
            "type": "button",
            "action_id": f"{ACTION_PREFIX}_pick:{index}",
            "text": _plain(label),
            "value": clip(value, 2000),
        }
        for index, (label, value) in enumerate(choices[:25])
    ]
    blocks: list[Block] = [_section("\n".join(escape(line) for line in lines))]
    if elements:
        blocks.append({"type": "actions", "block_id": "pick", "elements": elements})
    return {"text": fallback(lines), "blocks": blocks}


def edit_modal(
    proposal_id: str, fields: tuple[EditableField, ...], metadata: dict[str, str]
) -> dict[str, Any]:
    """The Edit modal, prefilled with the editable fields; submitting approves the edited version."""
    blocks: list[Block] = []
    for field in fields:
        element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": FIELD_INPUT,
            "multiline": field.multiline,
            "max_length": MAX_INPUT,
        }
        if field.value:
            element["initial_value"] = field.value[:MAX_INPUT]
        blocks.append(
            {
                "type": "input",
                "block_id": f"field:{field.name}",
                "label": _plain(field.label, 2000),
                "element": element,
            }
        )
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": json.dumps({**metadata, "proposal_id": proposal_id}),
        "title": _plain("Edit and approve", MAX_MODAL_TITLE),
        "submit": _plain("Approve", MAX_MODAL_TITLE),
        "close": _plain("Cancel", MAX_MODAL_TITLE),
        "blocks": blocks,
    }


def reject_modal(proposal_id: str, metadata: dict[str, str]) -> dict[str, Any]:
    """The Reject modal: an optional reason, kept as a correction for the agent."""
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": json.dumps({**metadata, "proposal_id": proposal_id}),
        "title": _plain("Reject", MAX_MODAL_TITLE),
        "submit": _plain("Reject", MAX_MODAL_TITLE),
        "close": _plain("Cancel", MAX_MODAL_TITLE),
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": True,
                "label": _plain("Reason (optional; the agent learns from it)", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": MAX_INPUT,
                },
            }
        ],
    }


def submitted_fields(view_state: dict[str, Any]) -> dict[str, str]:
    """The values of an Edit modal's submission, by field name."""
    values: dict[str, str] = {}
    for block_id, inputs in (view_state.get("values") or {}).items():
        if not block_id.startswith("field:"):
            continue
        value = (inputs.get(FIELD_INPUT) or {}).get("value")
        values[block_id.removeprefix("field:")] = value or ""
    return values


def submitted_reason(view_state: dict[str, Any]) -> str | None:
    """The reason typed into the Reject modal, or None when left empty."""
    value = ((view_state.get("values") or {}).get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}
    text = (value.get("value") or "").strip()
    return text or None
