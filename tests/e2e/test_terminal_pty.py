"""`crm run` at a real terminal (a pseudo-terminal) and through a pipe: what the operator sees."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.e2e.test_run_and_demo import PROPOSAL_ID, Process, offline_env
from tests.e2e.tty import Tty
from tests.inbound_support import SIGNALS_SECRET, signal_body, signed_headers


def send_question(port: str, message_id: str = "<q1@analytical.io>") -> None:
    body = signal_body(
        "message.received",
        customer={"name": "Ada Lovelace", "email": "ada@analytical.io"},
        text="Hi, how do I export my invoices as CSV? Thanks!",
        data={"channel": "email", "subject": "Export question", "message_id": message_id},
    )
    answer = httpx.post(
        f"http://127.0.0.1:{port}/signals", content=body, headers=signed_headers(body), trust_env=False
    )
    assert answer.status_code == 202, answer.text


def test_at_a_terminal_background_cards_land_above_the_prompt_and_each_card_prints_once(
    tmp_path: Path,
) -> None:
    env = offline_env(tmp_path, SIGNALS_SECRET=SIGNALS_SECRET, UNDO_WINDOW_SECONDS="3")
    tty = Tty(["run"], env, tmp_path)
    try:
        tty.wait_for(r"crm>$")
        tty.type("/help\r")
        tty.wait_for(r"reject <id> \[reason\]")
        assert any("[agent|all]" in line for line in tty.screen()), "brackets are shown as typed"

        tty.type("/pend")  # half a command typed when the proposal arrives
        send_question(env["PORT"])
        pid = tty.wait_for(PROPOSAL_ID.pattern).group(1)
        tty.pump(1.0)
        screen = tty.screen()
        assert screen[-1] == "crm> /pend", "\n".join(screen)
        assert tty.prompt_lines() == ["crm> /help", "crm> /pend"], "\n".join(screen)
        card_top = next(i for i, line in enumerate(screen) if f"{pid} · pending" in line)
        assert card_top < len(screen) - 1, "the card is drawn above the line being typed"

        tty.type("ing\r")
        tty.wait_for("1 waiting for a decision")
        tty.type(f"approve {pid}\r")
        tty.wait_for(r"Approved\. Sending at")
        tty.wait_for(r"crm>$")
        tty.pump(1.0)
        assert tty.transcript().count(f"{pid} · approved") == 1, tty.transcript()[-4000:]
    finally:
        status = tty.close()
    assert status == 0, tty.transcript()[-3000:]
    assert "Traceback" not in tty.transcript()


def test_at_a_terminal_edit_takes_a_text_ending_with_a_dot_and_a_yes(tmp_path: Path) -> None:
    env = offline_env(tmp_path, SIGNALS_SECRET=SIGNALS_SECRET, UNDO_WINDOW_SECONDS="3")
    env.pop("EDITOR", None)
    tty = Tty(["run"], env, tmp_path)
    try:
        tty.wait_for(r"crm>$")
        send_question(env["PORT"])
        pid = tty.wait_for(PROPOSAL_ID.pattern).group(1)
        tty.type(f"edit {pid}\r")
        tty.wait_for(re.escape("To [ada@analytical.io]:") + "$")
        tty.type("\r")
        tty.wait_for(re.escape("Subject [Re: Export question]:") + "$")
        tty.type("\r")
        tty.wait_for("then a line holding only")
        for line in ["Hi Ada,", "", "Settings [Billing] has an Export button.", "."]:
            tty.type(line + "\r")
        tty.wait_for(r"Approve the edited version\?")
        tty.wait_for(re.escape("[y/N]") + "$")
        tty.type("y\r")
        tty.wait_for(rf"{pid} · approved")
        assert "Settings [Billing] has an Export button." in tty.transcript()
    finally:
        status = tty.close()
    assert status == 0, tty.transcript()[-3000:]


def test_through_a_pipe_an_approved_card_prints_once(tmp_path: Path) -> None:
    env = offline_env(tmp_path, SIGNALS_SECRET=SIGNALS_SECRET, UNDO_WINDOW_SECONDS="1")
    run = Process(["run"], env, tmp_path)
    run.wait_for("chatops-crm is running")
    send_question(env["PORT"])
    pid = run.wait_for(PROPOSAL_ID).group(1)
    run.send(f"approve {pid}")
    run.wait_for("Approved")
    assert run.finish() == 0, run.text
    assert run.text.count(f"{pid} · approved") == 1, run.text
