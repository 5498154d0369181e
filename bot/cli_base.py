"""What every `crm` command shares: the consoles, the settings and the composition root, progress bars,
and waiting for in-process work. Each failure here is one line and an exit status, never a traceback."""

from __future__ import annotations

import gc
import os

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.bootstrap import App, StartupError, bootstrap
from store.settings import Settings, SettingsError, load_settings

# The operator at the terminal of `crm run` / `crm demo` (OPERATORS form: surface:id).
TERMINAL_OPERATOR = "terminal:local"

console = Console()
# soft_wrap: an error is one line however narrow the terminal (the terminal wraps it, not Rich).
errors = Console(stderr=True, soft_wrap=True)


def settings_or_exit() -> Settings:
    """The settings, or exit 2 with one line naming the setting that is wrong."""
    try:
        return load_settings()
    except SettingsError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def app_or_exit(settings: Settings | None = None, *, console_operator: bool = False) -> App:
    """The composition root for a command; with console_operator the person at the terminal may decide."""
    settings = settings or settings_or_exit()
    if console_operator:
        # Whoever runs `crm run` at a terminal owns the process and its database: they are an operator.
        operators = ",".join(filter(None, [settings.operators, TERMINAL_OPERATOR]))
        settings = settings.model_copy(update={"operators": operators})
    try:
        return bootstrap(settings)
    except (SettingsError, StartupError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def progress_bar() -> Progress:
    """A progress bar on stderr, shown at a terminal (or with CRM_PROGRESS=1)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=False,
        disable=not errors.is_terminal and not _force_progress(),
    )


def _force_progress() -> bool:
    return os.environ.get("CRM_PROGRESS") == "1"


# How long a short command (`crm signal`, `crm import`) waits for the handling of what it appended
# on the embedded default before leaving the rest to the next process (its outbox rows wait for it).
IN_PROCESS_WAIT_S = 120.0


def finish_in_process_work(container: App) -> None:
    """On the embedded default, handle what this command appended before it exits, as `POST /signals`
    would: the handlers run here (memory, agents, posting to the configured surfaces). With REDIS_URL
    the workers do it. Whatever is left when the wait ends stays in the outbox for the next process."""
    if not container.runs_jobs_in_process:
        return
    from bot.run import wait_for_queue

    with errors.status("handling the new events (memory, agents)…"):
        done = wait_for_queue(container, IN_PROCESS_WAIT_S)
    if not done:
        errors.print("[yellow]still handling; the next `crm run` or `crm worker` finishes it[/yellow]")


def freeze_startup_objects() -> None:
    """Move everything loaded at start out of the garbage collector's sight, before a long-running
    command (`crm web`, `crm worker`, `crm run`) gets to work.

    The process holds hundreds of thousands of long-lived objects (SQLAlchemy, pydantic, the agents)
    that every full collection would walk: under load those pauses were the slowest 1% of requests
    (p99 85 -> 26 ms in bench/signals_bench.py), and a worker's were 76-128 ms each. They live as long
    as the process: nothing to reclaim.
    """
    gc.collect()
    gc.freeze()
