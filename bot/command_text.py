"""Typed command lines (terminal, Telegram `/commands`, Slack slash commands) and the texts commands show."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from jobs.render_proposal import stamp
from store import events as ev

HELP = (
    "pending — proposals waiting for you, one line each · show <id> — the whole card",
    "<id> is a proposal's number (12 or #12) or a unique piece of its id",
    "approve <id> · reject <id> [reason] · snooze <id> <30m|2h|1d|tomorrow|ISO time>",
    "edit <id> — what can be changed · edit <id> <field> <new value>",
    "why <id> — sources, rules and costs · undo <id> · retry <id>",
    "resend <id> · keep <id> — answer “may have been sent”",
    "intent <id> <intent> — what the message really was (spam, question, complaint…); the triage learns",
    "customer <name|email|id> [as of YYYY-MM-DD]",
    "note <customer> <text> · note <customer name>: <text>",
    "digest — today's digest now",
    "audit [customer] [days] — who decided what, when, and what it cost (default 7 days)",
    "merge <customer> <customer> — one customer from two (the older keeps the record) · unmerge [customer]",
    "distinct <id> — a proposed merge is not the same customer",
    "pause [agent|all] · resume [agent|all] — all agents when none is named",
    "help",
)

CUSTOMER_USAGE = "Usage: customer <name|email|id> [as of YYYY-MM-DD]"
NOTE_USAGE = "Usage: note <customer> <text>, or note <customer name>: <text>"
# The longest customer query read from a line: longer is no customer name, and bounds the lookup.
MAX_QUERY = 200
# "acme as of 2026-10-01" (the chat form) or "acme --as-of 2026-10-01" (the CLI's form), the last one.
_AS_OF = re.compile(r"^(?P<query>.*)(?:^|\s)(?:--as-of|as\s+of)(?:\s+(?P<day>.*?))?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# "snooze … tomorrow": the start of the next working morning, in the operator's time zone.
TOMORROW_AT = time(9, 0)
# A snooze is a nudge to look again, not a way to park something for ever.
MAX_SNOOZE = timedelta(days=90)


def parse_until(value: datetime | str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """A snooze target: an aware datetime, a duration ("30m", "2h", "1d"), "tomorrow" (09:00 in tz)
    or ISO-8601 (UTC if naive)."""
    if isinstance(value, datetime):
        until = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        match = _DURATION.match(value)
        if value.strip().lower() == "tomorrow":
            day = now.astimezone(tz).date() + timedelta(days=1)
            until = datetime.combine(day, TOMORROW_AT, tzinfo=tz).astimezone(UTC)
        elif match:
            until = now + timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
        else:
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    f"Cannot read {value[:40]!r} as a time; try 30m, 2h, 1d, tomorrow or 2025-01-31T09:00"
                ) from None
            until = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if until - now > MAX_SNOOZE:
        raise ValueError("Snooze for at most 90 days.")
    return until


def classified_line(note: str) -> str:
    """How the triage read the message, from its message.classified record, in one line."""
    try:
        found = ev.MessageClassified.model_validate_json(note)
    except ValueError:
        return f"Classified: {note}"
    parts = [f"Classified: {found.intent} ({found.confidence:.0%})", f"by {found.method}"]
    if found.model_version:
        parts[-1] += f" {found.model_version}"
    if found.language:
        parts.append(f"language {found.language}")
    if found.injection:
        parts.append("⚠ tries to instruct the agent")
    if found.escalation_rules:
        parts.append("escalated by " + ", ".join(found.escalation_rules))
    return " · ".join(parts)


# How much of a memory "Why?" quotes.
MEMORY_QUOTE_CHARS = 160


def memory_line(kind: str, at: datetime | None, text: str, event_id: str, event_type: str) -> str:
    """One memory a proposal used: what kind, when, a snippet, and the event it came from."""
    snippet = " ".join(text.split())
    if len(snippet) > MEMORY_QUOTE_CHARS:
        snippet = snippet[: MEMORY_QUOTE_CHARS - 1] + "…"
    day = f", {at:%Y-%m-%d}" if at else ""
    return f"{kind}{day}: “{snippet}” — from event {event_id} ({event_type})"


def why_lines(
    row: dict[str, Any],
    trail: list[ev.Event],
    trigger: ev.Event | None,
    memories: dict[str, str] | None = None,
) -> list[str]:
    """Sources (memories quoted from `memories`, by source id), rules, costs and the decision trail."""
    proposed = row["proposed"]
    cost = proposed.get("cost") or {}
    lines = [f"{row['kind']} proposed by {row['agent']} at {stamp(row['created_at'])} ({row['id']})"]
    lines.append(f"Rationale: {proposed.get('rationale', '')}")
    lines.append(f"Confidence: {proposed.get('confidence', 0):.0%}")
    if trigger is not None:
        from store.slice import summarise

        lines.append(f"Prompted by: {summarise(trigger)} ({trigger.id})")
    for source in proposed.get("sources") or []:
        if source.get("id") == "message.classified" and source.get("note"):
            lines.append(classified_line(source["note"]))
            continue
        if source.get("kind") == "memory" and memories and source["id"] in memories:
            lines.append(f"Memory used: {memories[source['id']]}")
            continue
        note = f" — {source['note']}" if source.get("note") else ""
        lines.append(f"Source: {source['kind']} {source['id']}{note}")
    lines.append(f"Policy: {row['verdict']}" + (f" ({', '.join(row['rules'])})" if row["rules"] else ""))
    model = cost.get("model") or "no model (template)"
    tokens = int(cost.get("prompt_tokens") or 0) + int(cost.get("completion_tokens") or 0)
    lines.append(f"Cost: ${float(cost.get('usd') or 0):.4f} · {model} · {tokens} tokens")
    for event in trail:
        if event.type in {"proposal.message_posted", "proposal.recorded"}:
            continue
        lines.append(f"{stamp(event.occurred_at)} {event.type} by {event.actor}")
    return lines


def split_as_of(rest: str) -> tuple[str, date | str | None]:
    """(query, as_of date | error text | None) from "acme as of 2024-05-01" or "acme --as-of 2024-05-01"."""
    found = _AS_OF.match(rest)
    if found is None:
        return rest.strip(), None
    query, when = found["query"].strip(), (found["day"] or "").strip()
    try:
        return query, date.fromisoformat(when)
    except ValueError:
        return query, f"“as of” takes a date as YYYY-MM-DD (e.g. 2026-10-01), not {when[:20]!r}"


def day_of(as_of: date | datetime) -> str:
    """The day a past view is for, as the grammar writes it (YYYY-MM-DD)."""
    return (as_of.date() if isinstance(as_of, datetime) else as_of).isoformat()
