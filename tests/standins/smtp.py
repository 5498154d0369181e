"""A real SMTP server on loopback (aiosmtpd) for the connector and crash tests.

Options: STARTTLS with a throwaway certificate, AUTH with one user, a delay before answering DATA
(slow server), a pause on DATA that holds the answer until the test releases it (the executor can
be killed in the middle of the transaction), a connection cut while DATA is under way, and an idle
timeout after which the server closes a quiet connection. A message counts as received only once the
server's 250 could be sent: when the client vanished while the server was paused, it never heard 250,
and the stand-in behaves like a server that drops such a message. `connections` counts the SMTP
sessions clients opened and `quits` those they ended with QUIT; a stand-in given the `port` of a
stopped one is that server restarted.
"""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (openssl CLI): (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class _Handler:
    data_delay: float = 0.0
    pause_on_data: bool = False
    drop_on_data: bool = False
    refuse_recipient: str | None = None  # the reply to every RCPT TO, e.g. "550 5.1.1 no such user"
    defer_senders: int = 0  # MAIL FROMs answered "451" before one is accepted
    messages: list[Message] = field(default_factory=list)
    dropped: int = 0
    connections: int = 0
    quits: int = 0
    data_started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.defer_senders:
                self.defer_senders -= 1
                return "451 4.3.2 try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_recipient:
            return self.refuse_recipient
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_started.set()
        if self.drop_on_data:
            server.transport.abort()
            with self.lock:
                self.dropped += 1
            return "451 connection cut"
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.pause_on_data:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
            except asyncio.CancelledError:  # aiosmtpd cancels the handler when the client goes away
                with self.lock:
                    self.dropped += 1
                raise
            transport = getattr(server, "transport", None)
            if transport is None or transport.is_closing():
                with self.lock:
                    self.dropped += 1
                return "451 client went away"
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.quits += 1
        return "221 Bye"


class _CountingController(Controller):
    """Counts the connections clients open (aiosmtpd builds one SMTP instance per connection)."""

    def factory(self) -> SMTP:
        handler: _Handler = self.handler
        with handler.lock:
            handler.connections += 1
        return super().factory()


class SmtpStandin:
    """Start with `with SmtpStandin(...) as smtp:`; `smtp.url` is an SMTP_URL for the connector."""

    def __init__(
        self,
        *,
        cert: tuple[Path, Path] | None = None,
        auth: tuple[str, str] | None = None,
        data_delay: float = 0.0,
        pause_on_data: bool = False,
        drop_on_data: bool = False,
        refuse_recipient: str | None = None,
        defer_senders: int = 0,
        idle_timeout: float = 300.0,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.cert = cert
        self.auth = auth
        self.handler = _Handler(
            data_delay=data_delay,
            pause_on_data=pause_on_data,
            drop_on_data=drop_on_data,
            refuse_recipient=refuse_recipient,
            defer_senders=defer_senders,
        )
        kwargs: dict[str, Any] = {"timeout": idle_timeout}
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            kwargs.update(tls_context=context, require_starttls=True)
        if auth is not None:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=cert is not None
            )
        self.controller = _CountingController(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == self.auth
        return AuthResult(success=ok, handled=False)

    @property
    def url(self) -> str:
        scheme = "smtp+starttls" if self.cert else "smtp"
        creds = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        query = f"?cafile={self.cert[0]}&timeout=5" if self.cert else "?timeout=5"
        return f"{scheme}://{creds}127.0.0.1:{self.port}{query}"

    @property
    def messages(self) -> list[Message]:
        with self.handler.lock:
            return list(self.handler.messages)

    @property
    def connections(self) -> int:
        with self.handler.lock:
            return self.handler.connections

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]

    def __enter__(self) -> SmtpStandin:
        self.controller.start()
        with self.handler.lock:
            self.handler.connections = 0  # start() checks the server with a connection of its own
        return self

    def __exit__(self, *exc: object) -> None:
        self.handler.release.set()
        self.controller.stop()
