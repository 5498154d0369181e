"""The read and housekeeping commands: why, customer, pending, note, pause/resume, help."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from bot import command_text
from bot.command_base import CommandBase
from bot.command_chat import label_of
from bot.render import slice_text
from bot.replies import Actor, Choice, Item, Reply, fail, reply
from jobs.render_proposal import compact_line, view_of
from store import events as ev
from store import lifecycle as lc
from store.memory.records import event_id_of
from store.slice import build_slice, closest_names, find_customers, summarise

log = logging.getLogger(__name__)

# How much of the memory summary the context slice shows: a glance, not the history.
SUMMARY_CHARS = 300


# `/pending` lists this many proposals, one line each (a phone screen or two), oldest first.
PENDING_LIST_LIMIT = 25

# Resume counts the waiting signals up to this many (all of them are handled either way).
CATCH_UP_COUNT_LIMIT = 1_000


class ReadCommands(CommandBase):
    """Commands that read, or that change nothing about a proposal."""

    # ---- reads -----------------------------------------------------------------------------------
    def why(self, actor: Actor, proposal_id: str) -> Reply:
        refused = self._refuse(actor, "see why", proposal_id)
        if refused:
            return refused
        with self.store.engine.connect() as connection:
            row = lc.find_proposal(connection, proposal_id)
            if row is None:
                return self._missing(proposal_id)
            trail = lc.proposal_events(connection, row["id"])
        trigger = self.store.get(row["event_id"]) if row["event_id"] else None
        memories = self._memories_used(row)
        return reply(
            *command_text.why_lines(row, trail, trigger, memories),
            proposals=self._views(row["id"]),
            proposal_id=row["id"],
        )

    def _memories_used(self, row: dict[str, Any]) -> dict[str, str]:
        """Memory source id → "kind, date: “snippet” — from event id (type)", from the memory, else from
        the log event it was written for (the memory was archived, forgotten or is not wired here)."""
        ids = [s["id"] for s in row["proposed"].get("sources") or [] if s.get("kind") == "memory"]
        if not ids:
            return {}
        found: dict[str, str] = {}
        if self.memory is not None:
            try:
                memory = self.memory()
                for record in [*memory.get(ids), *memory.get(ids, archived=True)]:
                    found[record.id] = command_text.memory_line(
                        record.kind, record.occurred_at, record.text, record.event_id, record.event_type
                    )
            except Exception:  # Why? still answers from the log
                log.exception("memory lookup for Why? of %s failed", row["id"])
        for memory_id in ids:
            if memory_id in found:
                continue
            event = self.store.get(event_id_of(memory_id))
            if event is None:
                found[memory_id] = f"memory {memory_id} (its event is no longer in the log)"
                continue
            text = str(getattr(event.payload, "text", None) or summarise(event))
            found[memory_id] = command_text.memory_line(
                "event", event.occurred_at, text, event.id, event.type
            )
        return found

    def customer(self, actor: Actor, query: str, as_of: date | datetime | None) -> Reply:
        refused = self._refuse(actor, "look up customers", None)
        if refused:
            return refused
        with self.store.engine.connect() as connection:
            found = find_customers(connection, query)
            if not found:
                near = closest_names(connection, query)
                hint = f" Did you mean {', '.join(near)}?" if near else ""
                return fail("not_found", f"No customer matches {query!r}.{hint}")
            if len(found) > 1:
                names = [f"{c['name'] or c['id']} ({c['id']})" for c in found]
                day = f" as of {command_text.day_of(as_of)}" if as_of is not None else ""
                picks = tuple(Choice(label_of(c), f"customer {c['id']}{day}", c["id"]) for c in found)
                return reply(f"{len(found)} customers match {query!r}:", *names, choices=picks)
            picture = build_slice(connection, found[0]["id"], as_of)
            if picture is None:
                return fail("not_found", f"{query!r} did not exist yet on {as_of}.")
            if as_of is not None:  # the past: no live proposals or memory
                return reply(*slice_text(picture))
            rows = lc.open_for(connection, [picture.id, *picture.merged_ids])
            views = tuple(view_of(r, picture.name) for r in rows)
        summary = self._memory_summary([picture.id, *picture.merged_ids])
        lines = slice_text(picture) + ([f"memory: {summary}"] if summary else [])
        if views:
            lines.append(f"open proposals: {len(views)}")
        return reply(*lines, proposals=views)

    def _memory_summary(self, customer_ids: list[str]) -> str | None:
        """The newest memory roll-up of the customer, if memory is wired and has one."""
        if self.memory is None:
            return None
        try:
            from store.memory.recall import latest_summary

            found = latest_summary(self.memory(), customer_ids)
        except Exception:  # memory is a help here, never a reason to fail the lookup
            log.exception("memory summary unavailable for %s", customer_ids[0])
            return None
        if found is None:
            return None
        text = " ".join(found.text.split())
        return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "…"

    def pending(self, actor: Actor) -> Reply:
        refused = self._refuse(actor, "list proposals", None)
        if refused:
            return refused
        now = self.clock()
        with self.store.engine.connect() as connection:
            total = lc.count_in_state(connection, "pending")
            rows = lc.in_state(connection, "pending", limit=PENDING_LIST_LIMIT)
            snoozed = lc.count_in_state(connection, "snoozed")
            items = tuple(
                Item(
                    compact_line(r, lc.customer_name(connection, r["customer_id"]), now),
                    f"Show #{r['number'] or r['id']}",
                    f"show {r['number'] or r['id']}",
                )
                for r in rows
            )
        head = f"{total} waiting for a decision" + (f", {snoozed} snoozed" if snoozed else "") + "."
        lines = [head, *(item.text for item in items)]
        if total > len(items):
            lines.append(f"… and {total - len(items)} more, oldest first above.")
        if items:
            lines.append(
                "`show <number>` for the whole card; `approve <number>`, `reject <number> [reason]`."
            )
        return reply(*lines, items=items)

    def show(self, actor: Actor, proposal_id: str) -> Reply:
        """One proposal's whole card, with its buttons."""
        refused = self._refuse(actor, "see proposals", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        return reply(proposals=self._views(row["id"]), proposal_id=row["id"])

    def digest(self, actor: Actor) -> Reply:
        refused = self._refuse(actor, "read the digest", None)
        if refused:
            return refused
        from jobs.digest import prepare

        settings = self.settings
        built = prepare(self.store, self.clock(), settings.timezone, settings.crm_data_dir / "charts")
        return reply(*built.lines(), proposals=tuple(built.pending_views), image=built.chart)

    def note_line(self, actor: Actor, text: str) -> Reply:
        """`note acme called`, or `note Acme Corp: called` when the words before the colon name a customer."""
        first, _, rest = text.strip().partition(" ")
        before, colon, after = text.partition(":")
        query, note = first.rstrip(":"), rest
        # "Acme Corp: …" names a customer with a space; "acme re: pricing" does not, so look it up.
        if colon and before.strip() and after.strip():
            with self.store.engine.connect() as connection:
                if find_customers(connection, before.strip()[: command_text.MAX_QUERY]):
                    query, note = before, after
        if not query.strip() or not note.strip():
            return fail("invalid", command_text.NOTE_USAGE)
        return self.note(actor, query.strip()[: command_text.MAX_QUERY], note)

    def note(self, actor: Actor, query: str, text: str) -> Reply:
        refused = self._refuse(actor, "add notes", None)
        if refused:
            return refused
        text = text.strip()
        if not text:
            return fail("invalid", f"The note is empty. {command_text.NOTE_USAGE}")
        with self.store.engine.connect() as connection:
            found = find_customers(connection, query)
        if len(found) != 1:
            return fail(
                "not_found" if not found else "invalid",
                f"{'No' if not found else len(found)} customers match {query!r}; be more specific.",
            )
        customer = found[0]
        self.store.append(
            ev.NewEvent(
                type="note.added",
                payload=ev.NoteAdded(text=text, author=actor.name),
                stream=customer["id"],
                idempotency_key=f"note:{actor.key}:{ev.new_id()}",
                actor=actor.key,
                source=actor.surface,
            )
        )
        return reply(f"Noted on {customer['name'] or customer['id']}.")

    def _pause(self, actor: Actor, agent: str | None, paused: bool) -> Reply:
        refused = self._refuse(actor, "pause agents" if paused else "resume agents", None)
        if refused:
            return refused
        from jobs.handlers import AGENTS

        name = (agent or "").strip().lower().replace("-", "_").replace(" ", "_") or "*"
        if name != "*" and name not in AGENTS:
            shown = (agent or "").strip()[:40]
            return fail(
                "invalid", f"No agent is called {shown!r}; the agents are {', '.join(AGENTS)} (or all)."
            )
        with self.store.engine.connect() as connection:
            pauses = lc.pauses(connection)
        lc.set_paused(self.store, name, paused, actor.key)
        target = "All agents" if name == "*" else f"Agent {name}"
        lines = [f"{target} {'paused' if paused else 'resumed'}."]
        if not paused:
            lines += self._catch_up(name, pauses)
        return reply(*lines)

    def _catch_up(self, name: str, pauses: dict[str, datetime]) -> list[str]:
        """Queue the resumed agents on the signals that arrived while they were paused; say how many."""
        from jobs.handlers import AGENTS, catch_up_handler, unhandled
        from jobs.queue import SIGNALS

        agents = AGENTS if name == "*" else (name,)
        lines = []
        for agent in agents:
            starts = [at for at in (pauses.get(agent), pauses.get("*")) if at is not None]
            if not starts or self.queue is None:
                continue
            since = min(starts)
            with self.store.engine.connect() as connection:
                waiting = len(unhandled(connection, agent, since, CATCH_UP_COUNT_LIMIT))
            if waiting:
                self.queue.enqueue(catch_up_handler, agent, since.isoformat(), priority=SIGNALS)
                lines.append(
                    f"{agent}: {waiting} signal(s) that arrived while it was paused are handled now."
                )
        return lines

    def pause(self, actor: Actor, agent: str | None) -> Reply:
        return self._pause(actor, agent, True)

    def resume(self, actor: Actor, agent: str | None) -> Reply:
        return self._pause(actor, agent, False)

    def help(self, actor: Actor) -> Reply:
        return reply(*command_text.HELP)
