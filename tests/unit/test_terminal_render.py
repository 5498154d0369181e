"""The terminal shows text as typed: square brackets are not Rich markup."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bot.command_text import HELP
from bot.replies import reply
from bot.terminal.render import proposal_panel, render_reply
from jobs.views import Button, ProposalView


def _printed(*renderables: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    for item in renderables:
        console.print(item)
    return console.export_text()


def test_help_keeps_its_square_brackets() -> None:
    console = Console(record=True, width=200, color_system=None)
    render_reply(console, reply(*HELP))
    text = console.export_text()
    assert "reject <id> [reason]" in text and "pause [agent|all]" in text


def _view(**fields: Any) -> ProposalView:
    """An email proposal to Jonas Becker, with the fields a test is about."""
    base: dict[str, Any] = {
        "id": "prp_1",
        "state": "pending",
        "kind": "send_email",
        "agent": "inbox_triage",
        "customer_id": "cus_1",
        "customer_name": "Jonas Becker",
        "title": "Send email to jonas@nordlicht.de",
    }
    return ProposalView(**{**base, **fields})


def test_a_card_shows_bracketed_text_and_a_failing_reply_stays_readable() -> None:
    view = _view(
        title="Send email to [jonas@nordlicht.de]",
        body=("[b]not bold[/b] and [red]not red[/red]",),
        buttons=(Button("approve", "Approve", "prp_1"),),
    )
    text = _printed(proposal_panel(view))
    assert "[jonas@nordlicht.de]" in text and "[b]not bold[/b]" in text
    console = Console(record=True, width=200, color_system=None)
    from bot.replies import fail

    render_reply(console, fail("invalid", "Unknown intent '[x]'"))
    assert "Unknown intent '[x]'" in console.export_text()


def test_several_matching_customers_show_the_line_that_picks_each() -> None:
    """A chat app shows buttons; the terminal showed only the names, with no way to pick one."""
    from bot.replies import Choice

    console = Console(record=True, width=200, color_system=None)
    picks = (
        Choice("Acme Logistics [EU]", "customer cus_1", "cus_1"),
        Choice("Acme Labs", "customer cus_2", "cus_2"),
    )
    render_reply(console, reply("2 customers match 'acme':", choices=picks))
    text = console.export_text()
    assert "Type one of:" in text
    assert "customer cus_1   (Acme Logistics [EU])" in text and "customer cus_2   (Acme Labs)" in text


def test_a_state_line_names_the_proposal_once() -> None:
    """A numbered proposal's title begins with its handle: the line read "#2 #2 Send email to …"."""
    from bot.terminal.render import state_line

    numbered = _view(
        id="prp_2",
        state="executed",
        title="#2 Send email to jonas@nordlicht.de · Jonas Becker · proposed by inbox_triage",
        status="sent",
        number=2,
    )
    assert state_line(numbered) == (
        "#2 Send email to jonas@nordlicht.de · Jonas Becker · proposed by inbox_triage · executed — sent"
    )
    unnumbered = ProposalView(
        id="prp_3",
        state="expired",
        kind="add_note",
        agent="a",
        customer_id="c",
        customer_name=None,
        title="N",
    )
    assert state_line(unnumbered) == "prp_3 N · expired"
