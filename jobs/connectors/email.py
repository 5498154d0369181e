"""Outbound email over SMTP (`SMTP_URL`): STARTTLS, implicit TLS and AUTH; threaded replies.

SMTP cannot deduplicate, so this connector marks the point of no return: `handover()` is called right
before DATA. A failure before it provably sent nothing (retried); a server's explicit refusal of the
data also sent nothing; anything else after it (a dropped connection, a timeout waiting for 250) is
`OutcomeUnknown`, which the executor shows to the operator as "may have been sent". Where the executor
can, the handover is sent ahead (jobs.connectors.base.send_ahead), once the recipient is known to be
one a server could take; the message is built and the envelope (MAIL FROM, RCPT TO), which sends
nothing yet, goes out while it commits, so the worker's CPU is not idle waiting for the database. An
envelope the server refuses, or a draft the email library cannot write, then fails or is retried as
before, its handover already recorded (a retry of the same attempt goes on past it).

The SMTP session stays open between sends (jobs.connectors.smtp_sessions): a kept session the server
has closed meanwhile fails at MAIL FROM, before handover, and the email goes on over a new session.

SMTP_URL forms: `smtp://[user:pass@]host[:port]` (STARTTLS when the server offers it),
`smtp+starttls://…` (STARTTLS required), `smtps://…` (TLS from the first byte). Query options:
`timeout=<seconds>`, `cafile=<path>` (trust a private CA, e.g. in tests).
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from jobs.connectors.base import (
    ActionRequest,
    ActionResult,
    Handover,
    OutcomeUnknown,
    PermanentError,
    TransientError,
    send_ahead,
    wait_unless_taken_over,
)
from jobs.connectors.smtp_sessions import SessionPool, close_session

log = logging.getLogger(__name__)

# Long enough for a slow but healthy server, short enough that a hung one frees the worker well
# inside the action lease.
DEFAULT_TIMEOUT = 30.0
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
# Message-IDs kept in a reply's References: the thread's root and its latest ones are what mail clients
# thread on (RFC 5322 3.6.4 allows trimming the middle); a long thread must not grow the header forever.
MAX_REFERENCES = 20
# A Message-ID longer than this is not one a mail system made; it is dropped rather than sent on.
MAX_MESSAGE_ID = 250

# Line breaks and other control characters in a header value taken from a customer's mail: folded
# into one space so they can never start a new header (and the email package never refuses them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


class SmtpUrlError(ValueError):
    """SMTP_URL is malformed; the message says how."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    mode: str  # "smtp" | "smtp+starttls" | "smtps"
    username: str | None
    password: str | None
    timeout: float
    cafile: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse SMTP_URL."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise SmtpUrlError(f"SMTP_URL must look like smtp://user:pass@host:587, not {parts.scheme}://…")
        query = parse_qs(parts.query)
        try:
            timeout = float(query.get("timeout", [DEFAULT_TIMEOUT])[0])
        except ValueError:
            raise SmtpUrlError("SMTP_URL timeout= must be a number of seconds") from None
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            mode=parts.scheme,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
            cafile=query.get("cafile", [None])[0],
        )

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


def message_id_for(idempotency_key: str, mail_from: str) -> str:
    """A Message-ID derived from the action's idempotency key (the same on every attempt)."""
    domain = mail_from.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain.strip('>')}>"


def recipient(request: ActionRequest) -> str:
    """The send_email action's recipient; PermanentError when there is none a server could take."""
    to = str(request.params.get("to") or "").strip()
    if not can_take(to):
        raise PermanentError(f"no valid recipient (to={to!r})", retryable=False)
    return to


def can_take(to: str) -> bool:
    """Whether `to` is one recipient a server could take, bare (`ada@acme.test`) or named (`Ada
    <ada@acme.test>`); an operator's edit is checked the same way, so a sentence with an address in it
    is refused rather than sent to."""
    if not to or any(c in to for c in "\r\n"):
        return False
    found = getaddresses([to])
    if len(found) != 1:
        return False
    _, address = found[0]
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c.isspace() for c in address):
        return False
    bare = to.strip()
    return bare == address or (bare.endswith(">") and bare.count("<") == 1)


def build_message(request: ActionRequest, mail_from: str) -> EmailMessage:
    """The email for a send_email action, threaded onto the customer's last message when known."""
    params, draft = request.params, request.draft or {}
    to = recipient(request)
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = header_text(str(draft.get("subject") or params.get("subject") or ""))
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id_for(request.idempotency_key, mail_from)
    replied = message_ids([params.get("in_reply_to") or request.context.get("last_message_id")])
    references = message_ids(params.get("references") or request.context.get("references") or [])
    if replied:
        message["In-Reply-To"] = replied[0]
        if replied[0] not in references:
            references.append(replied[0])
    if references:
        kept = (
            references
            if len(references) <= MAX_REFERENCES
            else [references[0], *references[1 - MAX_REFERENCES :]]
        )
        message["References"] = " ".join(kept)
    message.set_content(draft.get("body") or params.get("body") or "")
    return message


def header_text(value: str) -> str:
    """value as one header line: line breaks and control characters folded into single spaces."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def message_ids(values: object) -> list[str]:
    """The Message-IDs (`<id@host>`) in values, in order, once each, with any line breaks removed.

    A customer's mail or a signal may carry ids with CR/LF or spaces inside, or without brackets; a
    reply must still go out, threaded on whatever ids can be recovered.
    """
    items = values if isinstance(values, list | tuple) else [values]
    found: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        text = _CONTROL.sub("", item).strip()
        ids = _MESSAGE_ID.findall(text)
        if not ids and text and not _SPACES.search(text) and "<" not in text and ">" not in text:
            ids = [f"<{text}>"]
        found += [one for one in ids if len(one) <= MAX_MESSAGE_ID and one not in found]
    return found


class SentCopies(Protocol):
    """Where a copy of each sent email goes so the operator's mail client shows it (their Sent folder)."""

    def append(self, message: bytes, message_id: str) -> str: ...


class EmailConnector:
    """send_email over SMTP; with `sent_copies` (IMAP_URL), a copy of each sent email lands in Sent."""

    name = "smtp"
    dedupes = False

    def __init__(self, smtp_url: str | None, mail_from: str, sent_copies: SentCopies | None = None) -> None:
        self.config = SmtpConfig.from_url(smtp_url) if smtp_url else None
        self.mail_from = mail_from
        self.sent_copies = sent_copies
        self.sessions = SessionPool(self._connect)

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        """Send the email; its Message-ID is the reference."""
        if self.config is None:
            raise PermanentError("SMTP_URL is not set; configure it to send email")
        recipient(request)  # an action that cannot be sent is refused before its handover
        # The message is built, and the envelope goes out, while the handover commits.
        ahead = send_ahead(handover)
        try:
            message = build_message(request, self.mail_from)
            content = message.as_bytes()
            client = self._open_transaction(message)
        except (TransientError, PermanentError):
            if ahead:
                wait_unless_taken_over(handover)  # nothing was sent: the error goes on up
            raise
        except Exception as exc:  # a bug, a draft the email library refuses, smtplib refusing what it
            # was given: still nothing sent
            log.exception("email for %s not sent", request.proposal_id)
            if ahead:
                wait_unless_taken_over(handover)
            raise PermanentError(f"not sent: unexpected error: {exc}") from exc
        try:
            handover()
            self._data(client, content)
        except BaseException:
            close_session(client)
            raise
        self.sessions.give_back(client)
        self._copy_to_sent(message, content)
        return ActionResult(reference=str(message["Message-ID"]))

    def close(self) -> None:
        """Close the kept SMTP sessions (at shutdown)."""
        self.sessions.close()

    def _open_transaction(self, message: EmailMessage) -> smtplib.SMTP:
        """A session with MAIL FROM and RCPT TO accepted for message, ready for DATA."""
        client, kept = self.sessions.take()
        try:
            return self._envelope_on(client, message)
        except TransientError:
            if not kept:
                raise
        # The kept session was closed by the server (idle timeout, restart) or is closing (421);
        # nothing was sent on it, so the email goes on over a new one.
        return self._envelope_on(self._connect(), message)

    def _envelope_on(self, client: smtplib.SMTP, message: EmailMessage) -> smtplib.SMTP:
        """client, with the envelope accepted; closed when it was not."""
        try:
            self._envelope(client, message)
        except BaseException:
            close_session(client)
            raise
        return client

    def _copy_to_sent(self, message: EmailMessage, content: bytes) -> None:
        """The email is sent whatever happens here: a copy that cannot be filed is logged, not retried
        by resending (the connector cannot take an email back)."""
        if self.sent_copies is None:
            return
        try:
            folder = self.sent_copies.append(content, str(message["Message-ID"]))
        except Exception as exc:  # IMAP down, no Sent folder: the reply went out all the same
            log.warning("sent %s, but could not file a copy in Sent: %s", message["Message-ID"], exc)
            return
        log.info("filed a copy of %s in %s", message["Message-ID"], folder)

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        assert config is not None
        try:
            if config.mode == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=config.timeout, context=config.tls_context()
                )
            else:
                client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            client.ehlo()
            if config.mode == "smtp+starttls" or (config.mode == "smtp" and client.has_extn("starttls")):
                client.starttls(context=config.tls_context())
                client.ehlo()
            if config.username:
                client.login(config.username, config.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(f"SMTP server refused the login ({exc.smtp_code})") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"SMTP server does not support what SMTP_URL asks for: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timed out, TLS failed
            raise TransientError(
                f"cannot reach the SMTP server at {config.host}:{config.port}: {exc}"
            ) from None
        return client

    def _envelope(self, client: smtplib.SMTP, message: EmailMessage) -> None:
        try:
            code, reply = client.mail(self.mail_from)
            if code != 250:
                _refused("sender", code, reply)
            code, reply = client.rcpt(str(message["To"]))
            if code not in (250, 251):
                _refused("recipient", code, reply)
        except UnicodeEncodeError:  # smtplib sends commands in ASCII unless asked for SMTPUTF8
            raise PermanentError(
                f"cannot send to {message['To']} from {self.mail_from}: an address beyond ASCII needs "
                "SMTPUTF8, which this connector does not use yet; write to an ASCII address",
                retryable=False,
            ) from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TransientError(f"SMTP connection lost before sending: {exc}") from None

    def _data(self, client: smtplib.SMTP, content: bytes) -> None:
        try:
            code, reply = client.data(content)
        except smtplib.SMTPDataError as exc:  # the server answered: it did not take the message
            _refused("message", exc.smtp_code, exc.smtp_error)
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise OutcomeUnknown(f"connection failed while the message was being sent: {exc}") from None
        if code != 250:
            _refused("message", code, reply)


def _refused(what: str, code: int, reply: bytes | str) -> None:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    if 400 <= code < 500:
        raise TransientError(f"SMTP server deferred the {what}: {code} {text}")
    raise PermanentError(f"SMTP server refused the {what}: {code} {text}")
