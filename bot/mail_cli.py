"""`crm mail`: watch the operator's mailbox (IMAP_URL) in a process of its own (compose, Procfile).

`crm run` and `crm bot` watch it too; whichever starts first watches and the others stand by. Exits 2
with one line when IMAP_URL is unset or the server refuses the login; SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.markup import escape

from bot.cli_base import app_or_exit, errors
from bot.inbound.errors import SurfaceFailed
from jobs.connectors.imap import MailboxRefused


def mail(
    if_configured: Annotated[
        bool,
        typer.Option(
            "--if-configured",
            help="With IMAP_URL unset, say so and exit 0 (a compose service that stays stopped).",
        ),
    ] = False,
) -> None:
    """Watch the IMAP mailbox: customers' mail becomes signals, your own replies are seen."""
    container = app_or_exit()
    mailbox = container.mailbox
    if mailbox is None:
        container.close()
        if if_configured:
            print("nothing to do: IMAP_URL is not set")
            raise typer.Exit(0)
        errors.print(
            "[red]error:[/red] IMAP_URL is not set; set it to your mailbox, e.g. "
            "imaps://me%40example.com:app-password@imap.example.com/INBOX"
        )
        raise typer.Exit(2)
    mailbox.say = lambda line: errors.print(escape(line), highlight=False)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    container.start_jobs()  # the embedded default: this process handles what it records
    try:
        mailbox.run(stop)
    except MailboxRefused as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except SurfaceFailed as exc:  # the watch ended on an unexpected error (logged with its traceback)
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        container.close()
