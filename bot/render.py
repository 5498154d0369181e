"""Channel-agnostic renderings: plain data in, short text a person reads on a phone out."""

from __future__ import annotations

from datetime import date, datetime

from store.slice import ContextSlice


def money(cents: int, currency: str = "usd") -> str:
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency.lower(), currency.upper() + " ")
    return f"{symbol}{cents / 100:,.2f}"


def when(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def slice_text(s: ContextSlice) -> list[str]:
    """The context slice as a few lines: who, stage and value, money owed, last touches."""
    who = s.name or s.id
    lines = [f"{who}" + (f" · {s.company}" if s.company and s.company != s.name else "")]
    if s.as_of:
        lines.append(f"as of {when(s.as_of)}")
    lines.append(
        f"stage {s.stage} · MRR {money(s.mrr_cents)} · lifetime {money(s.lifetime_value_cents)}"
        f" · renews {when(s.renewal_date)}"
    )
    if s.contacts:
        lines.append("contacts: " + ", ".join(f"{c['kind']} {c['value']}" for c in s.contacts))
    if s.open_invoices:
        owed = ", ".join(
            f"{i['id']} {money(i['amount_cents'], i['currency'])} {i['status']} (due {when(i['due_date'])})"
            for i in s.open_invoices
        )
        lines.append(f"open invoices: {owed}")
    else:
        lines.append("open invoices: none")
    if s.open_tasks:
        lines.append("open tasks: " + "; ".join(task["title"] for task in s.open_tasks[:3]))
    if s.recent:
        lines.append("last touches:")
        lines.extend(f"  {when(touch.occurred_at)} {touch.summary}" for touch in s.recent[:3])
    if s.notes:
        lines.append(f"notes: {s.notes}")
    if s.possible_duplicates:
        lines.append(
            "possible duplicates: "
            + ", ".join(f"{d['other_id']} ({d['reason']})" for d in s.possible_duplicates)
        )
    if s.merged_ids:
        lines.append("merged records: " + ", ".join(s.merged_ids))
    return lines
