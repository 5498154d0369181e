"""`crm run` and `crm demo`: everything in one process.

The web app (uvicorn on a thread), the chat surfaces (Slack Socket Mode, Telegram polling), the
in-process worker when there is no REDIS_URL, the scheduler, and the terminal console when no chat app
is configured or stdin is not a terminal. Fed from a pipe, the console reads to the end, then waits for
the work it started (queued jobs, sends waiting out their undo window) before everything stops; with
CRM_CONSOLE=serve (the container image) end of input closes only the console and the process serves on.
SIGINT/SIGTERM stop it cleanly: running jobs finish, queued ones stay in the outbox for the next start.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bot.terminal import run_console

if TYPE_CHECKING:
    from bot.bootstrap import App

log = logging.getLogger(__name__)

# The longest `crm run` waits at end of input for work still in flight (undo windows, retries).
DRAIN_LIMIT_S = 600.0
IN_FLIGHT_STATES = ("approved", "executing")
# Where `crm run` listens when HOST is unset: this machine only (it is one person's process).
LOCAL_HOST = "127.0.0.1"


class WebServer:
    """uvicorn on a background thread, stoppable."""

    def __init__(self, container: App) -> None:
        import uvicorn

        from bot.web import create_app

        self.host = container.settings.host or LOCAL_HOST
        config = uvicorn.Config(
            create_app(container), host=self.host, port=container.settings.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        # uvicorn installs no signal handlers off the main thread; ours stop everything together.
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    def start(self, timeout: float = 10.0) -> bool:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def chat_configured(container: App) -> bool:
    settings = container.settings
    return bool(settings.slack_bot_token or settings.telegram_bot_token)


def wants_console(container: App, stdin: IO[str]) -> bool:
    """Whether `crm run` reads commands: not with CRM_CONSOLE=off; otherwise when no chat app is
    configured or stdin is not a terminal (a pipe, a script)."""
    if container.settings.console_mode == "off":
        return False
    return not chat_configured(container) or not stdin.isatty()


def in_flight(container: App) -> int:
    """Approved actions not finished yet (waiting out the undo window or executing)."""
    from store import lifecycle

    with container.engine.connect() as connection:
        return len(lifecycle.in_state(connection, *IN_FLIGHT_STATES, limit=1000))


def wait_for_work(
    container: App,
    limit: float = DRAIN_LIMIT_S,
    interrupted: threading.Event | None = None,
    say: Callable[[str], Any] | None = None,
) -> bool:
    """Wait until the queue has nothing running, due or waiting to be retried and no approved action is
    in flight; False on timeout or once `interrupted` is set. A job queued for later (a snoozed
    proposal's wake-up) is not waited for: the minute sweep brings such work back on the next start.
    `say` is told once what it waits for, when it has to wait."""
    deadline = time.monotonic() + limit
    join = getattr(container.queue, "join", None)
    told = False
    while time.monotonic() < deadline and not (interrupted is not None and interrupted.is_set()):
        slice_ = min(1.0, max(deadline - time.monotonic(), 0.01))  # short: an interrupt is heard
        idle = join is None or join(timeout=slice_, delayed="retries")
        flying = in_flight(container)
        if idle and flying == 0:
            return True
        if not told and say is not None:
            waiting = f"{flying} approved action(s) to finish" if flying else "queued work to finish"
            say(f"waiting for {waiting} before stopping (Ctrl-C to stop now; it resumes on the next start)")
            told = True
        if idle:
            time.sleep(0.2)
    return False


def wait_for_queue(container: App, limit: float) -> bool:
    """Wait until the in-process queue has run everything due now (not what waits for a later time)."""
    join = getattr(container.queue, "join", None)
    return True if join is None else bool(join(timeout=limit, delayed=False))


def run(
    container: App,
    *,
    stdin: IO[str] | None = None,
    console: Console | None = None,
    before_console: Callable[[App], Any] | None = None,
) -> int:
    """Run everything until end of input (console) or SIGINT/SIGTERM; returns the exit status."""
    from bot.schedule import build_scheduler
    from bot.surfaces import run_surfaces

    stdin = stdin or sys.stdin
    console = console or Console(highlight=False)
    use_console = wants_console(container, stdin)
    serve_on = container.settings.console_mode != "auto"  # end of input does not end the process
    cards = container.add_terminal_surface(console).cards if use_console else None
    stop = threading.Event()
    input_ended = threading.Event()
    interrupted = threading.Event()  # SIGINT or SIGTERM: also ends the wait for work in flight
    _on_signals(stop, interrupted)

    container.start_jobs()
    web = WebServer(container)
    if not web.start():
        console.print(
            f"[red]error:[/red] the web app could not listen on {web.host}:{container.settings.port}; "
            "set PORT (or HOST)"
        )
        return 2
    scheduler = build_scheduler(container)
    scheduler.start()
    surface_failures: dict[str, str] = {}

    def serve_surfaces() -> None:
        surface_failures.update(run_surfaces(container, stop).failed)

    surfaces = threading.Thread(target=serve_surfaces, name="surfaces", daemon=True)
    surfaces.start()
    address = f"http://{web.host}:{container.settings.port}"
    console.print(f"chatops-crm is running · web on {address}", markup=False)
    try:
        if before_console is not None:
            before_console(container)
        if use_console:

            def read_console() -> None:
                try:
                    run_console(container.commands, console, stdin, cards)
                finally:
                    if serve_on:
                        closed = f"end of input: the console is closed; still serving on {address}"
                        console.print(closed, markup=False)
                    else:
                        input_ended.set()
                        stop.set()

            threading.Thread(target=read_console, name="console", daemon=True).start()
        stop.wait()
        say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
        if input_ended.is_set() and not wait_for_work(container, interrupted=interrupted, say=say):
            console.print("[yellow]stopping with work still in flight; it resumes on the next start[/yellow]")
    finally:
        scheduler.stop()
        stop.set()
        web.stop()
        surfaces.join(timeout=10)
        stop_queue = getattr(container.queue, "stop", None)
        if stop_queue is not None:
            stop_queue(timeout=30)
    for message in surface_failures.values():
        console.print(f"[red]error:[/red] {escape(message)}")
    return 1 if surface_failures else 0


def _on_signals(stop: threading.Event, interrupted: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def stopped(*_: Any) -> None:
        interrupted.set()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopped)
