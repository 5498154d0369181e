"""The operator's IMAP mailbox (IMAP_URL), through imapclient: log in, find Sent, append a copy.

imapclient (not aioimaplib or imap-tools): it is synchronous like every other connector and the
threads that run them, it speaks IDLE (`idle`, `idle_check`, `idle_done`), UIDPLUS and SPECIAL-USE
(`find_special_folder`), parses FETCH responses into Python values, and is maintained (4.x, 2026).
imap-tools wraps imaplib with a higher-level API that hides the UIDVALIDITY and raw-bytes details the
watcher depends on; aioimaplib would put one asyncio loop beside the threads for one connector.

The bot never deletes, moves or expunges: it reads with BODY.PEEK (leaving \\Seen alone), appends to
Sent, and at most sets a keyword where the folder allows keywords.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_errors
from imapclient.imapclient import SENT

from store.mailbox_url import MailboxConfig

log = logging.getLogger(__name__)

# Flag set on the copy of a sent reply: the operator has obviously read what they sent.
SEEN = b"\\Seen"


class MailboxError(RuntimeError):
    """The mailbox could not be used; the message names the setting and the server's answer."""


class MailboxRefused(MailboxError):
    """The server refused the login: retrying with the same IMAP_URL cannot help."""


class MailboxUnreachable(MailboxError):
    """The server could not be reached or dropped the connection: try again later."""


# What a dropped or refused connection raises, from the socket up through imapclient.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ssl.SSLError,
    socket.timeout,
    imap_errors.IMAPClientAbortError,
    imap_errors.IMAPClientError,
)


def connect(config: MailboxConfig) -> IMAPClient:
    """A logged-in client; raises MailboxRefused (wrong credentials) or MailboxUnreachable."""
    context = ssl.create_default_context(cafile=config.cafile)
    try:
        client = IMAPClient(
            config.host,
            port=config.port,
            ssl=config.tls,
            ssl_context=context if config.tls else None,
            timeout=config.timeout,
        )
    except CONNECTION_ERRORS as exc:
        raise MailboxUnreachable(
            f"cannot reach the IMAP server at {config.host}:{config.port}: {exc}"
        ) from None
    try:
        if config.starttls:
            client.starttls(context)
        client.login(config.username, config.password)
    except imap_errors.LoginError as exc:
        close(client)
        raise MailboxRefused(
            f"IMAP_URL: {config.host} refused the login for {config.username}: {_answer(exc)}"
        ) from None
    except CONNECTION_ERRORS as exc:
        close(client)
        raise MailboxUnreachable(
            f"IMAP server at {config.host}:{config.port} failed at login: {exc}"
        ) from None
    return client


@contextmanager
def session(config: MailboxConfig) -> Iterator[IMAPClient]:
    """`connect`, and log out however the block ends."""
    client = connect(config)
    try:
        yield client
    finally:
        close(client)


def close(client: IMAPClient) -> None:
    """Log out, or drop the socket if the server is gone already."""
    try:
        client.logout()
    except Exception:  # the connection may be half-dead; logging out is a courtesy
        try:
            client.shutdown()
        except Exception:
            log.debug("IMAP socket already closed")


def sent_folder(client: IMAPClient, configured: str | None) -> str | None:
    """IMAP_SENT, else the folder the server flags \\Sent (SPECIAL-USE) or names like one; None if none."""
    if configured:
        return configured
    found = client.find_special_folder(SENT)
    return str(found) if found else None


def keywords_allowed(selected: dict[bytes, Any]) -> bool:
    """Whether the selected folder takes keywords such as $CRMSeen (PERMANENTFLAGS holds \\*)."""
    return b"\\*" in tuple(selected.get(b"PERMANENTFLAGS") or ())


class SentCopies:
    """Appends a copy of each reply sent over SMTP to the Sent folder, so the mail client shows it."""

    def __init__(self, config: MailboxConfig, configured_sent: str | None) -> None:
        self.config = config
        self.configured_sent = configured_sent

    def append(self, message: bytes, message_id: str) -> str:
        """Append once: a copy with this Message-ID already there is left alone. Returns the folder."""
        with session(self.config) as client:
            folder = sent_folder(client, self.configured_sent)
            if folder is None:
                raise MailboxError(
                    f"{self.config.host} has no folder flagged \\Sent; "
                    "set IMAP_SENT to the Sent folder's name"
                )
            client.select_folder(folder, readonly=True)
            if client.search(["HEADER", "Message-ID", message_id]):
                return folder
            client.append(folder, message, flags=[SEEN])
            return folder


def _answer(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.removeprefix("b'").removesuffix("'") or "no reason given"
