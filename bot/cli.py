"""The `crm` command line (DESIGN.md public interface). Commands translate; the work is elsewhere."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.bootstrap import Container, StartupError, bootstrap
from bot.render import slice_text
from store.settings import SettingsError

app = typer.Typer(help="chatops-crm: a solo operator's CRM, run from chat.", no_args_is_help=True)
import_app = typer.Typer(help="Import records from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
console = Console()
errors = Console(stderr=True)


def _container() -> Container:
    try:
        return bootstrap()
    except (SettingsError, StartupError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _progress() -> Progress:
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
    import os

    return os.environ.get("CRM_PROGRESS") == "1"


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    container = _container()
    console.print(f"schema up to date at {container.engine.url.render_as_string(hide_password=True)}")


@import_app.command("customers")
def import_customers(file: Annotated[Path, typer.Argument(help="CSV with a header row")]) -> None:
    """Import customers from a CSV (name,email,company,phone,stage,mrr,renewal_date,notes)."""
    from store.importer import ImportFileError
    from store.importer import import_customers as run_import

    container = _container()
    total = _count_lines(file)
    try:
        with _progress() as progress:
            task = progress.add_task(f"importing {file.name}", total=total)
            report = run_import(container.store, file, lambda n: progress.advance(task, n))
    except ImportFileError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for name in report.unknown_columns:
        errors.print(f"[yellow]warning:[/yellow] unknown column {name!r} ignored")
    for error in report.errors:
        errors.print(f"[red]{file}:{error.line}:[/red] {error.reason}")
    console.print(
        f"{report.rows} rows: {report.imported} imported, {report.unchanged} unchanged, "
        f"{len(report.errors)} bad"
    )
    if report.errors:
        raise typer.Exit(1)


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return max(sum(1 for _ in handle) - 1, 0)
    except OSError:
        return None


@app.command()
def customer(
    name: Annotated[str, typer.Argument(help="name, email, domain or id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the slice as JSON")] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="YYYY-MM-DD: the customer as of that day")
    ] = None,
) -> None:
    """Print a customer's context slice, now or as of a past date."""
    from store.slice import build_slice, closest_names, find_customers

    day = None
    if as_of is not None:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            errors.print(f"[red]error:[/red] --as-of {as_of!r} is not a date as YYYY-MM-DD")
            raise typer.Exit(2) from None
    container = _container()
    with container.engine.connect() as connection:
        matches = find_customers(connection, name)
        if not matches:
            near = closest_names(connection, name)
            hint = f"; closest: {', '.join(near)}" if near else ""
            errors.print(f"no customer matches {name!r}{hint}")
            raise typer.Exit(1)
        if len(matches) > 1 and not as_json:
            console.print(f"{len(matches)} customers match {name!r}:")
            for match in matches:
                console.print(f"  {match['id']}  {match['name'] or ''}  {match['company'] or ''}")
            raise typer.Exit(0)
        slices = [build_slice(connection, match["id"], as_of=day) for match in matches]
    found = [s for s in slices if s is not None]
    if as_json:
        payload = found[0] if len(found) == 1 else found
        if isinstance(payload, list):
            sys.stdout.write("[" + ",".join(s.model_dump_json() for s in payload) + "]\n")
        else:
            sys.stdout.write(payload.model_dump_json(indent=2) + "\n")
        return
    if not found:
        errors.print(f"{matches[0]['name']} had no record as of {as_of}")
        raise typer.Exit(1)
    console.print(Panel("\n".join(slice_text(found[0])), title=found[0].id, expand=False))


@app.command()
def replay(
    verify: Annotated[
        bool, typer.Option("--verify", help="compare a rebuild with the live projections")
    ] = False,
) -> None:
    """Rebuild every projection from the event log (or, with --verify, check them)."""
    from store import replay as replaying

    container = _container()
    with _progress() as progress:
        task = progress.add_task("replaying the log", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        if verify:
            result = replaying.verify(container.engine, step)
        else:
            position = replaying.replay(container.engine, step)
    if not verify:
        console.print(f"projections rebuilt up to position {position}")
        return
    if result.ok:
        console.print(f"projections match the log up to position {result.position}")
        return
    errors.print(
        f"[red]{len(result.differences)} difference(s)[/red] between the live projections and the log:"
    )
    for difference in result.differences[:50]:
        errors.print("  " + difference.describe())
    if len(result.differences) > 50:
        errors.print(f"  … and {len(result.differences) - 50} more")
    errors.print("fix: run `crm replay` to rebuild the projections from the log")
    raise typer.Exit(1)


def _not_built(command: str, issue: str) -> None:
    errors.print(f"`crm {command}` is not built yet ({issue}).")
    raise typer.Exit(3)


@app.command()
def run() -> None:
    """Everything in one process: web, chat surfaces, worker, scheduler; terminal chat if no chat app."""
    _not_built("run", "the run/demo issue")


@app.command()
def demo() -> None:
    """`crm run` on a fresh demo database with sample customers and incoming signals."""
    _not_built("demo", "the run/demo issue")


@app.command()
def web() -> None:
    """Serve the HTTP app (signals, webhooks, Slack and Telegram endpoints, health, metrics) on PORT."""
    _not_built("web", "the intake issue")


@app.command(name="bot")
def bot_command() -> None:
    """Run the chat surfaces (Slack Socket Mode, Telegram polling)."""
    _not_built("bot", "the Slack and Telegram issues")


@app.command()
def worker() -> None:
    """Run a job worker on the project's queues."""
    _not_built("worker", "the intake issue")


@app.command()
def scheduler() -> None:
    """Run the scheduler: digest, renewal and overdue scans, expiry, the outbox relay."""
    _not_built("scheduler", "the run/demo issue")


@app.command()
def signal(source: Annotated[str, typer.Argument(help="FILE.json, or - for stdin")]) -> None:
    """Send one signal through the same path as POST /signals."""
    _not_built("signal", "the intake issue")


@app.command()
def digest(
    post: Annotated[bool, typer.Option("--post", help="post to the configured surfaces")] = False,
) -> None:
    """Print today's digest (or post it)."""
    _not_built("digest", "the run/demo issue")


@app.command()
def jobs() -> None:
    """List, show and retry failed jobs."""
    _not_built("jobs", "the intake issue")


def main() -> None:
    app()
