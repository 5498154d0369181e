"""The terminal surface: a chat surface like Slack and Telegram, over the same command layer.

`console` reads typed lines and calls the command layer, `render` prints replies and proposals,
`surface` is the notify Surface that prints proposals as they are posted and updated.
"""

from __future__ import annotations

from bot.terminal.console import TerminalConsole, local_actor, run_console
from bot.terminal.render import proposal_panel, render_reply
from bot.terminal.surface import TerminalSurface

__all__ = [
    "TerminalConsole",
    "TerminalSurface",
    "local_actor",
    "proposal_panel",
    "render_reply",
    "run_console",
]
