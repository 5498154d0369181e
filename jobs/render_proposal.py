"""A proposal's projection row as a `ProposalView`: title, draft, outcome line and the buttons it allows."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from jobs.views import DEFAULT_SNOOZE, Button, EditableField, ProposalView

# How much of a draft a chat message shows; the whole text is in `why` and in the edit form.
DRAFT_PREVIEW_CHARS = 700

# Params that repeat the draft (agents put the text in both): edited through the draft's fields.
DRAFT_MIRRORS = {"subject": "subject", "body": "body", "text": "body"}
# Params that are plumbing, not something a person should retype.
# Params for the machine, not the operator: threading headers, keys, and bookkeeping the card says in
# words already (an escalation's reason names its rules; a note's verdict and sources are in Why?).
_HIDDEN_PARAMS = frozenset(
    {
        "in_reply_to",
        "references",
        "json",
        "window_key",
        "surface",
        "chat_id",
        "rules",
        "lead_verdict",
        "summary_of",
        "template",  # the lead agent's verdict, which chose the draft
        "dunning_key",  # how the billing monitor knows a reminder step was proposed: never edited
    }
)

_LABELS = {
    "send_email": "Send email",
    "send_chat_reply": "Reply in chat",
    "post_webhook": "Call webhook",
    "create_task": "Create task",
    "add_note": "Add note",
    "change_stage": "Change stage",
    "escalate": "Escalate",
    "merge_customers": "Merge customers",
    "offer_discount": "Offer discount",
    "issue_refund": "Issue refund",
}


def stamp(value: datetime | None) -> str:
    """A time as a person reads it in chat."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def payload_of(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(params, draft) as they will be executed: the approved version if there is one, else as proposed."""
    approved = row.get("approved")
    if approved:
        return dict(approved.get("params") or {}), approved.get("draft")
    proposed = row["proposed"]
    return dict(proposed.get("params") or {}), proposed.get("draft")


def who(row: dict[str, Any]) -> str:
    """Who decided, with the surface."""
    name = row.get("decided_by_name") or row.get("decided_by") or "?"
    return f"{name} ({row['surface']})" if row.get("surface") else name


def handle_of(row: Mapping[str, Any]) -> str:
    """What a person types to name the proposal: its number, else its id."""
    return str(row["number"]) if row.get("number") is not None else str(row["id"])


def tag_of(row: Mapping[str, Any]) -> str:
    """The proposal as a line shows it: `#7`, else its id."""
    return f"#{row['number']}" if row.get("number") is not None else str(row["id"])


def named(row: Mapping[str, Any], customer_name: str | None) -> str:
    """A proposal in a notice: its number, what it does and for whom (`#7 Send email for Ada Lovelace`)."""
    return f"{tag_of(row)} {_LABELS.get(row['kind'], row['kind'])} for {customer_name or row['customer_id']}"


def title_of(row: dict[str, Any], customer_name: str | None) -> str:
    """One line: what, for whom, by which agent."""
    params, _ = payload_of(row)
    label = _LABELS.get(row["kind"], row["kind"])
    target = customer_name or row["customer_id"]
    detail = ""
    if row["kind"] == "send_email" and params.get("to"):
        detail = f" to {params['to']}"
    elif row["kind"] == "change_stage" and params.get("stage"):
        detail = f" → {params['stage']}"
    elif row["kind"] == "create_task" and params.get("title"):
        detail = f": {params['title']}"
    number = f"#{row['number']} " if row.get("number") is not None else ""
    return f"{number}{label}{detail} · {target} · proposed by {row['agent']}"


def body_of(row: dict[str, Any]) -> list[str]:
    """The draft (or the params), the rationale, and the fallback notice."""
    params, draft = payload_of(row)
    lines: list[str] = []
    if draft:
        if draft.get("subject"):
            lines.append(f"Subject: {draft['subject']}")
        text = draft.get("body") or ""
        lines.append(text if len(text) <= DRAFT_PREVIEW_CHARS else text[:DRAFT_PREVIEW_CHARS] + "…")
    shown = {k: v for k, v in params.items() if k not in _HIDDEN_PARAMS and k != "to"}
    if shown and row["kind"] != "send_email":
        lines.append(", ".join(f"{k}: {_plain(v)}" for k, v in shown.items()))
    proposed = row["proposed"]
    lines.append(f"Why: {proposed.get('rationale', '')} (confidence {proposed.get('confidence', 0):.0%})")
    cost = proposed.get("cost") or {}
    if proposed.get("drafted_from_template"):
        made = "Drafted from a template" if draft else "Proposed by the agent's rules"
        lines.append(f"{made} (no model) · cost $0.00")
    else:
        model, usd = cost.get("model") or "the model", float(cost.get("usd") or 0)
        lines.append(f"Drafted by {model} · cost ${usd:.4f}")
    if row["state"] == "pending" and row["not_before"]:
        lines.append(f"If approved, sent at {stamp(row['not_before'])} (held by policy: see Why?).")
    if row["decision"] == "edited":
        lines.append("Edited by the operator before approval.")
    return lines


def _plain(value: Any) -> str:
    """A param value as a person reads it: lists joined, not Python's repr."""
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def status_of(row: dict[str, Any]) -> str | None:
    """The outcome line once something has happened."""
    state = row["state"]
    decided = f"{'Edited and approved' if row['decision'] == 'edited' else 'Approved'} by {who(row)} at " + (
        stamp(row["decided_at"])
    )
    if row["decision"] == "auto":
        decided = f"Approved automatically by policy at {stamp(row['decided_at'])}"
    texts = {
        "pending": None,
        "snoozed": f"Snoozed until {stamp(row['snoozed_until'])}",
        "expired": f"Expired at {stamp(row['decided_at'])} without a decision — nothing was sent.",
        "withdrawn": f"Withdrawn at {stamp(row['decided_at'])}: {row['reason'] or 'answered outside'} "
        "— nothing was sent.",
        "rejected": f"Rejected by {who(row)} at {stamp(row['decided_at'])}"
        + (f": {row['reason']}" if row["reason"] else ""),
        "refused": f"Refused by policy: {row['reason'] or ', '.join(row['rules'])}",
        "approved": decided
        + (
            f" — sending at {stamp(row['not_before'])}; Undo until then" if row["not_before"] else " — queued"
        ),
        "executing": decided + " — in progress…",
        "executed": decided
        + f", done at {stamp(row['executed_at'])}"
        + (f" (ref {row['result_ref']})" if row["result_ref"] else ""),
        "failed": decided + f" — FAILED: {row['error']}",
        "uncertain": decided + f" — ⚠ MAY HAVE BEEN SENT: {row['error']}. Resend, or leave it?",
        "undone": (
            "Cancelled inside the undo window — nothing was sent."
            if row["phase"] == "cancelled"
            else f"Undone at {stamp(row['finished_at'])}."
        ),
        "closed": decided
        + (
            f" — FAILED: {row['error']}; an edited copy was sent in its place."
            if row["phase"] == "superseded"
            else " — may have been sent once; not resent (operator's choice)."
        ),
    }
    return texts.get(state, state)


def buttons_of(row: dict[str, Any]) -> tuple[Button, ...]:
    """The buttons a proposal in this state offers."""
    return (*_state_buttons(row), *_intent_buttons(row))


def _state_buttons(row: dict[str, Any]) -> tuple[Button, ...]:
    pid, state = row["id"], row["state"]
    if state == "pending" and row["kind"] == "merge_customers":
        # A merge is a yes/no about who is who: nothing to edit, and "no" dismisses the pair.
        return (
            Button("approve", "Merge", pid, style="primary"),
            Button("distinct", "Not the same", pid, style="danger"),
            Button("snooze", f"Snooze {DEFAULT_SNOOZE}", pid, arg=DEFAULT_SNOOZE),
            Button("why", "Why?", pid),
        )
    if state == "pending":
        buttons = [Button("approve", "Approve", pid, style="primary")]
        if editable_fields(row):
            buttons.append(Button("edit", "Edit", pid))
        buttons += [
            Button("reject", "Reject", pid, style="danger"),
            Button("snooze", f"Snooze {DEFAULT_SNOOZE}", pid, arg=DEFAULT_SNOOZE),
            Button("why", "Why?", pid),
        ]
        return tuple(buttons)
    if state == "approved" and row["not_before"]:
        return (Button("undo", "Undo", pid, style="danger"),)
    if state == "executed" and row["compensation"]:
        return (Button("undo", "Undo", pid, style="danger"),)
    if state == "failed" and row["retryable"]:
        return (Button("retry", "Retry", pid, style="primary"), Button("why", "Why?", pid))
    if state == "uncertain":
        return (
            Button("resend", "Resend", pid, style="danger"),
            Button("keep", "Don't resend", pid, style="primary"),
        )
    return ()


def _intent_buttons(row: dict[str, Any]) -> tuple[Button, ...]:
    """One tap teaches the triage this deployment's spam: "Spam" on a proposal still waiting, "Not spam"
    on a message the triage filed as spam (its note ran without a tap)."""
    classified = classified_intent(row)
    if classified is None:
        return ()
    if classified == "spam" and row["state"] in {"pending", "approved", "executed"}:
        return (Button("intent", "Not spam", row["id"], arg=NOT_SPAM),)
    if row["state"] == "pending":
        return (
            Button("intent", "Spam", row["id"], arg="spam"),
            Button("intent", "Wrong intent?", row["id"], arg=ASK_INTENT),
        )
    return ()


def intent_menu(view: ProposalView, intents: tuple[str, ...], current: str | None) -> ProposalView:
    """The proposal with one button per other intent in place of its own: "Wrong intent → …"."""
    menu = tuple(Button("intent", name, view.id, arg=name) for name in intents if name != current)
    return replace(view, buttons=menu)


# The "Wrong intent?" button's argument: it asks which intent it was (intent_menu) instead of setting one.
ASK_INTENT = "?"
# What "Not spam" corrects a message to: the intent a message nobody has read more closely gets.
NOT_SPAM = "question"


def classified_intent(row: dict[str, Any]) -> str | None:
    """The intent the triage read in the message behind a proposal (None for other agents' proposals)."""
    for source in (row.get("proposed") or {}).get("sources") or ():
        if source.get("kind") == "rule" and source.get("id") == "message.classified" and source.get("note"):
            try:
                intent = json.loads(source["note"]).get("intent")
            except ValueError:
                return None
            return str(intent) if intent else None
    return None


def editable_fields(row: dict[str, Any]) -> tuple[EditableField, ...]:
    """What the operator may change: the draft's subject and body, and the plain params."""
    params, draft = payload_of(row)
    fields: list[EditableField] = []
    for name, value in params.items():
        if name in _HIDDEN_PARAMS or isinstance(value, dict | list) or (draft and name in DRAFT_MIRRORS):
            continue
        fields.append(
            EditableField(name, name.replace("_", " ").capitalize(), "" if value is None else str(value))
        )
    if draft:
        if draft.get("subject") is not None:
            fields.append(EditableField("subject", "Subject", draft["subject"]))
        fields.append(EditableField("body", "Text", draft.get("body") or "", multiline=True))
    return tuple(fields)


# A compact line shows this many words of the draft (or of what the proposal does).
FIRST_WORDS = 8
_GREETING_LINE = re.compile(
    r"^(hi|hello|hey|dear|hallo|hola|bonjour|salut)\b[^\n]{0,40}[,!]?$", re.IGNORECASE
)


def first_words(row: dict[str, Any], count: int = FIRST_WORDS) -> str:
    """The first words of what a proposal would say or do (a greeting line skipped), for one-line lists."""
    params, draft = payload_of(row)
    text = ""
    if draft:
        lines = [line.strip() for line in str(draft.get("body") or "").splitlines() if line.strip()]
        if len(lines) > 1 and _GREETING_LINE.match(lines[0]):
            lines = lines[1:]
        text = " ".join(lines) or str(draft.get("subject") or "")
    if not text:
        shown = {
            k: v for k, v in params.items() if k not in _HIDDEN_PARAMS and not isinstance(v, dict | list)
        }
        text = " ".join(str(v) for v in shown.values())
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")


def age(since: datetime, now: datetime) -> str:
    """How long ago, in the largest unit that fits: 45s, 12m, 3h, 2d."""
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def compact_line(row: dict[str, Any], customer_name: str | None, now: datetime) -> str:
    """One proposal on one line: handle, kind, customer, first words, age (`#12 send_email · Acme · …`)."""
    words = first_words(row)
    return " · ".join(
        part
        for part in (
            tag_of(row),
            row["kind"],
            customer_name or row["customer_id"],
            f"“{words}”" if words else "",
            age(row["created_at"], now),
        )
        if part
    )


def view_of(row: dict[str, Any], customer_name: str | None) -> ProposalView:
    """The whole view of one proposal."""
    return ProposalView(
        id=row["id"],
        state=row["state"],
        kind=row["kind"],
        agent=row["agent"],
        customer_id=row["customer_id"],
        customer_name=customer_name,
        title=title_of(row, customer_name),
        body=tuple(body_of(row)),
        status=status_of(row),
        buttons=buttons_of(row),
        updated_at=row["updated_at"],
        version=int(row.get("position") or 0),
        number=row.get("number"),
    )
