"""`crm run` and `crm demo` as whole processes: a temporary data dir, no network, piped commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.inbound_support import SIGNALS_SECRET, signal_body, signed_headers
from tests.policies import without_quiet_hours
from tests.standins.smtp import SmtpStandin, free_port

CRM = [sys.executable, "-c", "from bot.cli import main; main()"]
PROPOSAL_ID = re.compile(r"(prp_[0-9a-f]+) · pending")


class Process:
    """A crm process with piped stdin and stdout collected on a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            CRM + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"never saw {pattern!r}; output so far:\n{self.text}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 90) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not exit at end of input; output:\n{self.text}") from None


def offline_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A clean environment: no proxies to the outside, no developer settings, a fresh data dir."""
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH"}}
    policy = without_quiet_hours(tmp_path)
    return {
        **keep,
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(free_port()),
        "CRM_POLICY_FILE": str(policy),
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "COLUMNS": "200",
        **values,
    }


def test_crm_run_signal_in_proposal_out_approve_email_sent(tmp_path: Path) -> None:
    with SmtpStandin() as smtp:
        env = offline_env(
            tmp_path,
            SIGNALS_SECRET=SIGNALS_SECRET,
            SMTP_URL=smtp.url,
            UNDO_WINDOW_SECONDS="1",
            MAIL_FROM="me@solo.test",
        )
        run = Process(["run"], env, tmp_path)
        run.wait_for("chatops-crm is running")
        run.send("/help")
        run.wait_for("approve")
        # Piped, a reply line stays one line however long (nothing wraps it at 80 columns)
        run.wait_for(r"audit \[customer\] \[days\] — [^\n]*\(default 7 days\)")
        body = signal_body(
            "message.received",
            customer={"name": "Ada Lovelace", "email": "ada@analytical.io"},
            text="Hi, how do I export my invoices as CSV? Thanks!",
            data={"channel": "email", "subject": "Export question", "message_id": "<q1@analytical.io>"},
        )
        response = httpx.post(
            f"http://127.0.0.1:{env['PORT']}/signals",
            content=body,
            headers=signed_headers(body),
            trust_env=False,
        )
        assert response.status_code == 202, response.text
        proposal = run.wait_for(PROPOSAL_ID).group(1)
        run.send(f"approve {proposal}")
        run.wait_for("Approved by")
        assert run.finish() == 0, run.text
        assert "executed" in run.text or "sent" in run.text
    assert len(smtp.messages) == 1, run.text
    sent = smtp.messages[0]
    assert sent["To"] == "ada@analytical.io"
    assert "export" in sent["Subject"].lower() or "re:" in sent["Subject"].lower()


def test_crm_run_without_chat_apps_answers_piped_commands_and_exits(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    run = Process(["run"], env, tmp_path)
    run.send("/customer nobody-here")
    run.send("/pending")
    assert run.finish() == 0, run.text
    assert "No customer" in run.text or "no customer" in run.text
    assert "0 waiting" in run.text or "Nothing" in run.text or "nothing" in run.text


def test_crm_demo_seeds_a_business_and_brings_proposals(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    demo = Process(["demo"], env, tmp_path)
    demo.wait_for("Demo business seeded")
    demo.wait_for(r"signal in: lead\.created", timeout=60)
    proposal = demo.wait_for(PROPOSAL_ID, timeout=60).group(1)
    demo.send("/customer copperleaf")
    demo.wait_for("Priya Raman")
    demo.send(f"why {proposal}")
    demo.send("/digest")
    demo.wait_for("Daily digest")
    assert demo.finish() == 0, demo.text
    assert (tmp_path / "data" / "demo" / "crm.sqlite3").exists()
    verified = subprocess.run(
        [*CRM, "replay", "--verify"],
        env={**env, "CRM_DATA_DIR": str(tmp_path / "data" / "demo")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert "projections match the log" in verified.stdout


def test_crm_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import signal

    env = offline_env(tmp_path)
    run = Process(["run"], env, tmp_path)  # stdin stays open: only the signal can stop it
    run.wait_for("chatops-crm is running")
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=60) == 0, run.text
    assert "Traceback" not in run.text


def test_a_second_crm_demo_on_the_same_data_dir_refuses_before_wiping_the_first_ones_data(
    tmp_path: Path,
) -> None:
    """It used to wipe data/demo first and only then find the port taken: the running demo carried
    on over a deleted database."""
    from bot.demo.runner import hold_the_folder
    from store.settings import load_settings

    env = offline_env(tmp_path)
    kept = tmp_path / "data" / "demo" / "crm.sqlite3"
    kept.parent.mkdir(parents=True)
    kept.write_text("the running demo's database")
    held = hold_the_folder(load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path / "data")))
    assert held is not None  # as the running demo holds it
    try:
        second = subprocess.run(
            [*CRM, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        held.close()
    assert second.returncode == 2, second.stdout + second.stderr
    assert "another crm demo is running on" in second.stderr and "CRM_DATA_DIR" in second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    assert kept.read_text() == "the running demo's database"
