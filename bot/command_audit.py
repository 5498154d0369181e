"""`/audit [customer] [days]`: who decided what, when, and what it cost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import command_text
from bot.command_base import CommandBase
from bot.replies import Actor, Reply, fail, reply
from jobs.render_proposal import stamp, title_of
from store import lifecycle as lc
from store.audit import AUDIT_LIMIT, decisions_since, refusals_since
from store.slice import find_customers, group_of

AUDIT_USAGE = "Usage: audit [customer] [days] — e.g. audit, audit 30, audit acme 7"
DEFAULT_AUDIT_DAYS = 7
# Further back than this the audit is the log's job (`crm replay`), not a chat answer's.
MAX_AUDIT_DAYS = 366

_DECISION_WORDS = {
    "approved": "approved",
    "edited": "edited and approved",
    "rejected": "rejected",
    "auto": "approved automatically",
    "expired": "expired",
}


class AuditCommands(CommandBase):
    """The decision audit list."""

    def audit_line(self, actor: Actor, rest: str) -> Reply:
        """`audit`, `audit 30`, `audit acme`, `audit acme corp 14`."""
        words = rest.split()
        days = DEFAULT_AUDIT_DAYS
        if words and words[-1].isdigit():
            days = int(words.pop())
            if not 1 <= days <= MAX_AUDIT_DAYS:
                return fail("invalid", f"Days must be 1 to {MAX_AUDIT_DAYS}. {AUDIT_USAGE}")
        elif words and words[-1].lstrip("-").isdigit():
            return fail("invalid", f"Days must be 1 to {MAX_AUDIT_DAYS}. {AUDIT_USAGE}")
        return self.audit(actor, " ".join(words)[: command_text.MAX_QUERY] or None, days)

    def audit(self, actor: Actor, query: str | None, days: int) -> Reply:
        """Decisions of the last `days` days (on one customer's proposals when `query` names one)."""
        refused = self._refuse(actor, "read the audit", None)
        if refused:
            return refused
        since = self.clock() - timedelta(days=days)
        with self.store.engine.connect() as connection:
            ids = None
            whose = ""
            if query:
                found = find_customers(connection, query)
                if len(found) != 1:
                    many = f"{len(found)} customers match" if found else "No customer matches"
                    return fail("not_found" if not found else "invalid", f"{many} {query!r}. {AUDIT_USAGE}")
                ids = group_of(connection, found[0]["id"])
                whose = f" on {found[0]['name'] or found[0]['id']}"
            rows = decisions_since(connection, since, ids)
            refusals = refusals_since(connection, since, ids)
            names = {cid: lc.customer_name(connection, cid) for cid in {r["customer_id"] for r in rows}}
        total = sum(float(r["cost_usd"] or 0) for r in rows)
        head = f"{len(rows)} decision(s){whose} in the last {days} day(s) · cost ${total:.4f}" + (
            f" · {len(refusals)} refused attempt(s)" if refusals else ""
        )
        lines = [head, *(_decision_line(r, names.get(r["customer_id"])) for r in rows[:AUDIT_LIMIT])]
        if len(rows) > AUDIT_LIMIT:
            lines.append(f"… and {len(rows) - AUDIT_LIMIT} more; narrow it with a customer or fewer days")
        for event in refusals:
            p = event.payload
            who = getattr(p, "by_name", None) or getattr(p, "by", "?")
            lines.append(
                f"{stamp(event.recorded_at)} · REFUSED {who}: {getattr(p, 'action', '?')} "
                f"({getattr(p, 'reason', '')}) · {event.stream}"
            )
        return reply(*lines)


def _decision_line(row: dict[str, Any], customer_name: str | None) -> str:
    """One decision: when, what, by whom (on which surface), how it ended, what it cost."""
    decision = row["decision"] or row["state"]
    word = _DECISION_WORDS.get(decision, decision)
    who = row["decided_by_name"] or row["decided_by"] or "the clock"
    if decision == "auto":
        who = "policy"
    where = f" ({row['surface']})" if row["surface"] else ""
    cost = float(row["cost_usd"] or 0)
    return (
        f"{stamp(row['decided_at'])} · {word} by {who}{where} · {title_of(row, customer_name)} "
        f"→ {row['state']} · ${cost:.4f} · {row['id']}"
    )
