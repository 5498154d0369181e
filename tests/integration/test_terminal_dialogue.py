"""The terminal's own parts of a decision: an edit typed at the prompt, and each card printed once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from bot.bootstrap import App, bootstrap
from bot.terminal import TerminalConsole, local_actor
from bot.terminal.prompt import StreamReader
from tests.integration import proposal_helpers as helpers

NEW_BODY = ["Hi Ada,", "", "Exports are under Settings [Billing] → CSV.", "", "Best"]


@pytest.fixture
def container(db_url: str, make_settings: Any) -> Iterator[App]:
    built = bootstrap(make_settings(DATABASE_URL=db_url, OPERATORS="terminal:local", UNDO_WINDOW_SECONDS=60))
    yield built
    built.close()


def screen() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False, color_system=None), out


def an_email_proposal(container: App) -> str:
    customer = helpers.make_customer(container.store)
    return helpers.record(container.store, helpers.email_proposal(customer))


def dialogue(pid: str, *, confirm: str, body: list[str]) -> list[str]:
    """What the operator types: the edit, Enter for each one-line field, the body up to ".", y or n."""
    return [f"edit {pid}", "", "", *body, ".", confirm]


def test_an_edit_takes_lines_up_to_a_dot_and_is_not_approved_without_a_yes(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()
    terminal = TerminalConsole(container.commands, console, local_actor())

    terminal.loop(StreamReader(dialogue(pid, confirm="n", body=NEW_BODY), interactive=True))

    assert helpers.row(container.store, pid)["state"] == "pending", out.getvalue()
    assert "Not approved; the proposal is still waiting" in out.getvalue()
    assert "Settings [Billing] → CSV" in out.getvalue(), "the typed text is shown back as typed"
    assert not helpers.events_of(container.store, pid, "proposal.decided")


def test_a_yes_approves_the_edited_text_with_its_blank_lines(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(
        StreamReader(dialogue(pid, confirm="y", body=NEW_BODY), interactive=True)
    )

    row = helpers.row(container.store, pid)
    assert row["state"] == "approved", out.getvalue()
    decided = helpers.events_of(container.store, pid, "proposal.decided")[-1]
    assert decided.payload.decision == "edited"
    assert decided.payload.approved["draft"]["body"] == "\n".join(NEW_BODY)


def test_a_dot_at_once_keeps_the_text_and_asks_before_approving_it_unchanged(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(
        StreamReader(dialogue(pid, confirm="", body=[]), interactive=True)
    )

    assert helpers.row(container.store, pid)["state"] == "pending"
    assert "Nothing changed" in out.getvalue()


def test_end_of_input_in_the_middle_of_an_edit_approves_nothing(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(
        StreamReader([f"edit {pid}", "", "", "Half a thought"], interactive=True)
    )

    assert helpers.row(container.store, pid)["state"] == "pending"
    assert "Not approved" in out.getvalue()


def test_a_script_edit_without_text_explains_the_one_line_form(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(StreamReader([f"edit {pid}"]))

    hint = f"to edit from a script: edit {pid} <field> <new value>, or edit {pid} <new body>"
    assert hint in out.getvalue()
    assert helpers.row(container.store, pid)["state"] == "pending"


def test_an_approved_card_is_printed_once_though_the_reply_and_the_update_both_carry_it(
    container: App,
) -> None:
    pid = an_email_proposal(container)
    console, out = screen()
    surface = container.add_terminal_surface(console)
    container.notifier.post(pid)
    terminal = TerminalConsole(container.commands, console, local_actor(), cards=surface.cards)

    terminal.loop(StreamReader([f"approve {pid}", "pending"]))

    shown = out.getvalue()
    assert shown.count(f"{pid} · pending") == 1, shown
    assert shown.count(f"{pid} · approved") == 1, shown
    assert "Approved" in shown


def test_show_prints_a_card_again_when_asked(container: App) -> None:
    pid = an_email_proposal(container)
    console, out = screen()
    surface = container.add_terminal_surface(console)
    container.notifier.post(pid)

    TerminalConsole(container.commands, console, local_actor(), cards=surface.cards).loop(
        StreamReader(["pending", f"show {pid}"])
    )

    assert out.getvalue().count(f"{pid} · pending") == 2, "posted, then shown on request"


def test_help_shows_its_square_brackets(container: App) -> None:
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(StreamReader(["help"]))

    assert "[reason]" in out.getvalue() and "[agent|all]" in out.getvalue()


def test_a_one_line_edit_that_names_a_field_changes_that_field_only(container: App) -> None:
    """`edit ID subject New subject` (the form /help gives) once made "subject New subject" the body."""
    pid, blank, bad = (an_email_proposal(container) for _ in range(3))
    before = helpers.row(container.store, pid)["proposed"]["draft"]
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(
        StreamReader(
            [f"edit {pid} subject: Renewal coming up", f"edit {blank} body", f"edit {bad} to nobody"]
        )
    )

    decided = helpers.events_of(container.store, pid, "proposal.decided")[-1]
    assert decided.payload.approved["draft"] == {**before, "subject": "Renewal coming up"}
    assert f"edit {blank} body <new text>: the new value is missing" in out.getvalue()
    assert "'nobody' is not an email address; nothing was changed." in out.getvalue()
    assert [helpers.row(container.store, p)["state"] for p in (blank, bad)] == ["pending", "pending"]


def test_a_one_line_edit_without_a_field_name_is_the_new_main_text(container: App) -> None:
    """Text that only starts with a field's name, capitalised as prose is, is the main text too."""
    pid, renew, confirm, sentence, readdressed = (an_email_proposal(container) for _ in range(5))
    before = helpers.row(container.store, renew)["proposed"]["draft"]
    console, out = screen()

    TerminalConsole(container.commands, console, local_actor()).loop(
        StreamReader(
            [
                f"edit {pid} Thanks, Ada!\\nBest",
                f"edit {renew} Subject to your OK, we renew on May 1.",
                f"edit {confirm} To confirm: write to billing@acme.test any time.",
                f"edit {sentence} to: write to billing@acme.test any time.",
                f"edit {readdressed} To ada@lovelace.test",  # an address alone: the recipient
            ]
        )
    )

    def approved_draft(proposal_id: str) -> dict[str, str]:
        return helpers.events_of(container.store, proposal_id, "proposal.decided")[-1].payload.approved[
            "draft"
        ]

    assert approved_draft(pid)["body"] == "Thanks, Ada!\nBest"
    assert approved_draft(renew) == {**before, "body": "Subject to your OK, we renew on May 1."}
    assert approved_draft(confirm)["body"] == "To confirm: write to billing@acme.test any time."
    assert "'write to billing@acme.test any time.' is not an email address" in out.getvalue()
    assert helpers.row(container.store, sentence)["state"] == "pending"
    readdressed_to = helpers.events_of(container.store, readdressed, "proposal.decided")[-1].payload.approved
    assert readdressed_to["params"]["to"] == "ada@lovelace.test"
