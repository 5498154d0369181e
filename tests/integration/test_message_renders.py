"""The last word on every surface is the true one: an older render never overwrites a newer one."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from jobs.notify import MessageRef
from jobs.views import ProposalView
from store import lifecycle as lc
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import (
    OPERATOR,
    RecordingSurface,
    commands,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)


@dataclass
class StallingSurface(RecordingSurface):
    """Its first edit stalls until released, like a slow chat API call; later edits go straight through."""

    name: str = "telegram"
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        if not self.stalled.is_set():
            self.stalled.set()
            self.release.wait(10)
        super().update_proposal(ref, view)


def test_a_slow_refresh_of_an_older_state_does_not_have_the_last_word(
    store: EventStore, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    app = app_for(store, settings)
    surface = StallingSurface()
    app.notifier.add(surface)
    cmds, scheduled, _ = commands(store, settings, notifier=app.notifier)
    pid = record(store, proposal(make_customer(store), "create_task", {"title": "Send the contract"}))
    app.notifier.post(pid)

    # The tap's process approves; its refresh ("approved") is slow to reach the chat app.
    tap = threading.Thread(target=cmds.approve, args=(OPERATOR, pid))
    tap.start()
    assert surface.stalled.wait(10)
    assert scheduled == [pid]
    # Meanwhile a worker executes it and shows "executed"; then the stalled edit lands.
    assert app.executor.execute(pid).status == "executed"
    surface.release.set()
    tap.join(10)

    assert row(store, pid)["state"] == "executed"
    assert surface.last_view().state == "executed", [v.state for _, v in surface.updates]


def test_a_render_claims_only_newer_versions(store: EventStore) -> None:
    engine = store.engine
    assert lc.claim_render(engine, "slack", "C1", "1.0", 5)
    assert not lc.claim_render(engine, "slack", "C1", "1.0", 5), "the same version twice: once"
    assert not lc.claim_render(engine, "slack", "C1", "1.0", 4), "an older one: never"
    assert lc.claim_render(engine, "slack", "C1", "1.0", 9)
    assert lc.rendered_version(engine, "slack", "C1", "1.0") == 9
    assert lc.claim_render(engine, "telegram", "42", "7", 4), "each message has its own version"
