"""The one command-line grammar every surface hands its typed text to: here, the "as of" part."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from bot.command_text import day_of, split_as_of


@pytest.mark.parametrize(
    "rest",
    [
        "jonas becker as of 2026-11-01",
        "jonas becker As Of 2026-11-01",
        "jonas becker  as  of  2026-11-01 ",
        "jonas becker --as-of 2026-11-01",
    ],
)
def test_as_of_reads_the_chat_form_and_the_cli_form_alike(rest: str) -> None:
    assert split_as_of(rest) == ("jonas becker", date(2026, 11, 1))


@pytest.mark.parametrize("rest", ["jonas becker", "thomas ofori", "bas ofori", "jonas@becker.example"])
def test_a_name_that_merely_contains_as_or_of_is_no_date(rest: str) -> None:
    assert split_as_of(rest) == (rest, None)


@pytest.mark.parametrize("day", ["1st of May", "yesterday", "", "2026-13-01"])
def test_a_bad_day_is_explained_with_the_format(day: str) -> None:
    query, answer = split_as_of(f"acme as of {day}".strip())
    assert query == "acme"
    assert isinstance(answer, str) and "YYYY-MM-DD" in answer


def test_the_day_is_written_back_as_the_grammar_reads_it() -> None:
    assert day_of(date(2026, 11, 1)) == "2026-11-01"
    assert day_of(datetime(2026, 11, 1, 23, 59)) == "2026-11-01"
    assert split_as_of(f"acme as of {day_of(date(2026, 11, 1))}") == ("acme", date(2026, 11, 1))
