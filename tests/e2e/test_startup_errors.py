"""Errors that name the fix: each as a whole `crm` process, its one-line message and its exit status."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_run_and_demo import CRM, Process, offline_env
from tests.standins.slack_api import SlackStandIn
from tests.standins.smtp import free_port
from tests.standins.telegram_api import TelegramStandIn


def crm(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CRM + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def narrow(env: dict[str, str]) -> dict[str, str]:
    """A terminal 60 columns wide: an error must still come out as one line."""
    return {**env, "COLUMNS": "60"}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://crm:pw@db:notaport/crm", "DATABASE_URL"),
        ("not a url at all", "DATABASE_URL: is not a database URL: use postgresql://"),
        ("mysql://crm:pw@db/crm", "DATABASE_URL: mysql:// is not supported: use postgresql://"),
    ],
)
def test_a_bad_database_url_stops_with_one_line_naming_it(tmp_path: Path, value: str, expected: str) -> None:
    done = crm(["migrate"], narrow(offline_env(tmp_path, DATABASE_URL=value)), tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in one_line(done.stderr)


def test_an_smtp_url_of_another_scheme_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = crm(["migrate"], narrow(offline_env(tmp_path, SMTP_URL="http://mail.example.com:587")), tmp_path)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "SMTP_URL: must look like smtp://" in line and "smtps://" in line


@pytest.mark.parametrize("command", [["migrate"], ["run"], ["demo"]])
def test_a_data_folder_that_cannot_be_made_stops_the_start_with_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "a-file").write_text("a file, where CRM_DATA_DIR wants a folder")
    folder = tmp_path / "a-file" / "data"
    env = narrow(offline_env(tmp_path, CRM_DATA_DIR=str(folder)))
    done = subprocess.run(
        CRM + command,
        env=env,
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"CRM_DATA_DIR={folder}" in line and "a folder this user can write" in line


def test_a_bad_host_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = crm(["migrate"], narrow(offline_env(tmp_path, HOST="http://0.0.0.0:80")), tmp_path)
    assert done.returncode == 2
    assert "HOST: must be an address to listen on" in one_line(done.stderr)


@pytest.mark.parametrize(
    ("bot_token", "app_token", "expected"),
    [
        ("xoxb-1", "xapp-typo", "Slack refused SLACK_APP_TOKEN (invalid_auth): create an app-level token"),
        ("xoxb-typo", "xapp-1", "Slack refused SLACK_BOT_TOKEN (invalid_auth): copy the Bot User OAuth"),
    ],
)
def test_a_refused_slack_token_ends_crm_bot_with_status_1_and_one_line(
    tmp_path: Path, bot_token: str, app_token: str, expected: str
) -> None:
    with SlackStandIn(bot_token="xoxb-1", app_token="xapp-1") as slack:
        env = offline_env(
            tmp_path,
            SLACK_BOT_TOKEN=bot_token,
            SLACK_APP_TOKEN=app_token,
            SLACK_API_URL=slack.api_url,
            SLACK_CHANNEL="C1",
        )
        done = crm(["bot"], narrow(env), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in one_line(done.stderr)


def test_a_refused_telegram_token_ends_crm_bot_with_status_1_and_one_line(tmp_path: Path) -> None:
    telegram = TelegramStandIn().start()
    try:
        env = offline_env(
            tmp_path,
            TELEGRAM_BOT_TOKEN="999:wrong",
            TELEGRAM_CHAT_ID="111",
            TELEGRAM_API_URL=telegram.base_url,
        )
        done = crm(["bot"], narrow(env), tmp_path)
    finally:
        telegram.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Telegram refused TELEGRAM_BOT_TOKEN" in one_line(done.stderr)


def test_an_unreachable_telegram_is_one_line_per_try_with_growing_waits(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = offline_env(
        tmp_path, TELEGRAM_BOT_TOKEN="123:abc", TELEGRAM_API_URL=f"http://127.0.0.1:{closed}/bot"
    )
    bot = Process(["bot"], narrow(env), tmp_path)
    bot.wait_for(r"trying again in 4 s", timeout=60)
    bot.proc.send_signal(signal.SIGTERM)
    assert bot.proc.wait(timeout=60) == 0, bot.text
    lines = [line for line in bot.text.splitlines() if line.strip()]
    assert "Traceback" not in bot.text
    assert lines[0].startswith("TELEGRAM_CHAT_ID is not set: proposals are not posted to Telegram")
    tries = [line for line in lines if line.startswith("Telegram is unreachable at")]
    assert tries[:2] == [
        f"Telegram is unreachable at http://127.0.0.1:{closed}/bot (httpx.ConnectError: All connection "
        f"attempts failed); trying again in {wait} s"
        for wait in (2, 4)
    ], bot.text
    assert len(lines) == 1 + len(tries), bot.text


def test_crm_bot_without_a_chat_app_is_an_error_unless_asked_to_be_idle(tmp_path: Path) -> None:
    env = narrow(offline_env(tmp_path))
    refused = crm(["bot"], env, tmp_path)
    assert refused.returncode == 2
    assert "no chat surface to run" in one_line(refused.stderr)

    idle = crm(["bot", "--if-configured"], env, tmp_path)
    assert idle.returncode == 0, idle.stderr
    assert idle.stdout.startswith("nothing to do: no chat surface to run")


def test_with_crm_console_serve_end_of_input_closes_the_console_not_the_server(tmp_path: Path) -> None:
    env = offline_env(tmp_path, CRM_CONSOLE="serve", HOST="0.0.0.0")
    run = Process(["run"], env, tmp_path)
    run.wait_for(f"web on http://0.0.0.0:{env['PORT']}")
    run.send("/pending")
    assert run.proc.stdin is not None
    run.proc.stdin.close()
    run.wait_for("end of input: the console is closed; still serving")
    time.sleep(1.0)
    assert run.proc.poll() is None, run.text
    health = httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", trust_env=False, timeout=10)
    assert health.status_code == 200
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=60) == 0, run.text
    assert "Traceback" not in run.text
