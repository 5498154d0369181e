"""IMAP_URL and IMAP_SINCE, read once: where the operator's mailbox is and how far back a first sync looks.

Forms: `imaps://user:password@host[:993]/INBOX` (TLS from the first byte) or `imap://…[:143]/INBOX`
(STARTTLS required; `?starttls=off` only for a server on loopback, e.g. a test Dovecot). The user and
password are percent-encoded (`me%40example.com`). Query options: `idle=off` (poll every
IMAP_POLL_SECONDS even when the server offers IDLE), `timeout=` seconds, `cafile=` (a private CA).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORTS = {"imap": 143, "imaps": 993}
# Long enough for a slow server's answer to a FETCH of a batch, short enough to notice a dead link.
DEFAULT_TIMEOUT = 60.0
EXAMPLE = "imaps://me%40example.com:app-password@imap.example.com/INBOX"


class MailboxUrlError(ValueError):
    """IMAP_URL is malformed; the message says how to write it."""


@dataclass(frozen=True)
class MailboxConfig:
    """The parsed IMAP_URL (the password stays in here, never in a log line: see `where`)."""

    host: str
    port: int
    tls: bool  # imaps: TLS from the first byte
    starttls: bool  # imap: STARTTLS (required unless turned off on loopback)
    username: str
    password: str
    folder: str
    idle: bool
    timeout: float
    cafile: str | None

    @property
    def where(self) -> str:
        """The account as a log line may show it: user@host:port/folder, no password."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"

    @property
    def account(self) -> str:
        """The key positions are stored under: the same mailbox whatever the password."""
        return f"{self.username}@{self.host}:{self.port}"


def parse_mailbox_url(url: str) -> MailboxConfig:
    """Parse IMAP_URL; raises MailboxUrlError naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise MailboxUrlError(f"must look like {EXAMPLE} (or imap://… with STARTTLS)")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise MailboxUrlError("has a port that is not a number") from None
    if not parts.username or parts.password is None:
        raise MailboxUrlError(f"needs the user and password, percent-encoded: {EXAMPLE}")
    query = parse_qs(parts.query)
    starttls = parts.scheme == "imap" and _flag(query, "starttls", True)
    if parts.scheme == "imap" and not starttls and not _loopback(parts.hostname):
        raise MailboxUrlError(
            "imap:// without STARTTLS would send the password in clear; use imaps://, or "
            "starttls=off only for a server on loopback"
        )
    try:
        timeout = float(query.get("timeout", [DEFAULT_TIMEOUT])[0])
    except ValueError:
        raise MailboxUrlError("timeout= must be a number of seconds") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return MailboxConfig(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "imaps",
        starttls=starttls,
        username=unquote(parts.username),
        password=unquote(parts.password),
        folder=folder,
        idle=_flag(query, "idle", True),
        timeout=timeout,
        cafile=query.get("cafile", [None])[0],
    )


def since_date(value: str, today: date | None = None) -> date:
    """IMAP_SINCE as a date: a number of days back (`14`) or a day (`2026-01-31`)."""
    text = value.strip()
    today = today or datetime.now(UTC).date()
    if text.isdigit():
        return today - timedelta(days=int(text))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError("must be a number of days (e.g. 14) or a date as YYYY-MM-DD") from None


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    values = query.get(name)
    if not values:
        return default
    value = values[0].strip().lower()
    if value in {"on", "yes", "true", "1"}:
        return True
    if value in {"off", "no", "false", "0"}:
        return False
    raise MailboxUrlError(f"{name}= must be on or off, not {values[0]!r}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
