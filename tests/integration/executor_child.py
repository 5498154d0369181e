"""An executor in its own process, for the crash tests: `python -m tests.integration.executor_child
DB_URL SMTP_URL PROPOSAL_ID PAUSE MARKER`. PAUSE is "before" (stop after the checkpoint, before the
SMTP transaction), "after" (stop after the server's 250, before the result is written), "after#N"
(stop after the Nth action the process runs: a batch's) or "none". On reaching the pause it writes
MARKER and waits to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from jobs.connectors.base import ActionRequest, ActionResult, Handover
from jobs.execute import Executor, default_connectors
from store.db import make_engine
from store.settings import load_settings
from store.uow import EventStore


class Pausing:
    """Wraps a real connector and stops for good at one point (the seam the test kills us at)."""

    def __init__(self, inner: Any, pause: str, marker: Path) -> None:
        self.inner, self.pause, self.marker = inner, pause, marker
        self.name, self.dedupes = inner.name, inner.dedupes
        self.runs = 0

    def _stop(self) -> None:
        self.marker.write_text("paused")
        time.sleep(600)

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        if self.pause == "before":
            self._stop()
        result = self.inner.run(request, handover)
        self.runs += 1
        if self.pause == "after" or self.pause == f"after#{self.runs}":
            self._stop()
        return result  # type: ignore[no-any-return]


def main() -> None:
    db_url, target_url, pid, pause, marker = sys.argv[1:6]
    store = EventStore(make_engine(db_url))
    settings = load_settings(_env_file=None, SMTP_URL=target_url, MAIL_FROM="ops@example.test")
    connectors = default_connectors(store, settings, lambda name: None)
    for kind in ("send_email", "post_webhook"):
        connectors[kind] = Pausing(connectors[kind], pause, Path(marker))  # type: ignore[assignment]
    print(Executor(store, connectors, transient_tries=1).execute(pid).status, flush=True)


if __name__ == "__main__":
    main()
