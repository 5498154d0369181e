"""The whole deployment for the fault run: its own Postgres database and redis-server, the real processes.

`crm web`, two `crm worker`s and `crm scheduler` run as child processes against a database created for
the run on the machine's Postgres and a redis-server on a free port; Slack, Telegram and SMTP are the
loopback stand-ins of the test suite, served from this process. Everything started here is stopped and
dropped by `close()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import text

from bench.benchkit import free_port
from bot.bootstrap import App, bootstrap
from store.settings import load_settings
from tests.inbound_support import SIGNALS_SECRET, STRIPE_SECRET
from tests.integration import slack_harness as sh
from tests.integration import telegram_harness as th
from tests.integration.jobs_harness import RedisServer
from tests.standins.slack_api import SlackStandIn
from tests.standins.smtp import SmtpStandin
from tests.standins.telegram_api import TelegramStandIn

PG_ADMIN = os.environ.get("CRM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CRM = str(Path(sys.executable).with_name("crm"))
WORKERS = 2
BENCH_OPERATOR = "terminal:bench"
# A killed worker's execution is taken over once its lease lapses; the default (5 minutes) is longer
# than a reduced run, so the run shortens it and says so in its report.
ACTION_LEASE_SECONDS = 30


class Stack:
    """Start with `with Stack() as stack:`; `stack.url` is `crm web`'s address."""

    def __init__(self, action_lease_seconds: float = ACTION_LEASE_SECONDS) -> None:
        self.dbname = f"crm_fault_{uuid.uuid4().hex[:8]}"
        base = PG_ADMIN.rsplit("/", 1)[0]
        self.db_url = f"{base}/{self.dbname}".replace("postgresql://", "postgresql+psycopg://", 1)
        self.tmp = Path(tempfile.mkdtemp(prefix="crm-fault-"))
        self.redis = RedisServer()
        self.slack = SlackStandIn(bot_token=sh.BOT_TOKEN)
        self.telegram = TelegramStandIn(th.TOKEN)
        self.smtp = SmtpStandin()
        self.port = free_port()
        self.lease = action_lease_seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self.container: App | None = None
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.dbname}"')
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.redis.start()
        self.slack.start()
        self.telegram.start()
        self.smtp.__enter__()
        settings: dict[str, Any] = {
            **sh.slack_settings(self.slack.api_url, self.db_url),
            **th.telegram_env(self.telegram, self.db_url, self.smtp.port),
            "SMTP_URL": self.smtp.url,
            "TELEGRAM_WEBHOOK_URL": f"{self.url}/telegram/webhook",
            "TELEGRAM_WEBHOOK_SECRET": th.WEBHOOK_SECRET,
            "OPERATORS": f"slack:{sh.OPERATOR},telegram:{th.OPERATOR_ID},{BENCH_OPERATOR}",
            "REDIS_URL": self.redis.url,
            "SIGNALS_SECRET": SIGNALS_SECRET,
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
            "UNDO_WINDOW_SECONDS": 0,
            "ACTION_LEASE_SECONDS": self.lease,
            "CRM_DATA_DIR": str(self.tmp / "data"),
            "PORT": self.port,
        }
        keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}
        self.env = {k: v for k, v in os.environ.items() if k in keep}
        self.env.update({k: str(v) for k, v in settings.items()})
        self.env["HF_HUB_OFFLINE"] = "1"
        subprocess.run([CRM, "migrate"], env=self.env, cwd=self.tmp, check=True, capture_output=True)
        self.container = bootstrap(load_settings(_env_file=None, **settings))
        self.start("web")
        for i in range(1, WORKERS + 1):
            self.start(f"worker{i}")
        self.start("scheduler")
        self._wait_web()

    def start(self, name: str) -> None:
        """(Re)start one process: web, worker<N> or scheduler; its output goes to TMP/<name>.log."""
        command = {"web": "web", "scheduler": "scheduler"}.get(name, "worker")
        log = (self.tmp / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [CRM, command], env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT
        )
        self.restarts[name] = self.restarts.get(name, -1) + 1

    def kill(self, name: str) -> None:
        """kill -9: no shutdown code runs."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def dead(self) -> list[str]:
        """The processes that have exited (and were not restarted since)."""
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def _wait_web(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if self.processes["web"].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"crm web did not come up; see {self.tmp / 'web.log'}")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.container is not None:
            self.container.close()
            self.container.engine.dispose()
            self.container = None
        self.smtp.__exit__(None, None, None)
        self.slack.stop()
        self.telegram.stop()
        self.redis.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        if os.environ.get("FAULT_KEEP_LOGS"):
            print(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- reading the database --------------------------------------------------------------------
    def scalar(self, sql: str, **params: Any) -> Any:
        assert self.container is not None
        with self.container.engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        assert self.container is not None
        with self.container.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def terminate_backends(self) -> int:
        """Cut every connection to the run's own database (no other database is touched)."""
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.dbname,),
            ).fetchone()
        return int(row[0]) if row else 0
