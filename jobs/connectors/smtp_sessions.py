"""Open SMTP sessions kept between sends, so an email does not pay for a connect, EHLO, STARTTLS and AUTH.

A session is lent to one thread at a time (`take`, then `give_back` after a clean send or `discard`
after anything else), so RQ's and the in-process queue's threads never share one. A kept session may
have been closed by the server meanwhile (its idle timeout, a restart): the caller finds out on its
next command, before anything was sent, and opens a new one. Sessions idle for IDLE_SECONDS are
closed with QUIT, and all of them by `close()` at shutdown.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time
from collections.abc import Callable

# Well inside the 5 minutes a server must wait for its client's next command (RFC 5321 4.5.3.2.7),
# and long enough to carry a burst of approvals; a quiet bot then holds no connection open.
IDLE_SECONDS = 30.0
# Sessions kept idle per connector: as many as sends run at once in one process (the in-process
# queue's threads, or one per RQ worker); a send beyond them opens its own and closes it after.
MAX_IDLE_SESSIONS = 4


class SessionPool:
    """This process's idle SMTP sessions to one server, newest first."""

    def __init__(
        self,
        connect: Callable[[], smtplib.SMTP],
        *,
        idle_seconds: float = IDLE_SECONDS,
        size: int = MAX_IDLE_SESSIONS,
    ) -> None:
        self.connect = connect
        self.idle_seconds = idle_seconds
        self.size = size
        self._idle: list[tuple[smtplib.SMTP, float]] = []  # (session, given back at)
        self._lock = threading.Lock()
        self._reaper: threading.Timer | None = None
        self._pid = os.getpid()

    def take(self) -> tuple[smtplib.SMTP, bool]:
        """A session for this thread alone, and whether it was kept from an earlier send."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: its parent's sessions are the parent's; closing or using them here
                # would end or garble the parent's transaction.
                self._idle, self._reaper, self._pid = [], None, os.getpid()
            stale = self._stale()
            kept = self._idle.pop()[0] if self._idle else None
        close_all(stale)
        if kept is not None:
            return kept, True
        return self.connect(), False

    def give_back(self, session: smtplib.SMTP) -> None:
        """Keep a session whose last transaction ended cleanly (250 to DATA) for the next send."""
        with self._lock:
            if len(self._idle) < self.size and self._pid == os.getpid():
                self._idle.append((session, time.monotonic()))
                self._arm()
                return
        close_session(session)

    def close(self) -> None:
        """QUIT every idle session (at shutdown)."""
        with self._lock:
            sessions = [session for session, _ in self._idle]
            self._idle = []
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
        close_all(sessions)

    def _stale(self) -> list[smtplib.SMTP]:
        """Remove and return the sessions idle for idle_seconds or more (the lock is held)."""
        limit = time.monotonic() - self.idle_seconds
        stale = [session for session, since in self._idle if since <= limit]
        self._idle = [(session, since) for session, since in self._idle if since > limit]
        return stale

    def _arm(self) -> None:
        """Close idle sessions in the background once they outstay idle_seconds (the lock is held)."""
        if self._reaper is None and self._idle:
            self._reaper = threading.Timer(self.idle_seconds, self._reap)
            self._reaper.daemon = True
            self._reaper.start()

    def _reap(self) -> None:
        with self._lock:
            self._reaper = None
            stale = self._stale()
            self._arm()
        close_all(stale)


def close_session(session: smtplib.SMTP) -> None:
    """QUIT politely; a session already gone is just closed."""
    try:
        session.quit()
    except (smtplib.SMTPException, OSError):
        session.close()


def close_all(sessions: list[smtplib.SMTP]) -> None:
    for session in sessions:
        close_session(session)
