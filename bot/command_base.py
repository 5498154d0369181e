"""The shared base of the command implementations: settings, authorisation, loading and views."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agents.proposal import KIND_NOUNS
from bot.replies import Actor, Reply, fail, reply
from jobs import proposal_service as service
from jobs.render_proposal import stamp, view_of, who
from jobs.views import ProposalView
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.db import reading

log = logging.getLogger(__name__)

# What a person does to a proposal that needs the right to its kind when OPERATORS limits theirs
# (`telegram:456=send_email|create_task`); reads (why, pending) need only to be an operator.
DECIDING = frozenset({"approve", "edit", "reject", "snooze", "undo", "retry", "resend", "merge", "unmerge"})


class CommandBase:
    """What every command needs: the store, settings, the scheduler, the notifier and a clock."""

    """See `bot.commands.Commands` for the public contract."""

    def __init__(
        self,
        store: Any,
        settings: Any,
        *,
        schedule_execution: Callable[[str, dict[str, Any] | None], object] | None,
        notifier: Any,
        clock: Callable[[], datetime] | None,
        memory: Callable[[], Any] | None = None,
        queue: Any = None,
    ) -> None:
        self.store = store
        self.queue = queue  # jobs.queue.JobQueue: catch-up jobs on resume
        self.settings = settings
        self.schedule_execution = schedule_execution
        self.notifier = notifier
        self.clock = clock or ev.utcnow
        self.memory = memory  # returns the customer memory (store.memory.Memory) when wired

    # ---- guards ----------------------------------------------------------------------------------
    def _refuse(
        self, actor: Actor, action: str, proposal_id: str | None, kind: str | None = None
    ) -> Reply | None:
        """None when the actor may do this; otherwise log the attempt as an event and return the refusal.

        Only OPERATORS may act at all; a decision (DECIDING) on a proposal, or `kind` named outright
        (a typed /merge), also needs the right to that action kind when OPERATORS limits the person's.
        """
        rights = self.settings.operator_rights
        row = None
        if actor.key in rights:
            allowed = rights[actor.key]
            if allowed is None or (action not in DECIDING and kind is None):
                return None
            if kind is None:
                row = self._load(proposal_id) if proposal_id else None
                if row is None:
                    return None  # nothing to decide: the command says "No proposal …"
                kind = str(row["kind"])
            if kind in allowed:
                return None
            noun = KIND_NOUNS.get(kind, kind)
            reason = f"not allowed to {action} {noun}"
            line = f"Sorry, you are {reason}. This attempt was logged."
        else:
            reason = "not in OPERATORS"
            line = f"Sorry, only operators can {action}. This attempt was logged."
            row = self._load(proposal_id) if proposal_id else None
        stream = row["id"] if row else "access"
        self.store.append(
            lc.on_proposal(
                stream,
                "decision.refused",
                sp.DecisionRefused(
                    by=actor.key,
                    by_name=actor.display_name,
                    surface=actor.surface,
                    action=action if kind is None else f"{action} {kind}",
                    reason=reason,
                ),
                f"{stream}:refused:{ev.new_id()}",
                actor=actor.key,
            ),
            dispatch=False,
        )
        log.warning("refused %s by %s (%s)", action, actor.key, reason)
        return fail("refused", line)

    # ---- the one decision -------------------------------------------------------------------------
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
        # A button gives the whole id: the decision's own read finds it. Typed text is looked up first.
        pid = proposal_id
        if not sp.is_proposal_id(proposal_id):
            found = self._load(proposal_id)
            if found is None:
                return self._missing(proposal_id)
            pid = found["id"]
        result = service.decide(
            self.store,
            pid,
            decision,
            decider(actor),
            undo_window_seconds=self.settings.undo_window_seconds,
            now=self.clock(),
            approved=approved,
            reason=reason,
            correction=correction,
        )
        if not result.won:
            return self._lost(result.row, pid)
        if decision != "rejected":
            self._schedule(pid, result.row)
        self._after_change(pid)
        row = result.row
        assert row is not None  # won: the proposal is there
        line = {
            "approved": "Approved.",
            "edited": "Edited and approved.",
            "rejected": "Rejected." + (f" Reason noted: {reason}" if reason else ""),
        }[decision]
        if row["not_before"]:
            line += f" Sending at {stamp(row['not_before'])}; Undo until then."
        name = lc.display_name(result.beside[0]) if result.beside else None
        return reply(line, proposals=(view_of(row, name),), proposal_id=pid)

    def _load(self, proposal_id: str) -> dict[str, Any] | None:
        with reading(self.store.engine) as connection:
            return lc.find_proposal(connection, proposal_id)

    def _missing(self, typed: str) -> Reply:
        """Why `typed` names no one proposal: nothing matches, or several do (listed by handle)."""
        with self.store.engine.connect() as connection:
            found = lc.proposals_matching(connection, typed)
        if len(found) > 1:
            names = ", ".join(f"#{row['number']} ({row['kind']}, {row['id']})" for row in found)
            more = " …" if len(found) >= lc.AMBIGUOUS_SHOWN else ""
            return fail(
                "invalid",
                f"{typed!r} matches several proposals: {names}{more}. Type its number or more of its id.",
            )
        return fail("not_found", f"No proposal {typed}. `pending` lists them with their numbers.")

    def _view(self, proposal_id: str) -> ProposalView | None:
        with reading(self.store.engine) as connection:
            row = lc.get_proposal(connection, proposal_id)
            return view_of(row, lc.customer_name(connection, row["customer_id"])) if row else None

    def _views(self, proposal_id: str) -> tuple[ProposalView, ...]:
        view = self._view(proposal_id)
        return (view,) if view else ()

    def _after_change(self, proposal_id: str) -> None:
        if self.notifier is not None:
            self.notifier.refresh(proposal_id)

    def _schedule(self, proposal_id: str, row: dict[str, Any] | None) -> None:
        """Queue the proposal's execution; `row` is it as the decision left it (not read again)."""
        if self.schedule_execution is not None:
            self.schedule_execution(proposal_id, row)

    def _lost(self, row: dict[str, Any] | None, proposal_id: str) -> Reply:
        """Tell the loser of a race (or a late tap) what happened first."""
        if row is None:
            return self._missing(proposal_id)
        if row["state"] == "closed" and row["phase"] == "superseded":
            line = "It failed, and an edited copy was sent in its place; nothing more to do here."
        elif row["decided_at"] is not None and row["decision"] in {"approved", "edited", "rejected"}:
            verb = {"approved": "approved", "edited": "edited and approved", "rejected": "rejected"}[
                row["decision"]
            ]
            line = f"Already {verb} by {who(row)} at {stamp(row['decided_at'])}."
        elif row["state"] == "expired":
            line = f"Expired at {stamp(row['decided_at'])}; nothing was sent."
        elif row["state"] == "withdrawn":
            line = f"Withdrawn at {stamp(row['decided_at'])}: {row['reason']}; nothing was sent."
        elif row["state"] == "snoozed":
            line = f"Snoozed until {stamp(row['snoozed_until'])}."
        else:
            line = f"This proposal is {row['state']} now."
        return fail("conflict", line, proposals=self._views(row["id"]), proposal_id=row["id"])


def decider(actor: Actor) -> service.Decider:
    """The proposal service's view of who acts."""
    return service.Decider(actor.key, actor.display_name, actor.surface)
