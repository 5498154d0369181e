"""The App's mailbox part: the watch on IMAP_URL's folder and on the Sent folder, one process at a time.

`crm run`, `crm bot` and `crm mail` all run it; when several run against one database, a leader lock
per account (a Postgres advisory lock, or a file lock beside SQLite) lets one of them watch and the
others wait to take over. The Sent folder is IMAP_SENT, or the one the server flags \\Sent.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from bot.inbound.errors import SurfaceFailed
from bot.mailbox.watcher import BACKOFF_FIRST_S, BACKOFF_MAX_S, RETRIED, FolderWatcher, Say
from jobs.connectors.imap import MailboxRefused, sent_folder, session
from jobs.scheduler import LeaderLock, leader_lock_for
from store import mailbox_positions as positions
from store.mailbox_url import MailboxConfig, parse_mailbox_url

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# How often a process that is not the watcher looks whether the watcher went away.
STANDBY_CHECK_S = 5.0


class Mailbox:
    """Watches the operator's mailbox until stopped (`run`); `refused` holds a refused login's line."""

    def __init__(self, container: App, config: MailboxConfig, say: Say | None = None) -> None:
        self.container = container
        self.config = config
        self.say: Say = say or (lambda line: log.info("%s", line))
        self.refused: str | None = None
        self.crashed: str | None = None  # an unexpected error that ended a folder's watch
        self.watchers: list[FolderWatcher] = []

    @classmethod
    def from_settings(cls, container: App) -> Mailbox | None:
        """The mailbox IMAP_URL names, or None when it is unset."""
        url = container.settings.imap_url
        if url is None:
            return None
        return cls(container, parse_mailbox_url(url.get_secret_value()))

    def lock(self) -> LeaderLock:
        digest = hashlib.sha256(self.config.account.encode()).digest()
        key = int.from_bytes(digest[:7], "big")  # fits a bigint advisory key, distinct per account
        return leader_lock_for(
            self.container.engine, self.container.settings.crm_data_dir, key, f"mailbox-{digest.hex()[:12]}"
        )

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop`; raises MailboxRefused (after recording it) when the login is refused."""
        lock = self.lock()
        announced = False
        while not lock.try_acquire():
            if not announced:
                self.say(f"mailbox {self.config.where}: another process watches it; standing by")
                announced = True
            if stop.wait(STANDBY_CHECK_S):
                return
        try:
            self._run(stop)
        finally:
            lock.release()

    def _run(self, stop: threading.Event) -> None:
        sent = self._find_sent(stop)
        if stop.is_set():
            return
        folders = [(self.config.folder, "inbox")]
        if sent and sent != self.config.folder:
            folders.append((sent, "sent"))
        self.watchers = [
            FolderWatcher(self.container, self.config, folder, kind, stop, self.say)
            for folder, kind in folders
        ]
        self.say(f"mailbox {self.config.where}: watching " + ", ".join(folder for folder, _ in folders))
        threads = [
            threading.Thread(target=self._guarded, args=(w, stop), name=f"mailbox-{w.kind}", daemon=True)
            for w in self.watchers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.refused:
            raise MailboxRefused(self.refused)
        if self.crashed:  # the process running the watch says so and ends, rather than carry on deaf
            raise SurfaceFailed(self.crashed)

    def _guarded(self, watcher: FolderWatcher, stop: threading.Event) -> None:
        try:
            watcher.run()
        except MailboxRefused as exc:
            self.refused = str(exc)
            stop.set()
        except Exception as exc:  # an unexpected failure stops the watch loudly rather than half of it
            log.exception("mailbox watcher for %s stopped", watcher.folder)
            self.crashed = f"mailbox {self.config.where}: the watch of {watcher.folder} stopped: {exc}"
            try:  # /healthz fails on it, whichever process serves it
                positions.set_status(
                    self.container.engine, self.config.account, watcher.folder, "crashed", str(exc)
                )
            except SQLAlchemyError:
                log.warning("could not record that the watch of %s stopped", watcher.folder)
            stop.set()

    def _find_sent(self, stop: threading.Event) -> str | None:
        """IMAP_SENT or the server's \\Sent folder, connecting with backoff; None: no Sent to watch."""
        delay = BACKOFF_FIRST_S
        while not stop.is_set():
            try:
                with session(self.config) as client:
                    found = sent_folder(client, self.container.settings.imap_sent)
                if found is None:
                    self.say(
                        f"mailbox {self.config.where}: no folder flagged \\Sent; set IMAP_SENT to watch "
                        "your own replies"
                    )
                return found
            except MailboxRefused as exc:
                positions.set_status(
                    self.container.engine, self.config.account, self.config.folder, "refused", str(exc)
                )
                self.refused = str(exc)
                raise
            except RETRIED as exc:
                self.say(f"mailbox {self.config.where}: {exc}; trying again in {delay:.0f} s")
                if stop.wait(delay):
                    return None
                delay = min(delay * 2, BACKOFF_MAX_S)
        return None


def run_mailbox(container: App, stop: threading.Event) -> None:
    """Runner for `bot.surfaces` and `crm mail`: the App's mailbox until stop (nothing if unset)."""
    mailbox = container.mailbox
    if mailbox is not None:
        mailbox.run(stop)
