"""Where the console's lines come from: a prompt at a real terminal, or a stream (a pipe, a script).

At a terminal the prompt is prompt_toolkit's: output printed while the operator types (a proposal
arriving from a worker thread, the mail sink, a log line) is drawn above the `crm>` line, never on it,
and the line being typed is redrawn below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol


class LineReader(Protocol):
    """A source of typed lines; `read` raises EOFError at the end of input."""

    interactive: bool

    def read(self, prompt: str) -> str: ...


class StreamReader:
    """Lines from a stream or a list; `interactive=True` makes the console hold a dialogue over them."""

    def __init__(self, lines: Iterable[str], *, interactive: bool = False) -> None:
        self._lines = iter(lines)
        self.interactive = interactive

    def read(self, prompt: str) -> str:
        try:
            return next(self._lines).rstrip("\r\n")
        except StopIteration:
            raise EOFError from None


class PromptReader:
    """prompt_toolkit's prompt on the process's terminal; Ctrl-D (or Ctrl-C) at the prompt leaves."""

    interactive = True

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession

        self._session: PromptSession[str] = PromptSession()

    def read(self, prompt: str) -> str:
        try:
            return self._session.prompt(prompt)
        except KeyboardInterrupt:
            raise EOFError from None

    @staticmethod
    @contextmanager
    def output_above_prompt() -> Iterator[None]:
        """While inside, whatever any thread prints (stdout and stderr) is drawn above the prompt."""
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout(raw=True):  # raw: keep Rich's colours and box drawing as they are
            yield
