"""Events appended with an outbox row are handed to the queue as soon as their transaction commits."""

from __future__ import annotations

from typing import Any

from bot.bootstrap import bootstrap
from jobs.handlers import MEMORY
from store import events as ev


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def wants(self, event: ev.Event) -> bool:
        return True

    def handle(self, event: ev.Event, ctx: Any) -> None:
        self.seen.append(event.id)


def _note(key: str) -> ev.NewEvent:
    return ev.NewEvent(
        type="note.added",
        payload=ev.NoteAdded(text="hello", author="test"),
        stream="cus_x",
        idempotency_key=key,
    )


def test_dispatched_events_are_queued_after_commit_not_by_the_relay(make_settings: Any, db_url: str) -> None:
    recorder = Recorder()
    container = bootstrap(make_settings(DATABASE_URL=db_url), handlers={MEMORY: recorder.handle})
    try:
        dispatched = container.store.append(_note("k1")).event
        quiet = container.store.append(_note("k2"), dispatch=False).event
        assert container.queue.join(timeout=30)  # type: ignore[attr-defined]
        assert recorder.seen == [dispatched.id], "no relay ran: the post-commit hook queued it"
        assert quiet.id not in recorder.seen
    finally:
        container.close()


def test_a_rolled_back_transaction_queues_nothing(make_settings: Any, db_url: str) -> None:
    container = bootstrap(make_settings(DATABASE_URL=db_url))
    queued: list[list[ev.Event]] = []
    container.store.after_commit = queued.append
    try:
        try:
            with container.store.transaction() as tx:
                tx.append(_note("k3"))
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        assert queued == []
        assert container.store.append(_note("k3")).duplicate is False, "the aborted append left nothing"
        assert len(queued) == 1
    finally:
        container.close()
