"""`crm demo`: a fresh demo data directory, the demo business, a mail sink, and a morning of signals."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from bot.bootstrap import StartupError, data_folder
from bot.demo.dataset import incoming, seed, story_overdue, story_renewal
from store.settings import Settings

if TYPE_CHECKING:
    from bot.bootstrap import App

# The demo is for looking around: a short undo window keeps "approve → sent" within a few seconds.
DEMO_UNDO_WINDOW_S = 5.0
# Seconds between the morning's beats, so each one's cards show before the next arrives.
SIGNAL_INTERVAL_S = 2.0
# The scans catch up on the rest of the day no sooner than this after the start: the morning's story
# stays on screen for its first half minute, not pushed away by a page of invoice reminders.
CATCH_UP_AFTER_S = 40.0
# How much of an arriving message the demo's "signal in" line quotes: enough to know what it is about.
SAID_CHARS = 90


def free_port() -> int:
    """A loopback port nobody listens on right now (aiosmtpd cannot bind port 0 and report it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MailSink:
    """A local SMTP server that prints what would have been sent, clearly labelled, and keeps a copy."""

    def __init__(self, console: Console, folder: Path) -> None:
        from aiosmtpd.controller import Controller

        self.console = console
        self.folder = folder
        self.numbers = itertools.count(1)
        folder.mkdir(parents=True, exist_ok=True)
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        # Named by the time it came and a count: two emails in the same millisecond are two files.
        path = self.folder / f"{int(time.time() * 1000)}-{next(self.numbers):04d}.eml"
        try:
            path.write_bytes(envelope.content)
        except OSError as exc:  # as a real server with a full disk: the sender may try again later
            with contextlib.suppress(OSError):  # a part written before the disk filled
                path.unlink(missing_ok=True)
            self.console.print(f"[red]demo mail sink: could not keep the email ({escape(str(exc))})[/red]")
            return "451 4.3.0 the demo mail sink could not store the message"
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        self.console.print(
            Panel(
                f"To: {message['To']}\nSubject: {message['Subject']}\n\n{text.strip()}",
                title="DEMO MAIL SINK — this email was NOT sent anywhere",
                subtitle=str(path),
                expand=False,
            )
        )
        return "250 OK"

    def start(self) -> str:
        self.controller.start()
        return f"smtp://127.0.0.1:{self.controller.port}"

    def stop(self) -> None:
        self.controller.stop()


def demo_settings(base: Settings, smtp_url: str) -> Settings:
    """The demo's settings: its own SQLite, Chroma and queue under <data dir>/demo, the mail sink, and
    an undo window of DEMO_UNDO_WINDOW_S unless UNDO_WINDOW_SECONDS is set."""
    folder = base.crm_data_dir / "demo"
    return base.model_copy(
        update={
            "crm_data_dir": folder,
            "database_url": None,
            "redis_url": None,
            "chroma_url": None,
            "smtp_url": smtp_url,
            # A window the operator set is theirs; unset, the demo's is short.
            "undo_window_seconds": base.undo_window_seconds
            if "undo_window_seconds" in base.model_fields_set
            else DEMO_UNDO_WINDOW_S,
        }
    )


def fresh_folder(base: Settings) -> Path:
    folder = base.crm_data_dir / "demo"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def hold_the_folder(base: Settings) -> IO[str] | None:
    """A lock on this data directory's demo, held while the file returned stays open (the process's
    life); None where another `crm demo` holds it, whose data a fresh folder would wipe under it.
    StartupError naming CRM_DATA_DIR where the folder cannot be written. A file system that keeps no
    locks (some network mounts) runs the demo unguarded rather than not at all."""
    lock = data_folder(base) / "demo.lock"
    try:
        held = open(lock, "w")  # noqa: SIM115 (held open on purpose)
    except OSError as exc:
        raise StartupError(
            f"CRM_DATA_DIR={base.crm_data_dir}: {lock.name} cannot be written ({exc.strerror or exc}); "
            "set CRM_DATA_DIR to a folder this user can write"
        ) from None
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        return None
    except OSError:
        pass
    return held


def play_signals(container: App, console: Console, interval: float = SIGNAL_INTERVAL_S) -> threading.Thread:
    """Play the morning on a thread: the scans find a renewal and an overdue invoice, the scripted
    signals arrive through the same path as POST /signals, then the scans catch up on the rest."""

    def play() -> None:
        from store.events import utcnow

        now, started = utcnow(), time.monotonic()
        beats = morning(container, now)
        for index, beat in enumerate(beats):
            time.sleep(interval)
            if index == len(beats) - 1:  # the catch-up
                time.sleep(
                    max(0.0, started + CATCH_UP_AFTER_S * interval / SIGNAL_INTERVAL_S - time.monotonic())
                )
            console.print(f"[dim]{escape(beat())}[/dim]")

    thread = threading.Thread(target=play, name="demo-signals", daemon=True)
    thread.start()
    return thread


def morning(container: App, now: datetime) -> list[Callable[[], str]]:
    """The demo's beats in order, each doing its part and saying what came in."""
    import json

    from bot.inbound.signals import accept_signal
    from bot.schedule import run_scans
    from jobs import scans
    from jobs.relay import relay_outbox

    store, today = container.store, now.astimezone(container.settings.timezone).date()

    def scanned(what: str, emit: Callable[[], int]) -> Callable[[], str]:
        def beat() -> str:
            emit()
            relay_outbox(container, older_than=timedelta(0))
            return f"scan: {what}"

        return beat

    def arrives(signal_type: str, key: str, body: dict[str, Any]) -> Callable[[], str]:
        def beat() -> str:
            accept_signal(container, json.dumps({"type": signal_type, **body}).encode(), key)
            who = body["customer"].get("name") or body["customer"].get("email")
            text = " ".join(str(body.get("text") or "").split())
            said = f': "{text[:SAID_CHARS]}{"…" if len(text) > SAID_CHARS else ""}"' if text else ""
            return f"signal in: {signal_type} from {who}{said}"

        return beat

    def catch_up() -> str:
        found = run_scans(container, now)
        return f"scan: {found} more renewals coming due, overdue invoices and quiet leads"

    renewal, overdue = story_renewal(today), story_overdue(today)
    return [
        scanned("a renewal coming due", lambda: scans.scan_renewals(store, today, now, only={renewal})),
        scanned("an overdue invoice", lambda: scans.scan_overdue(store, today, now, only={overdue})),
        *(arrives(*signal) for signal in incoming(now)),
        catch_up,
    ]


def seed_and_describe(container: App, console: Console) -> None:
    written = seed(container.store)
    console.print(
        f"Demo business seeded ({written} events): 40 customers, renewals coming due, overdue invoices.\n"
        "Incoming signals follow; each proposal shows its commands (approve / edit / reject / why …).\n"
        "Try: /pending · /customer acme · /digest · /help"
    )
