"""The terminal console: typed lines read by the command layer's parser, replies printed as they come."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from bot.bootstrap import App, bootstrap
from bot.terminal import TerminalConsole, local_actor, render_reply
from bot.terminal.prompt import StreamReader
from store.events import CustomerRef, LeadCreated
from tests.integration import as_of_helpers as as_of

# Before the day the tests look back to.
PAST = datetime(2026, 10, 2, 9, tzinfo=UTC)


@pytest.fixture
def container(db_url: str, make_settings: Any) -> Iterator[App]:
    built = bootstrap(make_settings(DATABASE_URL=db_url, OPERATORS="terminal:local"))
    yield built
    built.close()


def printed(render: Any) -> str:
    """What `render(console)` prints, on a console wide enough that nothing wraps."""
    out = io.StringIO()
    render(Console(file=out, width=200, highlight=False, color_system=None))
    return out.getvalue()


def test_customer_as_of_a_day_reads_the_line_as_slack_and_telegram_do(container: App) -> None:
    as_of.jonas_becker(container)
    actor = local_actor()
    expected = container.commands.run(actor, as_of.LINE)
    assert as_of.expected_lines(container, actor) == expected.lines

    shown = printed(
        lambda console: TerminalConsole(container.commands, console, actor).loop(StreamReader([as_of.LINE]))
    )

    assert shown == printed(lambda console: render_reply(console, expected))
    assert as_of.PAST_LINE in shown and as_of.LATER not in shown


def test_the_cli_form_of_as_of_means_the_same(container: App) -> None:
    as_of.jonas_becker(container)
    actor = local_actor()
    typed = container.commands.run(actor, "customer Jonas Becker --as-of 2026-11-01")
    assert typed.lines == container.commands.run(actor, as_of.LINE).lines


def test_a_bad_day_after_as_of_is_explained_and_nothing_is_shown(container: App) -> None:
    as_of.jonas_becker(container)
    answer = container.commands.run(local_actor(), "/customer jonas becker as of 1st of May")
    assert answer.code == "invalid" and "YYYY-MM-DD" in answer.text


def test_several_matches_offer_choices_that_keep_the_day(container: App) -> None:
    jonas = as_of.jonas_becker(container)
    who = CustomerRef(name="Jonas Becker Jr", email="junior@becker.example")
    container.store.record_signal(
        "lead.created", LeadCreated(customer=who), "test:junior", source="test", occurred_at=PAST
    )
    actor = local_actor()

    answer = container.commands.run(actor, "/customer jonas as of 2026-11-01")

    assert answer.ok and len(answer.choices) == 2
    picked = next(choice for choice in answer.choices if choice.customer_id == jonas)
    assert picked.line == f"customer {jonas} as of 2026-11-01"
    shown = container.commands.run(actor, picked.line)
    assert (
        shown.lines == container.commands.run(actor, "customer jonas@becker.example as of 2026-11-01").lines
    )
    assert shown.lines[0].startswith("Jonas Becker ·") and as_of.PAST_LINE in shown.text
