"""`crm web` as a real process on a free port, and `crm signal` through the same path as POST /signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from bot import cli
from bot.web.body import MAX_BODY_BYTES
from store.db import make_engine
from tests.inbound_support import SIGNALS_SECRET, signal_body, signed_headers
from tests.integration.web_harness import free_port

CRM = [sys.executable, "-c", "from bot.cli import main; main()"]


def env_for(db_url: str, tmp_path: Path, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TELEGRAM_", "STRIPE_"))}
    env.update(
        CRM_DATA_DIR=str(tmp_path / "data"), DATABASE_URL=db_url, SIGNALS_SECRET=SIGNALS_SECRET, **extra
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture
def web_server(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*CRM, "web"],
        env=env_for(pg_url, tmp_path, redis_url, PORT=str(port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"crm web did not start: {process.stderr.read().decode() if process.stderr else ''}"
            )
        time.sleep(0.1)
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_crm_web_serves_signals_on_port_and_cuts_off_chunked_bodies_over_1_mib(web_server: str) -> None:
    body = signal_body(customer={"name": "Ωmega Øyvind"})
    headers = signed_headers(body, "msg_live")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * (MAX_BODY_BYTES // 16)

    with httpx.Client(base_url=web_server, timeout=10) as http:
        first = http.post("/signals", content=body, headers=headers)
        second = http.post("/signals", content=body, headers=headers)
        assert first.status_code == 202 and second.status_code == 202
        assert second.json() == {"event_id": first.json()["event_id"], "duplicate": True}
        assert http.get("/openapi.json").json()["info"]["title"] == "chatops-crm"
        # No Content-Length: the limit is enforced while the body streams in.
        big = http.post("/signals", content=chunks(), headers=signed_headers(b"".join(chunks())))
        assert big.status_code == 413 and big.json()["error"] == "too_large"


def crm_signal(
    args: list[str], db_url: str, tmp_path: Path, stdin: bytes | None = None, **extra: str
) -> Result:
    """`crm signal` in this process (the subprocess start-up would dominate the test's time)."""
    # None unsets a variable for the call: no Redis unless the test gives one.
    env: dict[str, str | None] = {
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": db_url,
        "REDIS_URL": None,
    }
    env.update(extra)
    return CliRunner().invoke(cli.app, ["signal", *args], input=stdin, env=env)


def count_signals(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT count(*) FROM events WHERE actor = 'outside'")
            return int(rows.scalar_one())
    finally:
        engine.dispose()


def test_crm_signal_records_a_file_and_recognises_it_again(
    db_url: str, tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / "signal.json"
    path.write_bytes(signal_body("invoice.overdue", data={"invoice_id": "INV-9", "amount": "10.00"}))
    first = crm_signal([str(path)], db_url, tmp_path, REDIS_URL=redis_url)
    assert first.exit_code == 0, first.output
    answer = json.loads(first.stdout)
    assert answer["duplicate"] is False
    again = crm_signal(["-"], db_url, tmp_path, stdin=path.read_bytes(), REDIS_URL=redis_url)
    assert json.loads(again.stdout) == {"event_id": answer["event_id"], "duplicate": True}
    assert count_signals(db_url) == 1


def test_crm_signal_with_an_id_uses_it_as_the_webhook_id(pg_url: str, tmp_path: Path, redis_url: str) -> None:
    body = signal_body()
    first = json.loads(
        crm_signal(["--id", "msg_7", "-"], pg_url, tmp_path, stdin=body, REDIS_URL=redis_url).stdout
    )
    other = signal_body(text="same id, other bytes")
    again = json.loads(
        crm_signal(["--id", "msg_7", "-"], pg_url, tmp_path, stdin=other, REDIS_URL=redis_url).stdout
    )
    assert again == {"event_id": first["event_id"], "duplicate": True}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b'{"type": "lead.created",\n  "customer": }', "line 2 column"),
        (b'{"type": "lead.vanished", "customer": {"name": "A"}}', "known types: "),
        (b'{"type": "lead.created", "customer": {"email": ["x"]}}', "customer.email"),
    ],
    ids=["malformed", "unknown type", "schema"],
)
def test_crm_signal_refuses_bad_input_with_a_reason(
    sqlite_url: str, tmp_path: Path, redis_url: str, stdin: bytes, message: str
) -> None:
    result = crm_signal(["-"], sqlite_url, tmp_path, stdin=stdin, REDIS_URL=redis_url)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert count_signals(sqlite_url) == 0


def test_crm_signal_names_a_missing_file(sqlite_url: str, tmp_path: Path) -> None:
    result = crm_signal([str(tmp_path / "nope.json")], sqlite_url, tmp_path)
    assert result.exit_code == 2
    assert "nope.json" in result.stderr


def test_crm_web_has_no_access_log_unless_asked_and_freezes_its_startup_objects(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(
        uvicorn, "run", lambda app, **options: served.append({"frozen": gc.get_freeze_count(), **options})
    )
    env = {"CRM_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": sqlite_url, "REDIS_URL": None}
    try:
        for args in (["web"], ["web", "--access-log"]):
            result = CliRunner().invoke(cli.app, args, env=env)
            assert result.exit_code == 0, result.output
    finally:
        gc.unfreeze()
    assert [options["access_log"] for options in served] == [False, True]
    assert all(options["frozen"] > 10_000 for options in served), "startup objects frozen before serving"


def test_crm_run_and_crm_worker_freeze_their_startup_objects_before_working(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's full collections walked every object loaded at start (76-128 ms each, mid-job)."""
    import gc

    import bot.run
    import jobs.worker

    frozen: dict[str, int] = {}

    def working(command: str) -> Any:
        def work(*_: Any, **__: Any) -> int:
            frozen[command] = gc.get_freeze_count()
            return 0

        return work

    monkeypatch.setattr(bot.run, "run", working("run"))
    monkeypatch.setattr(jobs.worker, "run_worker", working("worker"))
    env = {"CRM_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": sqlite_url}
    try:
        for args, redis in ((["run"], None), (["worker", "--burst"], redis_url)):
            gc.unfreeze()
            result = CliRunner().invoke(cli.app, args, env={**env, "REDIS_URL": redis})
            assert result.exit_code == 0, result.output
    finally:
        gc.unfreeze()
    assert set(frozen) == {"run", "worker"}
    assert all(count > 10_000 for count in frozen.values()), frozen
