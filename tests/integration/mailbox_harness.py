"""Helpers for the mailbox tests: an App watching a Dovecot user's mailbox on a thread, and what it logged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select

from bot.bootstrap import App, bootstrap
from store import mailbox_positions as positions
from store import tables as t
from tests.integration.jobs_harness import wait_for
from tests.standins.dovecot import Dovecot

__all__ = [
    "Watching",
    "append",
    "count",
    "mailbox_app",
    "message_ids",
    "proposals_caused_by",
    "wait_for",
    "watching",
]


def mailbox_app(make_settings: Any, db_url: str, url: str, handlers: Any = None, **values: Any) -> App:
    """An App on the test database watching `url`; no handlers unless the test wants some."""
    settings = make_settings(DATABASE_URL=db_url, IMAP_URL=url, MAIL_FROM="op@example.com", **values)
    return bootstrap(settings, migrate_schema=False, handlers=handlers or {})


class Watching:
    """The App's mailbox running on a thread; `stop()` ends it and keeps what it raised."""

    def __init__(self, container: App) -> None:
        self.container = container
        self.stop_event = threading.Event()
        self.lines: list[str] = []
        self.error: BaseException | None = None
        mailbox = container.mailbox
        assert mailbox is not None
        self.mailbox = mailbox
        mailbox.say = self.lines.append
        self.thread = threading.Thread(target=self._run, name="test-mailbox", daemon=True)

    def _run(self) -> None:
        try:
            self.mailbox.run(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def start(self) -> Watching:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the mailbox watch did not stop"

    def wait_until(self, state: str, folder: str = "INBOX", timeout: float = 15.0) -> None:
        wait_for(lambda: self.state(folder) == state, timeout, f"{folder} to be {state}")

    def state(self, folder: str = "INBOX") -> str | None:
        found = {
            s.folder: s.state for s in positions.statuses(self.container.engine, self.mailbox.config.account)
        }
        return found.get(folder)


@contextmanager
def watching(container: App) -> Iterator[Watching]:
    run = Watching(container).start()
    try:
        yield run
    finally:
        run.stop()


def count(container: App, event_type: str) -> int:
    with container.engine.connect() as connection:
        query = select(func.count()).select_from(t.events).where(t.events.c.type == event_type)
        return int(connection.execute(query).scalar_one())


def message_ids(container: App, event_type: str = "message.received") -> list[str]:
    """The Message-IDs of the recorded messages, in log order (repeats would show twice)."""
    with container.engine.connect() as connection:
        rows = connection.execute(
            select(t.events.c.payload).where(t.events.c.type == event_type).order_by(t.events.c.position)
        ).scalars()
        return [row["data"]["message_id"] for row in rows]


def proposals_caused_by(container: App, message_id: str) -> int:
    """How many proposals the recorded message with this Message-ID has led to so far (0 before it is
    recorded): a count of all proposals would also rise with a second proposal on an earlier message."""
    e = t.events.c
    with container.engine.connect() as connection:
        received = connection.execute(select(e.id, e.payload).where(e.type == "message.received")).all()
        ids = [row.id for row in received if row.payload["data"]["message_id"] == message_id]
        if not ids:
            return 0
        query = select(func.count()).where(e.type == "proposal.recorded", e.causation_id.in_(ids))
        return int(connection.execute(query).scalar_one())


def append(dovecot: Dovecot, user: str, folder: str, *messages: bytes, when: Any = None) -> None:
    """APPEND the messages in one session (MULTIAPPEND: one command for the lot)."""
    client = dovecot.client(user)
    try:
        if len(messages) == 1:
            client.append(folder, messages[0], msg_time=when)
        else:
            client.multiappend(folder, [{"msg": m, "date": when} if when else m for m in messages])
    finally:
        client.logout()
