"""`crm … --help` reads as a person expects: a flag is shown as a flag, not as taking a value."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from bot import cli


def _every_command() -> list[list[str]]:
    """The argument lists naming each command and subcommand of `crm`."""
    found: list[list[str]] = [[]]
    pending: list[tuple[list[str], Any]] = [([], typer.main.get_command(cli.app))]
    while pending:
        path, command = pending.pop()
        for name, sub in getattr(command, "commands", {}).items():  # a group's; typer carries its own click
            found.append([*path, name])
            pending.append(([*path, name], sub))
    return found


def test_every_commands_help_shows_its_flags_without_a_value_placeholder() -> None:
    commands = _every_command()
    assert ["replay"] in commands and ["import", "customers"] in commands
    for path in commands:
        result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output, path
        assert "<bool>" not in result.output, (path, result.output)


def test_a_flag_is_listed_with_its_help_text_on_one_line() -> None:
    result = CliRunner().invoke(cli.app, ["replay", "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    line = next(line for line in result.output.splitlines() if "--verify" in line and "compare" in line)
    between = line.split("--verify", 1)[1].split("compare", 1)[0]
    assert between.strip(" │") == "", line
