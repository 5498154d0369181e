"""A real Dovecot IMAP server on loopback for the mailbox tests, with its own config in a temp directory.

Debian's `dovecot-imapd` (installed by `.ci/run`). Any user logs in with the password `secret`; each
user is an empty Maildir, so a test takes a fresh mailbox by taking a fresh user name. Dovecot runs in
the foreground (`-F`) as a child with stdio on /dev/null (a daemon holding the test's stdout pipe would
keep a caller waiting forever), and is stopped by its PID. Its login processes refuse to run as root,
so they run as `dovenull` and the mail as `dovecot`; as an ordinary user everything runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from imapclient import IMAPClient

PASSWORD = "secret"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
INSTALL_HINT = "install it with `apt-get install -y dovecot-imapd` (.ci/run does)"

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{tmp}/mail/%u
default_login_user = {login_user}
default_internal_user = {internal_user}
mail_uid = {mail_user}
mail_gid = {mail_group}
first_valid_uid = 0
mail_max_userip_connections = 200
imap_idle_notify_interval = 1 secs
service anvil {{
  chroot =
  # No auth penalty: the tests' deliberate wrong passwords would delay every later login by seconds.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={tmp}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
"""


class DovecotMissing(RuntimeError):
    """Dovecot is not installed, or does not start; the message says how to fix it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dovecot:
    """One Dovecot process; `start`, `stop` (the port stays reserved for a restart), `url(user)`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._users = 0

    def start(self) -> None:
        if not Path(DOVECOT).exists():
            raise DovecotMissing(f"Dovecot is not installed ({DOVECOT} missing); {INSTALL_HINT}")
        root = os.geteuid() == 0
        me = pwd.getpwuid(os.geteuid()).pw_name
        for sub in ("run", "state", "mail"):
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        if root:
            shutil.chown(self.tmp / "mail", "dovecot", "dovecot")
        config = self.tmp / "dovecot.conf"
        config.write_text(
            CONFIG.format(
                tmp=self.tmp,
                port=self.port,
                password=PASSWORD,
                login_user="dovenull" if root else me,
                internal_user="dovecot" if root else me,
                mail_user="dovecot" if root else me,
                mail_group="dovecot" if root else me,
            )
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `stop` ends the imap children too
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DovecotMissing(f"Dovecot exited at start: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise DovecotMissing(f"Dovecot did not answer on port {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        # The imap processes serving open connections outlive a master stopped alone: a server going
        # down drops its clients, so the whole group (this server's processes only) is ended.
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # any child still there
        self.process = None

    def log_tail(self) -> str:
        path = self.tmp / "dovecot.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def new_user(self, prefix: str = "op") -> str:
        """A user name no test used yet: an empty mailbox."""
        self._users += 1
        return f"{prefix}{self._users}-{os.getpid()}@example.com"

    def url(self, user: str, folder: str = "INBOX", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"starttls": "off", **options}.items())
        return f"imap://{user.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{self.port}/{folder}?{query}"

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        client.login(user, PASSWORD)
        return client


def message(
    sender: str = "Ada Lovelace <ada@customer.example>",
    to: str = "op@example.com",
    subject: str = "Question about pricing",
    body: str = "Hello, how much is the team plan?",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    when: datetime | None = None,
) -> bytes:
    """A plain customer email as bytes, ready to APPEND."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(when or datetime.now(UTC))
    mail["Message-ID"] = message_id or make_msgid(domain="customer.example")
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = in_reply_to
    mail.set_content(body)
    return mail.as_bytes()


@contextlib.contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    """A started Dovecot in a directory of its own, stopped and removed afterwards.

    Not under pytest's temp root: that is private to root, and Dovecot's mail processes run as
    `dovecot`.
    """
    directory = Path(tempfile.mkdtemp(prefix="crm-dovecot-"))
    directory.chmod(0o755)
    server = Dovecot(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
