"""Merging and unmerging customers by hand: `/merge A B` and `/unmerge [customer]`.

A typed merge is a `merge_customers` proposal the operator approves as they type it, so it runs through
the executor like any other and its card keeps an Undo; the older customer (ids sort by creation)
absorbs the newer one, as identity resolution does. An unmerge is one `customer.unmerged` event.
"""

from __future__ import annotations

import re
from typing import Any

from agents.proposal import Proposal
from bot import command_text
from bot.command_base import CommandBase
from bot.command_chat import label_of
from bot.replies import Actor, Choice, Reply, fail, reply
from store import events as ev
from store import lifecycle as lc
from store.slice import find_customers, find_merged

MERGE_USAGE = "Usage: merge <customer> <customer> — names with spaces: merge Acme Corp, Acme GmbH"
# Between two customers of `merge`: a comma, a plus or the word "and" (then names may hold spaces).
_BETWEEN = re.compile(r"\s*(?:,|\+|\s+and\s+)\s*", re.IGNORECASE)
# The agent a typed merge is recorded as proposed by.
TYPED_BY = "operator"


class MergeCommands(CommandBase):
    """Customers put together and taken apart by the operator."""

    def merge_line(self, actor: Actor, rest: str) -> Reply:
        """`merge A B`, `merge Acme Corp, Acme GmbH` or `merge Acme Corp and Acme GmbH`."""
        parts = [p for p in _BETWEEN.split(rest.strip()) if p.strip()]
        if len(parts) == 1:
            parts = parts[0].split()
        if len(parts) != 2:
            return fail("invalid", MERGE_USAGE)
        return self.merge(actor, parts[0][: command_text.MAX_QUERY], parts[1][: command_text.MAX_QUERY])

    def merge(self, actor: Actor, first: str, second: str) -> Reply:
        """Merge the two customers the queries name (one each); the older keeps the record."""
        refused = self._refuse(actor, "merge", None, kind="merge_customers")
        if refused:
            return refused
        found = []
        with self.store.engine.connect() as connection:
            for query in (first, second):
                matches = find_customers(connection, query)
                if len(matches) != 1:
                    return _not_one(query, matches)
                found.append(matches[0])
        a, b = sorted(found, key=lambda c: c["id"])
        if a["id"] == b["id"]:
            return fail("invalid", f"{first!r} and {second!r} are already one customer ({label_of(a)}).")
        proposal = Proposal(
            agent=TYPED_BY,
            kind="merge_customers",
            customer_id=a["id"],
            params={"into": a["id"], "merged": b["id"], "reason": f"merged by {actor.name}"},
            rationale=f"{actor.name} typed merge {first} {second}"[:500],
            confidence=1.0,
        )
        pid, _ = lc.record_proposal(
            self.store,
            proposal.model_dump(mode="json"),
            verdict="approval",
            rules=[],
            key=f"merge:{actor.key}:{ev.new_id()}",
        )
        decided = self._decide(actor, pid, "approved")
        if not decided.ok:
            return decided
        number = next((view.number for view in decided.proposals if view.id == pid), None)
        line = f"Merging {label_of(b)} into {label_of(a)}. Undo: undo {number or pid}"
        return reply(line, proposals=decided.proposals, proposal_id=pid)

    def unmerge(self, actor: Actor, query: str) -> Reply:
        """Take a merged customer out again; without a query, the merged customers to pick from."""
        refused = self._refuse(actor, "unmerge", None, kind="merge_customers")
        if refused:
            return refused
        query = query.strip()[: command_text.MAX_QUERY]
        with self.store.engine.connect() as connection:
            found = find_merged(connection, query or None)
            into = {c["id"]: lc.customer_name(connection, c["merged_into"]) for c in found}
        if not found:
            return fail(
                "not_found", f"No merged customer matches {query!r}." if query else "Nothing is merged."
            )
        if len(found) > 1 or not query:
            lines = [
                f"{label_of(c)} ({c['id']}) — part of {into[c['id']] or c['merged_into']}" for c in found
            ]
            picks = tuple(Choice(label_of(c), f"unmerge {c['id']}", c["id"]) for c in found)
            return reply("Unmerge which one? (unmerge <id>)", *lines, choices=picks)
        customer = found[0]
        self.store.append(
            ev.NewEvent(
                type="customer.unmerged",
                payload=ev.CustomerUnmerged(merged=customer["id"], reason=f"unmerged by {actor.name}"),
                stream=customer["merged_into"],
                idempotency_key=f"unmerge:{customer['id']}:{customer['position']}",
                actor=actor.key,
                source=actor.surface,
            ),
            dispatch=False,
        )
        survivor = into[customer["id"]] or customer["merged_into"]
        return reply(f"Unmerged: {label_of(customer)} is a customer of its own again, apart from {survivor}.")


def _not_one(query: str, matches: list[dict[str, Any]]) -> Reply:
    if not matches:
        return fail("not_found", f"No customer matches {query!r}. {MERGE_USAGE}")
    names = ", ".join(f"{label_of(c)} ({c['id']})" for c in matches[:5])
    return fail("invalid", f"{len(matches)} customers match {query!r}: {names}; name one by its id.")
