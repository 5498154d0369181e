"""One folder of the operator's mailbox, watched: IDLE where the server offers it, polling otherwise.

Exactly once, across restarts: messages are taken in UID order, a fetched batch at a time; the batch
is staged for the log in the same transaction that stores its last UID as the folder's position
(store.mailbox_positions), per UIDVALIDITY, then sequenced into the log. A crash before that commit
fetches the batch again and the Message-ID keys make repeats no-ops; one after it leaves the batch
staged, for the next batch, the sequencing job or the relay to move into the log. A UIDVALIDITY never
seen re-scans from IMAP_SINCE with the same safety net. A first connect takes only the mail since
IMAP_SINCE, with a progress line. Never destructive: bodies are read with BODY.PEEK (\\Seen stays as
it was); the keyword $CRMSeen is set where the folder takes keywords, and nothing depends on it. A
dropped connection is retried with backoff; a refused login stops the watch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from bot.mailbox.intake import Fetched, take_all
from jobs.connectors.imap import (
    CONNECTION_ERRORS,
    MailboxRefused,
    MailboxUnreachable,
    keywords_allowed,
    session,
)
from store import mailbox_positions as positions
from store.mailbox_url import MailboxConfig, since_date

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# Messages fetched, and staged with the position in one transaction, per round trip: big enough to
# amortise the round trip and the commit, small enough that a crash re-fetches little and the position
# moves often. 250 and 500 measured no faster on a 2,000-message first sync: the FETCH is under 2% of
# its time (docs/benchmarks.md).
FETCH_BATCH = 100
# Servers drop an IDLE after about 30 minutes (RFC 2177): it is re-issued well before, and often
# enough that a connection that died without a word (a NAT timeout) is noticed within minutes.
IDLE_RENEW_S = 9 * 60
# How often a quiet IDLE looks at the stop flag: how long a shutdown may wait for the watcher.
IDLE_CHECK_S = 0.25
# Reconnect backoff after a dropped connection: 1 s, doubled up to this.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
# The keyword set on taken messages where the folder allows keywords (never relied upon).
CRM_SEEN = b"$CRMSeen"
# A progress line every this many messages of a first sync.
PROGRESS_EVERY = 500

Say = Callable[[str], None]
# Failures the watch rides out: the server or the database gone for a while.
RETRIED: tuple[type[BaseException], ...] = (MailboxUnreachable, DBAPIError, *CONNECTION_ERRORS)


class FolderWatcher:
    """Watches one folder until `stop` is set; `kind` is "inbox" (customers' mail) or "sent"."""

    def __init__(
        self,
        container: App,
        config: MailboxConfig,
        folder: str,
        kind: str,
        stop: threading.Event,
        say: Say | None = None,
    ) -> None:
        self.container = container
        self.config = config
        self.folder = folder
        self.kind = kind
        self.stop = stop
        self.say = say or (lambda line: log.info("%s", line))
        self.settings = container.settings
        self.engine = container.engine
        self.taken: dict[str, int] = {}

    # ---- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Watch until stopped; reconnect with backoff; raise MailboxRefused when the login is refused."""
        delay = BACKOFF_FIRST_S
        while not self.stop.is_set():
            try:
                with session(self.config) as client:
                    delay = BACKOFF_FIRST_S  # connected: a later drop starts the backoff afresh
                    self._watch(client)
                self._status("stopped", "the process watching it stopped")
                return
            except MailboxRefused as exc:
                self._status("refused", str(exc))
                raise
            except RETRIED as exc:
                reason = (str(exc) or type(exc).__name__).splitlines()[0]
                self._status("reconnecting", f"{reason}; trying again in {delay:.0f} s")
                self.say(f"mailbox {self.folder}: {reason}; reconnecting in {delay:.0f} s")
                if self.stop.wait(delay):
                    self._status("stopped", "the process watching it stopped")
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _watch(self, client: IMAPClient) -> None:
        selected = client.select_folder(self.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT") or 1)
        keywords = keywords_allowed(selected)
        self._status("syncing", f"uidvalidity {uidvalidity}")
        self.sync(client, uidvalidity, uidnext, keywords)
        idle = self.config.idle and client.has_capability("IDLE")
        mode = "watching" if idle else "polling"
        self._status(mode, "IDLE" if idle else f"every {self.settings.imap_poll_seconds:g} s")
        while not self.stop.is_set():
            if idle:
                self._idle(client)
            elif self.stop.wait(self.settings.imap_poll_seconds):
                return
            else:
                client.noop()
            if not self.stop.is_set():
                self.sync(client, uidvalidity, uidnext, keywords)

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until new mail (EXISTS), the renewal time, or stop."""
        client.idle()
        try:
            started = time.monotonic()
            while not self.stop.is_set() and time.monotonic() - started < IDLE_RENEW_S:
                responses = client.idle_check(timeout=IDLE_CHECK_S)
                if any(item and item[0] == b"BYE" for item in responses):
                    said = b" ".join(part for part in responses[0] if isinstance(part, bytes))
                    raise MailboxUnreachable(
                        f"the server closed the connection ({said.decode(errors='replace')})"
                    )
                if any(len(item) > 1 and item[1] == b"EXISTS" for item in responses):
                    return
        finally:
            client.idle_done()

    # ---- taking messages -------------------------------------------------------------------------

    def sync(self, client: IMAPClient, uidvalidity: int, uidnext: int, keywords: bool) -> int:
        """Take every message after the stored position (or since IMAP_SINCE); returns how many."""
        account = self.config.account
        last = positions.last_uid(self.engine, account, self.folder, uidvalidity)
        first = last is None
        if last is None:
            since = since_date(self.settings.imap_since)
            uids = sorted(int(uid) for uid in client.search(["SINCE", since]))
            rescan = positions.ever_synced(self.engine, account, self.folder)
            why = "UIDVALIDITY changed: re-scanning" if rescan else "first sync:"
            self.say(f"mailbox {self.folder}: {why} {len(uids)} message(s) since {since.isoformat()}")
        else:
            uids = sorted(int(uid) for uid in client.search(["UID", f"{last + 1}:*"]) if int(uid) > last)
        for start in range(0, len(uids), FETCH_BATCH):
            if self.stop.is_set():
                return start
            batch = uids[start : start + FETCH_BATCH]
            fetched = client.fetch(batch, ["BODY.PEEK[]"])
            self._take(batch, uidvalidity, fetched)
            if keywords:
                self._mark(client, batch)
            done = start + len(batch)
            if first and (done % PROGRESS_EVERY == 0 or done == len(uids)) and len(uids) > FETCH_BATCH:
                self.say(f"mailbox {self.folder}: {done}/{len(uids)} taken")
        if first and not uids:
            # Nothing since IMAP_SINCE: remember where the folder stands, so older mail is never taken.
            positions.advance(self.engine, account, self.folder, uidvalidity, max(uidnext - 1, 0))
        return len(uids)

    def _take(self, batch: list[int], uidvalidity: int, fetched: dict[int, dict[bytes, Any]]) -> None:
        """Record a fetched batch and store its last UID as the position, in one transaction."""
        found = []
        for uid in batch:
            where = f"{self.folder} (UID {uid}, UIDVALIDITY {uidvalidity})"
            raw = (fetched.get(uid) or {}).get(b"BODY[]")
            if isinstance(raw, bytes):
                found.append(Fetched(where, raw))
            else:
                log.info("%s vanished before it was fetched (moved or deleted by the operator)", where)

        def along(connection: Connection) -> None:
            positions.advance_in(connection, self.config.account, self.folder, uidvalidity, batch[-1])

        outcomes = take_all(self.container, self.kind, found, self.config.username, along=along)
        for outcome in outcomes:
            self.taken[outcome] = self.taken.get(outcome, 0) + 1

    def _mark(self, client: IMAPClient, uids: list[int]) -> None:
        try:
            client.add_flags(uids, [CRM_SEEN], silent=True)
        except CONNECTION_ERRORS as exc:  # a courtesy only: the position is what counts
            log.info("could not set %s in %s: %s", CRM_SEEN.decode(), self.folder, exc)

    def _status(self, state: str, detail: str) -> None:
        try:
            positions.set_status(self.engine, self.config.account, self.folder, state, detail)
        except Exception:  # the database being down must not stop the watch; health shows it anyway
            log.warning("could not record the mailbox status (%s: %s)", state, detail)
