"""How the decision commands of `bot.commands` work: compare-and-set decisions, edits, undo, retry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from bot import command_text
from bot.command_reads import ReadCommands
from bot.commands import Actor, Reply, fail, reply
from jobs.connectors.internal import compensate
from jobs.render_proposal import DRAFT_MIRRORS, editable_fields, payload_of, stamp
from jobs.views import Button
from jobs.wakeups import UNDO_WINDOW_KINDS, schedule_wake
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp

log = logging.getLogger(__name__)


class CommandImpl(ReadCommands):
    """See `bot.commands.Commands` for the public contract."""

    # ---- decisions -------------------------------------------------------------------------------
    def _decide(
        self,
        actor: Actor,
        proposal_id: str,
        decision: str,
        *,
        approved: dict[str, Any] | None = None,
        reason: str | None = None,
        correction: dict[str, Any] | None = None,
    ) -> Reply:
        row = self._load(proposal_id)
        if row is None:
            return fail("not_found", f"No proposal {proposal_id}.")
        pid = row["id"]
        now = self.clock()

        def plan(current: dict[str, Any]) -> list[lc.Planned]:
            params, draft = payload_of(current)
            window = self.settings.undo_window_seconds
            not_before = None
            if decision != "rejected" and current["kind"] in UNDO_WINDOW_KINDS and window > 0:
                not_before = now + timedelta(seconds=window)
            held = current["not_before"] if current["state"] == "pending" else None  # policy hold
            if decision != "rejected" and held is not None and (not_before is None or held > not_before):
                not_before = held
            payload = sp.ProposalDecided(
                decision=decision,
                by=actor.key,
                by_name=actor.display_name,
                surface=actor.surface,
                reason=reason,
                approved=None if decision == "rejected" else (approved or {"params": params, "draft": draft}),
                not_before=not_before,
            )
            planned: list[lc.Planned] = [
                (
                    lc.on_proposal(
                        pid,
                        "proposal.decided",
                        payload,
                        lc.decision_key(pid),
                        actor=actor.key,
                        occurred_at=now,
                    ),
                    False,
                )
            ]
            if correction is not None:
                planned.append((self._correction(current, actor, **correction), True))
            return planned

        result = lc.transition(self.store, pid, sp.DECIDABLE, plan)
        if not result.won:
            return self._lost(result.row, pid)
        if decision != "rejected":
            self._schedule(pid)
        self._after_change(pid)
        row = result.row or row
        line = {
            "approved": "Approved.",
            "edited": "Edited and approved.",
            "rejected": "Rejected." + (f" Reason noted: {reason}" if reason else ""),
        }[decision]
        if row["not_before"]:
            line += f" Sending at {stamp(row['not_before'])}; Undo until then."
        return reply(line, proposals=self._views(pid), proposal_id=pid)

    def _correction(
        self,
        row: dict[str, Any],
        actor: Actor,
        *,
        edited: dict[str, Any] | None = None,
        params_after: dict[str, Any] | None = None,
        rejection_reason: str | None = None,
    ) -> ev.NewEvent:
        params, draft = payload_of(row)
        if edited is not None:
            text = f"The operator edited a {row['kind']} draft before approving it."
        else:
            text = f"The operator rejected a {row['kind']} proposal" + (
                f": {rejection_reason}" if rejection_reason else "."
            )
        payload = sp.CorrectionRecorded(
            proposal_id=row["id"],
            agent=row["agent"],
            kind=row["kind"],
            original=draft,
            edited=edited,
            params_before=params,
            params_after=params_after,
            rejection_reason=rejection_reason,
            by=actor.key,
            text=text,
        )
        return ev.NewEvent(
            type="correction.recorded",
            payload=payload,
            stream=row["customer_id"],
            idempotency_key=f"{row['id']}:correction",
            actor=actor.key,
            source="lifecycle",
            causation_id=row["id"],
        )

    def approve(self, actor: Actor, proposal_id: str) -> Reply:
        return self._refuse(actor, "approve", proposal_id) or self._decide(actor, proposal_id, "approved")

    def edit(self, actor: Actor, proposal_id: str, values: Mapping[str, str] | None) -> Reply:
        refused = self._refuse(actor, "edit", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return fail("not_found", f"No proposal {proposal_id}.")
        if row["state"] not in sp.DECIDABLE:
            return self._lost(row, row["id"])
        fields = editable_fields(row)
        if not values:
            lines = (
                [f"Editable: {', '.join(f.name for f in fields)}"] if fields else ["Nothing to edit here."]
            )
            return reply(*lines, fields=fields, proposals=self._views(row["id"]), proposal_id=row["id"])
        known = {f.name for f in fields}
        unknown = sorted(set(values) - known)
        if unknown:
            return fail("invalid", f"Cannot edit {', '.join(unknown)}; editable: {', '.join(sorted(known))}.")
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
        if new_params == params and new_draft == draft:
            return self._decide(actor, row["id"], "approved")
        approved = {"params": new_params, "draft": new_draft}
        correction = {"edited": new_draft, "params_after": new_params}
        return self._decide(actor, row["id"], "edited", approved=approved, correction=correction)

    def reject(self, actor: Actor, proposal_id: str, reason: str | None) -> Reply:
        refused = self._refuse(actor, "reject", proposal_id)
        if refused:
            return refused
        reason = (reason or "").strip() or None
        correction = {"rejection_reason": reason}
        return self._decide(actor, proposal_id, "rejected", reason=reason, correction=correction)

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
            return fail("not_found", f"No proposal {proposal_id}.")
        pid = row["id"]

        def plan(current: dict[str, Any]) -> list[lc.Planned]:
            payload = sp.ProposalSnoozed(
                until=when, by=actor.key, by_name=actor.display_name, surface=actor.surface
            )
            key = f"{pid}:snooze:{current['position']}"
            return [
                (
                    lc.on_proposal(pid, "proposal.snoozed", payload, key, actor=actor.key, occurred_at=now),
                    False,
                )
            ]

        result = lc.transition(self.store, pid, sp.DECIDABLE, plan)
        if not result.won:
            return self._lost(result.row, pid)
        if self.queue is not None:
            schedule_wake(self.queue, pid, when)
        self._after_change(pid)
        return reply(f"Snoozed until {stamp(when)}.", proposals=self._views(pid), proposal_id=pid)

    # ---- after the decision ----------------------------------------------------------------------
    def undo(self, actor: Actor, proposal_id: str) -> Reply:
        refused = self._refuse(actor, "undo", proposal_id)
        if refused:
            return refused
        row = self._load(proposal_id)
        if row is None:
            return fail("not_found", f"No proposal {proposal_id}.")
        pid = row["id"]

        def plan(current: dict[str, Any]) -> list[lc.Planned] | None:
            by = dict(by=actor.key, by_name=actor.display_name, surface=actor.surface)
            if current["state"] == "approved":
                undone = sp.ProposalUndone(how="cancelled", **by)
                return [
                    (lc.on_proposal(pid, "proposal.undone", undone, f"{pid}:undo", actor=actor.key), False)
                ]
            if not current["compensation"]:
                return None
            effects = compensate(
                current["kind"], current["customer_id"], current["compensation"], pid, actor.key
            )
            undone = sp.ProposalUndone(how="compensated", **by)
            main = lc.on_proposal(pid, "proposal.undone", undone, f"{pid}:undo", actor=actor.key)
            return [(main, False), *((effect, True) for effect in effects)]

        result = lc.transition(self.store, pid, {"approved", "executed"}, plan)
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
            return fail("not_found", f"No proposal {proposal_id}.")
        pid = row["id"]

        def plan(current: dict[str, Any]) -> list[lc.Planned] | None:
            if allowed == "failed" and not current["retryable"]:
                return None
            payload = sp.ActionResolved(
                choice=choice, by=actor.key, by_name=actor.display_name, surface=actor.surface
            )
            key = f"{pid}:resolve:{current['attempts']}"
            return [(lc.on_proposal(pid, "action.resolved", payload, key, actor=actor.key), False)]

        result = lc.transition(self.store, pid, {allowed}, plan)
        if not result.won:
            return self._lost(result.row, pid)
        if choice != "keep":
            self._schedule(pid)
        self._after_change(pid)
        line = {"retry": "Retrying.", "resend": "Sending again.", "keep": "Left as it is; not resent."}[
            choice
        ]
        return reply(line, proposals=self._views(pid), proposal_id=pid)

    def retry(self, actor: Actor, proposal_id: str) -> Reply:
        return self._resolve(actor, proposal_id, "retry", "failed")

    def resend(self, actor: Actor, proposal_id: str, send: bool) -> Reply:
        return self._resolve(actor, proposal_id, "resend" if send else "keep", "uncertain")

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
        }
        return handlers[action]()

    def run(self, actor: Actor, line: str) -> Reply:
        return command_text.dispatch(self, actor, line)


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
