"""A customer with a past, to check that `/customer … as of DAY` means the same on every surface.

Jonas Becker became a lead on 2026-10-01 and asked about the yearly plan on 2026-11-20: as of
2026-11-01 the slice shows the lead and not the question.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from store.events import CustomerRef, LeadCreated, MessageReceived

if TYPE_CHECKING:
    from bot.bootstrap import App
    from bot.commands import Actor

# What an operator types on any surface; Slack's slash command text is everything after "/customer ".
LINE = "/customer jonas becker as of 2026-11-01"
PAST_LINE = "as of 2026-11-01"
LATER = "yearly plan"


def jonas_becker(container: App) -> str:
    """Record Jonas Becker's past (a lead in October, a question in late November); returns the id."""
    who = CustomerRef(name="Jonas Becker", email="jonas@becker.example", company="Becker GmbH")
    store = container.store
    lead = store.record_signal(
        "lead.created",
        LeadCreated(customer=who, text="Found you at the fair"),
        "test:jonas-lead",
        source="test",
        occurred_at=datetime(2026, 10, 1, 9, tzinfo=UTC),
    ).event
    store.record_signal(
        "message.received",
        MessageReceived(customer=who, text="Can we move to the yearly plan?", data={"channel": "email"}),
        "test:jonas-yearly",
        source="test",
        occurred_at=datetime(2026, 11, 20, 9, tzinfo=UTC),
    )
    return lead.stream


def expected_lines(container: App, operator: Actor) -> tuple[str, ...]:
    """The command layer's own answer to LINE, which every surface must show."""
    answer = container.commands.run(operator, LINE)
    assert answer.ok, answer.text
    assert answer.lines[0].startswith("Jonas Becker")
    assert any(line.startswith(PAST_LINE) for line in answer.lines), answer.text
    assert LATER not in answer.text
    return answer.lines
