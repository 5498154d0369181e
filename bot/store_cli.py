"""`crm migrate`, `crm import customers`, `crm customer` and `crm replay`: the store's commands."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from bot.bootstrap import App
from bot.cli_base import app_or_exit, console, errors, finish_in_process_work, progress_bar
from bot.render import slice_text

import_app = typer.Typer(help="Import records from files.", no_args_is_help=True)


def migrate() -> None:
    """Create or upgrade the database schema."""
    container = app_or_exit()
    console.print(f"schema up to date at {container.engine.url.render_as_string(hide_password=True)}")


@import_app.command("customers")
def import_customers(file: Annotated[Path, typer.Argument(help="CSV with a header row")]) -> None:
    """Import customers from a CSV (name,email,company,phone,stage,mrr,renewal_date,notes)."""
    from store.importer import ImportFileError, check_text_file
    from store.importer import import_customers as run_import

    try:
        check_text_file(file)
    except ImportFileError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    container = app_or_exit()
    total = _count_lines(file)
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"importing {file.name}", total=total)
            report = run_import(container.store, file, lambda n: progress.advance(task, n))
        finish_in_process_work(container)
    except ImportFileError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        container.close()
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
    container = app_or_exit()
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


def replay(
    verify: Annotated[
        bool, typer.Option("--verify", help="compare a rebuild with the live projections")
    ] = False,
    memory: Annotated[
        bool, typer.Option("--memory", help="rebuild the customer memory collection (Chroma) instead")
    ] = False,
) -> None:
    """Rebuild every projection from the event log (or, with --verify, check them)."""
    from rich.markup import escape

    from store import replay as replaying
    from store.events import UnknownEventType

    container = app_or_exit()
    if memory:
        _replay_memory(container)
        return
    with progress_bar() as progress:
        task = progress.add_task("replaying the log", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            if verify:
                result = replaying.verify(container.engine, step)
            else:
                position = replaying.replay(container.engine, step)
        except UnknownEventType as exc:
            progress.stop()
            errors.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
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


def _replay_memory(container: App) -> None:
    """`crm replay --memory`: empty the memory collections and apply the whole log again."""
    from store.memory.client import MemoryUnavailable
    from store.memory.embeddings import ModelFileError

    try:
        position = container.memory.projection.rebuild(container.store)
        count = container.memory.count()
    except (MemoryUnavailable, ModelFileError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"memory rebuilt up to position {position}: {count} memories")
