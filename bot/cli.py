"""The `crm` command line (DESIGN.md public interface). Commands translate; the work is elsewhere."""

from __future__ import annotations

import gc
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot import jobs_cli, mail_cli
from bot.bootstrap import App, StartupError, bootstrap
from bot.render import slice_text
from store.settings import Settings, SettingsError, load_settings

# The operator at the terminal of `crm run` / `crm demo` (OPERATORS form: surface:id).
TERMINAL_OPERATOR = "terminal:local"

app = typer.Typer(help="chatops-crm: a solo operator's CRM, run from chat.", no_args_is_help=True)
import_app = typer.Typer(help="Import records from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
console = Console()
# soft_wrap: an error is one line however narrow the terminal (the terminal wraps it, not Rich).
errors = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _container(settings: Settings | None = None, *, console_operator: bool = False) -> App:
    """The composition root for a command; with console_operator the person at the terminal may decide."""
    settings = settings or _settings()
    if console_operator:
        # Whoever runs `crm run` at a terminal owns the process and its database: they are an operator.
        operators = ",".join(filter(None, [settings.operators, TERMINAL_OPERATOR]))
        settings = settings.model_copy(update={"operators": operators})
    try:
        return bootstrap(settings)
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
    from store.importer import ImportFileError, check_text_file
    from store.importer import import_customers as run_import

    try:
        check_text_file(file)
    except ImportFileError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    container = _container()
    total = _count_lines(file)
    try:
        with _progress() as progress:
            task = progress.add_task(f"importing {file.name}", total=total)
            report = run_import(container.store, file, lambda n: progress.advance(task, n))
        _finish_in_process_work(container)
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
    memory: Annotated[
        bool, typer.Option("--memory", help="rebuild the customer memory collection (Chroma) instead")
    ] = False,
) -> None:
    """Rebuild every projection from the event log (or, with --verify, check them)."""
    from rich.markup import escape

    from store import replay as replaying
    from store.events import UnknownEventType

    container = _container()
    if memory:
        _replay_memory(container)
        return
    with _progress() as progress:
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


def _not_built(command: str, issue: str) -> None:
    errors.print(f"`crm {command}` is not built yet ({issue}).")
    raise typer.Exit(3)


@app.command()
def run() -> None:
    """Everything in one process: web, chat surfaces, worker, scheduler; terminal chat if no chat app."""
    from bot.run import run as run_everything

    container = _container(console_operator=True)
    try:
        status = run_everything(container)
    finally:
        container.close()
    raise typer.Exit(status)


@app.command()
def demo() -> None:
    """`crm run` on a fresh demo database with sample customers and incoming signals."""
    from bot.demo import runner
    from bot.run import run as run_everything

    base = _settings()
    runner.fresh_folder(base)
    sink = runner.MailSink(console, base.crm_data_dir / "demo" / "sent-mail")
    smtp_url = sink.start()
    container = _container(runner.demo_settings(base, smtp_url), console_operator=True)

    def start_demo(container: App) -> None:
        runner.seed_and_describe(container, console)
        runner.play_signals(container, console)

    try:
        status = run_everything(container, before_console=start_demo)
    finally:
        container.close()
        sink.stop()
    raise typer.Exit(status)


# `crm web` listens on every interface unless HOST says otherwise: containers and Procfile hosts route
# traffic to the PORT they assign from outside the machine; every endpoint that writes is authenticated
# (invariant 5).
WEB_HOST = "0.0.0.0"


@app.command()
def web(
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log a line per request (off: a proxy in front usually logs them, and at hundreds of "
            "requests a second the lines cost a fifth of the server's time).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP app (signals, webhooks, Slack and Telegram endpoints, health, metrics) on PORT."""
    import uvicorn

    from bot.web import create_app

    container = _container()
    container.start_jobs()  # the embedded default: this process runs the jobs its requests queue
    try:
        web_app = create_app(container)
        _freeze_startup_objects()
        uvicorn.run(
            web_app,
            host=container.settings.host or WEB_HOST,
            port=container.settings.port,
            access_log=access_log,
        )
    finally:
        container.close()


def _freeze_startup_objects() -> None:
    """Move everything loaded at start out of the garbage collector's sight before serving.

    The process holds hundreds of thousands of long-lived objects (SQLAlchemy, pydantic, the agents)
    that every full collection would walk: under load those pauses were the slowest 1% of requests
    (p99 85 -> 26 ms in bench/signals_bench.py). They live as long as the process: nothing to reclaim.
    """
    gc.collect()
    gc.freeze()


NO_CHAT_SURFACE = (
    "no chat surface to run: set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) "
    "and/or TELEGRAM_BOT_TOKEN (polling; with TELEGRAM_WEBHOOK_URL `crm web` serves Telegram), "
    "and/or IMAP_URL (your mailbox)"
)


@app.command(name="bot")
def bot_command(
    if_configured: Annotated[
        bool,
        typer.Option(
            "--if-configured",
            help="With no chat app configured, say so and exit 0 (a compose service that stays stopped).",
        ),
    ] = False,
) -> None:
    """Run the chat surfaces (Slack Socket Mode, Telegram polling)."""
    from rich.markup import escape

    from bot.surfaces import configured_runners, run_surfaces

    container = _container()
    if not configured_runners(container):
        container.close()
        if if_configured:
            console.print(f"nothing to do: {NO_CHAT_SURFACE}", markup=False)
            raise typer.Exit(0)
        errors.print(f"[red]error:[/red] {escape(NO_CHAT_SURFACE)}")
        raise typer.Exit(2)
    container.start_jobs()
    try:
        result = run_surfaces(container)
    finally:
        container.close()
    for message in result.failed.values():
        errors.print(f"[red]error:[/red] {escape(message)}")
    if result.failed:
        raise typer.Exit(1)


app.command()(jobs_cli.worker)
app.command(name="mail")(mail_cli.mail)


@app.command()
def scheduler() -> None:
    """Run the scheduler: digest, renewal and overdue scans, expiry, the outbox relay."""
    import signal as signals
    import threading

    from bot.schedule import build_scheduler

    container = _container()
    container.start_jobs()
    stop = threading.Event()
    for signum in (signals.SIGINT, signals.SIGTERM):
        signals.signal(signum, lambda *_: stop.set())
    schedule = build_scheduler(container)
    schedule.start()
    console.print(
        f"scheduler running (digest at {container.settings.digest_at} {container.settings.crm_timezone})"
    )
    try:
        stop.wait()
    finally:
        schedule.stop()
        container.close()


@app.command()
def signal(
    source: Annotated[str, typer.Argument(help="FILE.json, or - for stdin")],
    key: Annotated[
        str | None,
        typer.Option("--id", help="idempotency key, like POST /signals' webhook-id (default: content hash)"),
    ] = None,
) -> None:
    """Send one signal through the same path as POST /signals; prints the event id and duplicate flag."""
    import json

    from rich.markup import escape

    from bot.inbound.errors import InboundRefused
    from bot.inbound.signals import accept_signal, content_key, webhook_key
    from bot.web.body import MAX_BODY_BYTES

    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        errors.print(f"[red]error:[/red] cannot read {source}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    if len(body) > MAX_BODY_BYTES:
        errors.print(f"[red]error:[/red] {source} is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        raise typer.Exit(1)
    container = _container()
    try:
        accepted = accept_signal(container, body, webhook_key(key) if key else content_key(body))
        _finish_in_process_work(container)
    except InboundRefused as exc:
        errors.print("[red]error:[/red]", escape(f"{source}: {exc.message}"))
        for problem in getattr(exc, "errors", []):
            errors.print(escape(f"  {problem['field'] or 'body'}: {problem['message']}"))
        raise typer.Exit(1) from None
    finally:
        container.close()
    sys.stdout.write(json.dumps({"event_id": accepted.event_id, "duplicate": accepted.duplicate}) + "\n")


# How long a short command (`crm signal`, `crm import`) waits for the handling of what it appended
# on the embedded default before leaving the rest to the next process (its outbox rows wait for it).
IN_PROCESS_WAIT_S = 120.0


def _finish_in_process_work(container: App) -> None:
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


@app.command()
def digest(
    post: Annotated[bool, typer.Option("--post", help="post to the configured surfaces")] = False,
) -> None:
    """Print today's digest (or post it)."""
    from rich.markup import escape

    from bot.schedule import post_digest

    container = _container()
    try:
        result = post_digest(container, post=post)
    finally:
        container.close()
    console.print("\n".join(result.lines()), highlight=False)
    if result.chart is not None:
        console.print(f"chart: {result.chart}")
    for surface, error in result.failed.items():
        errors.print(f"[red]error:[/red] the digest could not be posted to {surface}: {escape(error)}")
    if result.failed:
        raise typer.Exit(1)


@app.command("eval")
def eval_(
    file: Annotated[Path, typer.Argument(help="labelled signals, one JSON object a line")],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the scorecard as JSON")] = None,
) -> None:
    """Score the agents on labelled signals, on a throwaway database (nothing is sent)."""
    import json

    from bot.evaluate import EvalFileError, evaluate_file, render

    try:
        card = evaluate_file(file)
    except (OSError, EvalFileError) as exc:
        errors.print(f"crm eval: {exc}")
        raise typer.Exit(1) from None
    console.print(render(card), highlight=False)
    if json_out is not None:
        json_out.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


app.add_typer(jobs_cli.jobs_app, name="jobs")


def main() -> None:
    import os

    # onnxruntime (the embedding model) reports telemetry unless told not to before its first import.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    app()
