"""`crm bot`: run every configured chat surface's listener (Slack Socket Mode, Telegram polling) at once,
and the mailbox watch when IMAP_URL is set."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.inbound.errors import SurfaceFailed

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

Runner = Callable[["App", threading.Event], None]


@dataclass(frozen=True)
class SurfacesRun:
    """How `run_surfaces` ended: whether any surface was configured, and which failed and why."""

    ran: bool
    failed: dict[str, str] = field(default_factory=dict)


def configured_runners(container: App) -> dict[str, Runner]:
    """The surfaces this process should listen on, by name, given the settings."""
    settings = container.settings
    runners: dict[str, Runner] = {}
    if settings.slack_bot_token and settings.slack_app_token:
        from bot.slack import run_slack

        runners["slack"] = run_slack
    if settings.telegram_bot_token and not settings.telegram_webhook_url:
        from bot.telegram import run_telegram

        runners["telegram"] = run_telegram
    if settings.imap_url:
        from bot.mailbox import run_mailbox

        runners["mail"] = run_mailbox
    return runners


def run_surfaces(container: App, stop: threading.Event | None = None) -> SurfacesRun:
    """Run each configured surface on its own thread until SIGINT/SIGTERM, `stop`, or one fails."""
    runners = configured_runners(container)
    if not runners:
        return SurfacesRun(ran=False)
    stop = stop or threading.Event()
    failed: dict[str, str] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    threads = [
        threading.Thread(
            target=_guarded, args=(name, runner, container, stop, failed), name=f"surface-{name}"
        )
        for name, runner in runners.items()
    ]
    for thread in threads:
        thread.start()
    try:
        while not stop.wait(0.5):
            if not any(thread.is_alive() for thread in threads):
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return SurfacesRun(ran=True, failed=dict(failed))


def _guarded(
    name: str, runner: Runner, container: App, stop: threading.Event, failed: dict[str, str]
) -> None:
    """One surface failing (a refused token or login) stops the process rather than leaving half of it up."""
    from jobs.connectors.imap import MailboxRefused

    try:
        runner(container, stop)
    except (SurfaceFailed, MailboxRefused) as exc:  # expected: the message says what to fix, no traceback
        failed[name] = str(exc)
        stop.set()
    except Exception as exc:
        log.exception("%s surface stopped with an error", name)
        failed[name] = f"{name} stopped with an error: {exc}"
        stop.set()
