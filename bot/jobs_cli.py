"""`crm worker` and `crm jobs`: run the RQ worker; list, show and retry failed jobs; relay the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from bot.bootstrap import App
from bot.cli_base import app_or_exit, console, errors, freeze_startup_objects
from jobs.queue import JobInfo
from store import tables as t

jobs_app = typer.Typer(
    help="Failed jobs (list, show, retry) and the outbox backlog.", invoke_without_command=True
)

# How much of an error `crm jobs` shows per row; `crm jobs show` prints all of it.
ERROR_PREVIEW_CHARS = 80


def _redis_container() -> App:
    container = app_or_exit()
    if not container.settings.redis_url:
        errors.print(
            "[red]error:[/red] no REDIS_URL: jobs run in the `crm run` process and its failed jobs "
            "live there; set REDIS_URL to use `crm worker` and `crm jobs`"
        )
        raise typer.Exit(2)
    if not container.queue.ping():
        errors.print(f"[red]error:[/red] Redis at {container.settings.redis_url} does not answer")
        raise typer.Exit(2)
    return container


def worker(
    burst: Annotated[bool, typer.Option("--burst", help="exit when the queues are empty")] = False,
    fork: Annotated[
        bool, typer.Option("--fork", help="run each job in a forked work horse (RQ's Worker)")
    ] = False,
    relay: Annotated[bool, typer.Option("--relay/--no-relay", help="re-queue lost outbox rows")] = True,
    name: Annotated[str | None, typer.Option("--name", help="worker name shown by RQ")] = None,
) -> None:
    """Run an RQ worker on the project's queues (decisions, then signals, then housekeeping)."""
    import logging

    from jobs.worker import run_worker

    # One line per event worth knowing (a lost Redis, each reconnect attempt, a relayed backlog).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    container = _redis_container()
    assert container.settings.redis_url is not None
    container.queue_owed_work()  # what stopped processes left in the outbox, and handlers' catch-up
    freeze_startup_objects()
    run_worker(
        container,
        container.settings.redis_url,
        burst=burst,
        fork=fork,
        relay=relay,
        name=name,
    )


@jobs_app.callback()
def jobs_main(ctx: typer.Context) -> None:
    """Without a subcommand: list failed jobs."""
    if ctx.invoked_subcommand is None:
        list_jobs()


@jobs_app.command("list")
def list_jobs() -> None:
    """List failed jobs (newest first) and the outbox backlog."""
    container = _redis_container()
    failed = container.queue.failed_jobs()
    waiting, oldest = _outbox_backlog(container)
    if not failed:
        console.print("no failed jobs")
    else:
        table = Table("id", "job", "priority", "failed at", "error")
        for info in failed:
            table.add_row(
                info.id,
                _call(info),
                info.priority,
                info.ended_at.isoformat(timespec="seconds") if info.ended_at else "",
                _last_line(info.error)[:ERROR_PREVIEW_CHARS],
            )
        console.print(table)
    backlog = f"outbox: {waiting} event(s) not yet processed"
    console.print(backlog + (f", oldest since {oldest.isoformat(timespec='seconds')}" if oldest else ""))
    _print_refused(container)


def _print_refused(container: App) -> None:
    """Signals answered 202 that the log refused for good: they need a person."""
    from store.intake import refused

    rows = refused(container.engine)
    if not rows:
        return
    table = Table("signal", "type", "source", "accepted at", "error", title="signals the log refused")
    for row in rows:
        table.add_row(
            row["idempotency_key"],
            row["type"],
            row["source"],
            row["staged_at"].isoformat(timespec="seconds"),
            (row["error"] or "")[:ERROR_PREVIEW_CHARS],
        )
    console.print(table)
    console.print("fix the cause, then `crm jobs relay --refused` tries them again")


@jobs_app.command("show")
def show_job(job_id: Annotated[str, typer.Argument(help="a job id from `crm jobs list`")]) -> None:
    """Show one job: what it runs, its status and its last error in full."""
    container = _redis_container()
    info = container.queue.job(job_id)
    if info is None:
        errors.print(f"no job {job_id!r}")
        raise typer.Exit(1)
    console.print(f"id:           {info.id}")
    console.print(f"job:          {_call(info)}")
    console.print(f"priority:     {info.priority}")
    console.print(f"status:       {info.status}")
    console.print(f"enqueued at:  {info.enqueued_at.isoformat() if info.enqueued_at else '-'}")
    console.print(f"ended at:     {info.ended_at.isoformat() if info.ended_at else '-'}")
    console.print(f"retries left: {info.retries_left if info.retries_left is not None else 0}")
    if info.error:
        console.print("error:")
        console.print(info.error, markup=False, highlight=False)


@jobs_app.command("retry")
def retry_jobs(
    job_id: Annotated[str | None, typer.Argument(help="a failed job's id")] = None,
    retry_all: Annotated[bool, typer.Option("--all", help="retry every failed job")] = False,
) -> None:
    """Queue a failed job again with its retries restored (or every failed job with --all)."""
    if (job_id is None) == (not retry_all):
        errors.print("[red]error:[/red] give one job id, or --all")
        raise typer.Exit(2)
    container = _redis_container()
    ids = [job_id] if job_id is not None else [info.id for info in container.queue.failed_jobs()]
    missing = [one for one in ids if not container.queue.retry_failed(one)]
    console.print(f"{len(ids) - len(missing)} job(s) queued again")
    if missing:
        errors.print(f"not in the failed registry: {', '.join(missing)}")
        raise typer.Exit(1)


@jobs_app.command("relay")
def relay(
    older_than: Annotated[int, typer.Option("--older-than", help="seconds an outbox row has waited")] = 30,
    retry_refused_signals: Annotated[
        bool, typer.Option("--refused", help="first give the signals the log refused fresh attempts")
    ] = False,
) -> None:
    """Queue again every outbox row that has waited longer than --older-than seconds."""
    from jobs.relay import relay_outbox
    from store.intake import retry_refused

    container = _redis_container()
    if retry_refused_signals:
        console.print(f"{retry_refused(container.engine)} refused signal(s) get fresh attempts")
    count = relay_outbox(container, timedelta(seconds=older_than))
    console.print(f"{count} outbox row(s) handed to the queue")


def _outbox_backlog(container: App) -> tuple[int, datetime | None]:
    with container.engine.connect() as connection:
        row = connection.execute(select(func.count(), func.min(t.outbox.c.created_at))).one()
    return int(row[0]), row[1]


def _call(info: JobInfo) -> str:
    return f"{info.func}({', '.join(repr(a) for a in info.args)})"


def _last_line(error: str | None) -> str:
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
