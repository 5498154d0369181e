"""The shared base of the command implementations: settings, authorisation, loading and views."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.replies import Actor, Reply, fail
from jobs.render_proposal import stamp, view_of, who
from jobs.views import ProposalView
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp

log = logging.getLogger(__name__)


class CommandBase:
    """What every command needs: the store, settings, the scheduler, the notifier and a clock."""

    """See `bot.commands.Commands` for the public contract."""

    def __init__(
        self,
        store: Any,
        settings: Any,
        *,
        schedule_execution: Callable[[str], object] | None,
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
    def _refuse(self, actor: Actor, action: str, proposal_id: str | None) -> Reply | None:
        """None for an operator; otherwise log the attempt as an event and return the refusal."""
        if actor.key in self.settings.operator_ids:
            return None
        with self.store.engine.connect() as connection:
            row = lc.find_proposal(connection, proposal_id) if proposal_id else None
        stream = row["id"] if row else "access"
        self.store.append(
            lc.on_proposal(
                stream,
                "decision.refused",
                sp.DecisionRefused(
                    by=actor.key,
                    by_name=actor.display_name,
                    surface=actor.surface,
                    action=action,
                    reason="not in OPERATORS",
                ),
                f"{stream}:refused:{ev.new_id()}",
                actor=actor.key,
            ),
            dispatch=False,
        )
        log.warning("refused %s by %s (not an operator)", action, actor.key)
        return fail("refused", f"Sorry, only operators can {action}. This attempt was logged.")

    def _load(self, proposal_id: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as connection:
            return lc.find_proposal(connection, proposal_id)

    def _view(self, proposal_id: str) -> ProposalView | None:
        with self.store.engine.connect() as connection:
            row = lc.get_proposal(connection, proposal_id)
            return view_of(row, lc.customer_name(connection, row["customer_id"])) if row else None

    def _views(self, proposal_id: str) -> tuple[ProposalView, ...]:
        view = self._view(proposal_id)
        return (view,) if view else ()

    def _after_change(self, proposal_id: str) -> None:
        if self.notifier is not None:
            self.notifier.refresh(proposal_id)

    def _schedule(self, proposal_id: str) -> None:
        if self.schedule_execution is not None:
            self.schedule_execution(proposal_id)

    def _lost(self, row: dict[str, Any] | None, proposal_id: str) -> Reply:
        """Tell the loser of a race (or a late tap) what happened first."""
        if row is None:
            return fail("not_found", f"No proposal {proposal_id}.")
        if row["decided_at"] is not None and row["decision"] in {"approved", "edited", "rejected"}:
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
