"""How the decision commands of `bot.commands` work: compare-and-set decisions, edits, undo, retry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from agents.intents import INTENTS
from bot import command_text
from bot.command_audit import AuditCommands
from bot.command_base import decider
from bot.command_merge import MergeCommands
from bot.command_reads import ReadCommands
from bot.replies import Actor, Reply, fail, reply
from jobs import proposal_service as service
from jobs.connectors.email import can_take
from jobs.render_proposal import (
    ASK_INTENT,
    DRAFT_MIRRORS,
    classified_intent,
    editable_fields,
    handle_of,
    intent_menu,
    payload_of,
    stamp,
)
from jobs.views import Button
from store import events as ev
from store import proposals as sp

log = logging.getLogger(__name__)

# A failed message of these kinds, edited, is sent again as a new proposal (CommandImpl._send_again).
SENT_AGAIN_WHEN_EDITED = frozenset({"send_email", "send_chat_reply"})


def fixed_key(proposal_id: str) -> str:
    """The key of the one proposal an edit of a failed one records."""
    return f"fix:{proposal_id}"


# The reason a merge rejected with "Not the same" carries.
NOT_THE_SAME = "not the same customer"


class CommandImpl(ReadCommands, MergeCommands, AuditCommands):
    """See `bot.commands.Commands` for the public contract."""

    # ---- decisions -------------------------------------------------------------------------------
    def approve(self, actor: Actor, proposal_id: str) -> Reply:
        return self._refuse(actor, "approve", proposal_id) or self._decide(actor, proposal_id, "approved")

    def edit(self, actor: Actor, proposal_id: str, values: Mapping[str, str] | None) -> Reply:
        refused = self._refuse(actor, "edit", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        failed = row["state"] == "failed" and row["kind"] in SENT_AGAIN_WHEN_EDITED
        if row["state"] not in sp.DECIDABLE and not failed:
            return self._lost(row, row["id"])
        fields = editable_fields(row)
        if not values:
            lines = (
                [f"Editable: {', '.join(f.name for f in fields)}"] if fields else ["Nothing to edit here."]
            )
            if failed:
                lines.insert(0, f"It failed: {row['error']}. An edit is sent as a new proposal.")
            return reply(*lines, fields=fields, proposals=self._views(row["id"]), proposal_id=row["id"])
        known = {f.name for f in fields}
        unknown = sorted(set(values) - known)
        if unknown:
            return fail("invalid", f"Cannot edit {', '.join(unknown)}; editable: {', '.join(sorted(known))}.")
        if row["kind"] == "send_email" and "to" in values and not can_take(values["to"].strip()):
            return fail("invalid", f"{values['to'].strip()!r} is not an email address; nothing was changed.")
        params, draft = payload_of(row)
        new_params, new_draft = dict(params), dict(draft) if draft else None
        for name, value in values.items():
            if new_draft is not None and name in {"subject", "body"}:
                new_draft[name] = value
                for param, mirrored in DRAFT_MIRRORS.items():  # keep the copy in params in step
                    if mirrored == name and param in new_params:
                        new_params[param] = value
            else:
                new_params[name] = _like(params.get(name), value)
        if failed:
            return self._send_again(actor, row, new_params, new_draft)
        if new_params == params and new_draft == draft:
            return self._decide(actor, row["id"], "approved")
        approved = {"params": new_params, "draft": new_draft}
        correction = {"edited": new_draft, "params_after": new_params}
        return self._decide(actor, row["id"], "edited", approved=approved, correction=correction)

    def _send_again(
        self, actor: Actor, row: dict[str, Any], params: dict[str, Any], draft: dict[str, Any] | None
    ) -> Reply:
        """A failed message, edited: the edited copy becomes a new proposal, approved by the editor, and
        the failed one is closed in the same transaction (service.supersede), so a Retry of it and the
        copy cannot both go out, and a second edit finds it closed."""
        old = handle_of(row)
        if (params, draft) == payload_of(row):
            again = f"; `retry {old}` sends it as it is" if row["retryable"] else ""
            return fail("invalid", f"Nothing was changed{again}.")
        copy = dict(row["proposed"])  # the same agent, customer and message behind it
        cost = dict(copy.get("cost") or {})
        copy.update(
            params=params,
            draft=draft,
            rationale=f"{actor.name} edited #{old} after it failed ({row['error']})"[:500],
            cost={**cost, "usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0},  # paid for once
        )
        closed, copy_id = service.supersede(self.store, row["id"], decider(actor), copy, fixed_key(row["id"]))
        if not closed.won:
            return self._lost(closed.row, row["id"])
        self._after_change(row["id"])
        decided = self._decide(actor, copy_id, "approved")
        if self.notifier is not None:
            self.notifier.post(copy_id)  # on every surface, as an agent's proposal is, approved already
        if not decided.ok:
            return decided
        line = f"#{old} failed; your edited version is {self._handle(copy_id)}. {decided.text}"
        return reply(line, proposals=decided.proposals, proposal_id=copy_id)

    def _handle(self, proposal_id: str) -> str:
        found = self._load(proposal_id)
        return f"#{handle_of(found)}" if found is not None else proposal_id

    def reject(self, actor: Actor, proposal_id: str, reason: str | None) -> Reply:
        refused = self._refuse(actor, "reject", proposal_id)
        if refused:
            return refused
        reason = (reason or "").strip() or None
        correction = {"rejection_reason": reason}
        return self._decide(actor, proposal_id, "rejected", reason=reason, correction=correction)

    def not_same(self, actor: Actor, proposal_id: str) -> Reply:
        """ "Not the same" on a merge: reject it; the possible duplicate is dismissed with it."""
        row = self._load(proposal_id)
        if row is not None and row["kind"] != "merge_customers":
            return fail("invalid", "“Not the same” answers a merge; this proposal is no merge.")
        return self.reject(actor, proposal_id, NOT_THE_SAME)

    def snooze(self, actor: Actor, proposal_id: str, until: datetime | str) -> Reply:
        refused = self._refuse(actor, "snooze", proposal_id)
        if refused:
            return refused
        now = self.clock()
        try:
            when = command_text.parse_until(until, now, self.settings.timezone)
        except ValueError as exc:
            return fail("invalid", str(exc))
        if when <= now:
            return fail("invalid", "Snooze until a time in the future.")
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        pid = row["id"]
        result = service.snooze(self.store, self.queue, pid, decider(actor), when, now)
        if not result.won:
            return self._lost(result.row, pid)
        self._after_change(pid)
        return reply(f"Snoozed until {stamp(when)}.", proposals=self._views(pid), proposal_id=pid)

    # ---- after the decision ----------------------------------------------------------------------
    def undo(self, actor: Actor, proposal_id: str) -> Reply:
        refused = self._refuse(actor, "undo", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        pid = row["id"]
        result = service.undo(self.store, pid, decider(actor))
        if not result.won:
            current = result.row or row
            if current["state"] in {"executing", "executed", "uncertain", "closed"}:
                return fail(
                    "too_late",
                    f"Too late to undo: it is {current['state']} and cannot be taken back.",
                    proposals=self._views(pid),
                    proposal_id=pid,
                )
            return self._lost(current, pid)
        self._after_change(pid)
        how = (result.row or {}).get("phase")
        line = "Cancelled — nothing was sent." if how == "cancelled" else "Undone (compensated)."
        return reply(line, proposals=self._views(pid), proposal_id=pid)

    def _resolve(self, actor: Actor, proposal_id: str, choice: str, allowed: str) -> Reply:
        refused = self._refuse(actor, "retry" if choice == "retry" else "resend", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        pid = row["id"]
        result = service.resolve(self.store, pid, decider(actor), choice, allowed)
        if not result.won:
            return self._lost(result.row, pid)
        if choice != "keep":
            self._schedule(pid, result.row)
        self._after_change(pid)
        line = {"retry": "Retrying.", "resend": "Sending again.", "keep": "Left as it is; not resent."}[
            choice
        ]
        return reply(line, proposals=self._views(pid), proposal_id=pid)

    def retry(self, actor: Actor, proposal_id: str) -> Reply:
        return self._resolve(actor, proposal_id, "retry", "failed")

    def resend(self, actor: Actor, proposal_id: str, send: bool) -> Reply:
        return self._resolve(actor, proposal_id, "resend" if send else "keep", "uncertain")

    # ---- teaching the triage ----------------------------------------------------------------------
    def correct_intent(self, actor: Actor, proposal_id: str, intent: str) -> Reply:
        """The operator says what the message behind a triage proposal really was ("Spam", "Not spam",
        `intent ID billing_question`): an `intent.corrected` event the classifier learns from; a message
        corrected to spam also has its pending proposal rejected."""
        refused = self._refuse(actor, "correct the triage", proposal_id)
        if refused:
            return refused
        intent = intent.strip().lower()
        if intent in {"", ASK_INTENT}:
            return self._intent_menu(proposal_id)
        if intent not in INTENTS:
            return fail("invalid", f"Unknown intent {intent!r}; one of: {', '.join(INTENTS)}.")
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        message = self.store.get(row["event_id"]) if row["event_id"] else None
        text = getattr(message.payload, "text", None) if message is not None else None
        if message is None or message.type != "message.received" or not text:
            return fail("invalid", "This proposal does not answer a message; there is no intent to correct.")
        previous = classified_intent(row)
        self.store.append(
            ev.NewEvent(
                type="intent.corrected",
                payload=ev.IntentCorrected(
                    message_event_id=message.id,
                    intent=intent,
                    previous_intent=previous,
                    text=text[: ev.MAX_CORRECTED_TEXT],
                    by=actor.key,
                ),
                stream=message.stream,
                idempotency_key=f"{message.id}:intent:{intent}",
                actor=actor.key,
                source=actor.surface,
                causation_id=row["id"],
            )
        )
        lines = [f"Noted: that message is {intent}" + (f", not {previous}." if previous else ".")]
        lines.append("The triage reads such messages that way from now on.")
        if intent == "spam" and row["state"] in sp.DECIDABLE:
            rejected = self._decide(actor, row["id"], "rejected", reason="spam", correction=None)
            lines.append(rejected.lines[0])
        self._after_change(row["id"])
        return reply(*lines, proposals=self._views(row["id"]), proposal_id=row["id"])

    def _intent_menu(self, proposal_id: str) -> Reply:
        """ "Wrong intent → …": the proposal again, with one button per intent it could have been."""
        row = self._load(proposal_id)
        if row is None:
            return self._missing(proposal_id)
        views = self._views(row["id"])
        if not views:
            return self._missing(proposal_id)
        current = classified_intent(row)
        menu = intent_menu(views[0], INTENTS, current)
        said = f" (read as {current})" if current else ""
        return reply(f"What was that message, really{said}?", proposals=(menu,), proposal_id=row["id"])

    # ---- entry points ----------------------------------------------------------------------------
    def press(self, actor: Actor, button_data: str) -> Reply:
        try:
            action, pid, arg = Button.parse(button_data)
        except ValueError as exc:
            return fail("invalid", str(exc))
        handlers: dict[str, Callable[[], Reply]] = {
            "approve": lambda: self.approve(actor, pid),
            "edit": lambda: self.edit(actor, pid, None),
            "reject": lambda: self.reject(actor, pid, None),
            "snooze": lambda: self.snooze(actor, pid, arg or "1h"),
            "why": lambda: self.why(actor, pid),
            "undo": lambda: self.undo(actor, pid),
            "retry": lambda: self.retry(actor, pid),
            "resend": lambda: self.resend(actor, pid, True),
            "keep": lambda: self.resend(actor, pid, False),
            "intent": lambda: self.correct_intent(actor, pid, arg or ""),
            "distinct": lambda: self.not_same(actor, pid),
        }
        return handlers[action]()

    def run(self, actor: Actor, line: str) -> Reply:
        return dispatch(self, actor, line)


def _like(original: Any, value: str) -> Any:
    """A typed-in value converted to the type the param had (numbers stay numbers)."""
    if isinstance(original, bool):
        return value.strip().lower() in {"1", "true", "yes", "y"}
    for kind in (int, float):
        if isinstance(original, kind):
            try:
                return kind(value)
            except ValueError:
                return value
    return value


# Commands on a proposal that take nothing after its id.
_ONE_PROPOSAL = frozenset({"approve", "why", "show", "undo", "retry", "resend", "keep", "distinct"})


def dispatch(impl: CommandImpl, actor: Actor, line: str) -> Reply:
    """Run one typed command line."""
    text = line.strip().lstrip("/")
    if not text:
        return fail("invalid", "Type a command; `help` lists them.")
    word, _, rest = text.partition(" ")
    word, rest = word.lower().split("@", 1)[0], rest.strip()  # Telegram sends /cmd@botname
    first, _, tail = rest.partition(" ")
    tail = tail.strip()
    proposal_commands = {
        "approve": lambda: impl.approve(actor, first),
        "reject": lambda: impl.reject(actor, first, tail or None),
        "why": lambda: impl.why(actor, first),
        "show": lambda: impl.show(actor, first),
        "undo": lambda: impl.undo(actor, first),
        "retry": lambda: impl.retry(actor, first),
        "resend": lambda: impl.resend(actor, first, True),
        "keep": lambda: impl.resend(actor, first, False),
        "snooze": lambda: impl.snooze(actor, first, tail or "1h"),
        "edit": lambda: _edit(impl, actor, first, tail),
        "intent": lambda: impl.correct_intent(actor, first, tail),
        "distinct": lambda: impl.not_same(actor, first),
    }
    if word in proposal_commands:
        if not first:
            return fail("invalid", f"Usage: {word} <proposal id>")
        if tail and word in _ONE_PROPOSAL:  # `approve 1 2 3` must not approve #1 alone and say nothing
            return fail(
                "invalid",
                f"{word} takes one proposal: {word} <id>. Nothing was done (not understood: {tail[:40]!r}).",
            )
        return proposal_commands[word]()
    if word == "customer":
        query, as_of = command_text.split_as_of(rest)
        if not query:
            return fail("invalid", command_text.CUSTOMER_USAGE)
        if isinstance(as_of, str):
            return fail("invalid", as_of)
        return impl.customer(actor, query[: command_text.MAX_QUERY], as_of)
    if word == "note":
        return impl.note_line(actor, rest)
    if word in {"pause", "resume"}:
        agent = None if rest.lower() in {"", "all"} else rest
        return (impl.pause if word == "pause" else impl.resume)(actor, agent)
    if word == "digest":
        return impl.digest(actor)
    if word == "merge":
        return impl.merge_line(actor, rest)
    if word == "unmerge":
        return impl.unmerge(actor, rest)
    if word == "audit":
        return impl.audit_line(actor, rest)
    if word in {"pending", "help", "start"}:
        return impl.pending(actor) if word == "pending" else impl.help(actor)
    return fail("invalid", f"Unknown command {word[:30]!r}; `help` lists them.")


def _edit(impl: CommandImpl, actor: Actor, proposal_id: str, tail: str) -> Reply:
    if not tail:
        return impl.edit(actor, proposal_id, None)
    field, _, value = tail.partition(" ")
    return impl.edit(actor, proposal_id, {field.strip().rstrip(":=").lower(): value.strip()})
