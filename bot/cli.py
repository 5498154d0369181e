"""The `crm` command line (DESIGN.md public interface). Commands translate; the work is elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bot import jobs_cli, mail_cli, store_cli
from bot.bootstrap import App, StartupError
from bot.cli_base import (
    app_or_exit,
    console,
    errors,
    finish_in_process_work,
    freeze_startup_objects,
    settings_or_exit,
)

app = typer.Typer(help="chatops-crm: a solo operator's CRM, run from chat.", no_args_is_help=True)
app.add_typer(store_cli.import_app, name="import")
app.command()(store_cli.migrate)
app.command()(store_cli.customer)
app.command()(store_cli.replay)


def _not_built(command: str, issue: str) -> None:
    errors.print(f"`crm {command}` is not built yet ({issue}).")
    raise typer.Exit(3)


@app.command()
def run() -> None:
    """Everything in one process: web, chat surfaces, worker, scheduler; terminal chat if no chat app."""
    from bot.run import run as run_everything

    container = app_or_exit(console_operator=True)
    freeze_startup_objects()
    try:
        status = run_everything(container)
    finally:
        container.close()
    raise typer.Exit(status)


@app.command()
def demo() -> None:
    """`crm run` on a fresh demo database with sample customers and incoming signals."""
    from rich.markup import escape

    from bot.demo import runner
    from bot.run import run as run_everything

    base = settings_or_exit()
    try:
        held = runner.hold_the_folder(base)
    except StartupError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if held is None:
        errors.print(
            f"[red]error:[/red] another crm demo is running on {escape(str(base.crm_data_dir))}; "
            "stop it first, or set CRM_DATA_DIR to run a second one elsewhere"
        )
        raise typer.Exit(2)
    runner.fresh_folder(base)
    sink = runner.MailSink(console, base.crm_data_dir / "demo" / "sent-mail")
    smtp_url = sink.start()
    container = app_or_exit(runner.demo_settings(base, smtp_url), console_operator=True)
    freeze_startup_objects()

    def start_demo(container: App) -> None:
        runner.seed_and_describe(container, console)
        runner.play_signals(container, console)

    try:
        status = run_everything(container, before_console=start_demo)
    finally:
        container.close()
        sink.stop()
        held.close()
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

    container = app_or_exit()
    container.start_jobs()  # the embedded default: this process runs the jobs its requests queue
    try:
        web_app = create_app(container)
        freeze_startup_objects()
        uvicorn.run(
            web_app,
            host=container.settings.host or WEB_HOST,
            port=container.settings.port,
            access_log=access_log,
        )
    finally:
        container.close()


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

    container = app_or_exit()
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

    container = app_or_exit()
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
    container = app_or_exit()
    try:
        accepted = accept_signal(container, body, webhook_key(key) if key else content_key(body))
        finish_in_process_work(container)
    except InboundRefused as exc:
        errors.print("[red]error:[/red]", escape(f"{source}: {exc.message}"))
        for problem in getattr(exc, "errors", []):
            errors.print(escape(f"  {problem['field'] or 'body'}: {problem['message']}"))
        raise typer.Exit(1) from None
    finally:
        container.close()
    sys.stdout.write(json.dumps({"event_id": accepted.event_id, "duplicate": accepted.duplicate}) + "\n")


@app.command()
def digest(
    post: Annotated[bool, typer.Option("--post", help="post to the configured surfaces")] = False,
) -> None:
    """Print today's digest (or post it)."""
    from rich.markup import escape

    from bot.schedule import post_digest

    container = app_or_exit()
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
