"""A `crm` process on a real pseudo-terminal (pexpect), its screen read through a terminal emulator (pyte)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pexpect
import pyte

ROWS, COLUMNS = 60, 160
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


class Tty:
    """`crm ARGS` on a pty; `screen()` is what a person would see, `transcript()` all that was printed."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        env = {k: v for k, v in env.items() if k != "COLUMNS"}
        # No answers to cursor-position requests come from pexpect: prompt_toolkit must not wait for them.
        env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        self._screen = pyte.Screen(COLUMNS, ROWS)
        self._stream = pyte.ByteStream(self._screen)
        self._raw = bytearray()
        self.child = pexpect.spawn(
            sys.executable,
            ["-c", "from bot.cli import main; main()", *args],
            env=env,
            cwd=str(cwd),
            dimensions=(ROWS, COLUMNS),
        )

    def pump(self, seconds: float = 0.2) -> None:
        """Read whatever the process printed in the next `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.05)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return
            self._raw.extend(data)
            self._stream.feed(data)

    def screen(self) -> list[str]:
        """The visible lines, right-trimmed (a prompt's trailing space too), empty ones left out."""
        return [line.rstrip() for line in self._screen.display if line.strip()]

    def transcript(self) -> str:
        """Everything printed, without terminal control sequences."""
        return ANSI.sub(b"", bytes(self._raw)).decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the screen shows `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            found = re.search(pattern, "\n".join(self.screen()))
            if found:
                return found
            if not self.child.isalive():
                break
        shown = "\n".join(self.screen())
        raise AssertionError(f"never saw {pattern!r} on the screen:\n{shown}")

    def type(self, text: str) -> None:
        self.child.send(text)
        self.pump(0.3)

    def prompt_lines(self) -> list[str]:
        """The screen lines that hold the prompt."""
        return [line for line in self.screen() if "crm>" in line]

    def close(self, timeout: float = 90) -> int:
        """Ctrl-D, then wait for the process to end; its exit status."""
        if self.child.isalive():
            self.child.sendeof()
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.pump(0.2)
        if self.child.isalive():
            self.child.terminate(force=True)
            raise AssertionError("did not end after Ctrl-D:\n" + self.transcript()[-3000:])
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)
