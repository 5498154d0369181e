"""The demo's parts: its mail sink (a copy kept and shown for each email, and a refusal, not a
traceback, when it cannot keep one) and its settings."""

from __future__ import annotations

import io
import shutil
import smtplib
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from bot.demo import runner
from bot.demo.runner import DEMO_UNDO_WINDOW_S, MailSink, demo_settings
from store.settings import load_settings


def _email() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "ops@demo.test", "ada@acme.test", "Hello"
    message.set_content("Hi Ada")
    return message


def test_the_sink_keeps_and_shows_each_email_and_refuses_with_451_when_it_cannot_keep_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    folder = tmp_path / "sent-mail"
    sink = MailSink(Console(file=out, width=120, color_system=None), folder)
    url = sink.start()
    port = int(url.rsplit(":", 1)[1])
    monkeypatch.setattr(runner, "time", SimpleNamespace(time=lambda: 1_764_000_000.0))  # all in one ms
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            for _ in range(3):
                client.send_message(_email())
        assert len(list(folder.glob("*.eml"))) == 3 and "NOT sent anywhere" in out.getvalue()
        shutil.rmtree(folder)
        folder.write_text("a file where the folder was")
        with (
            smtplib.SMTP("127.0.0.1", port, timeout=10) as client,
            pytest.raises(smtplib.SMTPDataError) as refused,
        ):
            client.send_message(_email())
        assert refused.value.smtp_code == 451
    finally:
        sink.stop()
    assert "could not keep the email" in out.getvalue()
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an expected failure"


def test_the_demo_keeps_an_undo_window_the_operator_set_and_is_quick_otherwise(tmp_path: Path) -> None:
    unset = load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path))
    assert demo_settings(unset, "smtp://127.0.0.1:1").undo_window_seconds == DEMO_UNDO_WINDOW_S
    chosen = load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path), UNDO_WINDOW_SECONDS="30")
    assert demo_settings(chosen, "smtp://127.0.0.1:1").undo_window_seconds == 30.0
