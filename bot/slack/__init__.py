"""The Slack surface: one Bolt app, served over HTTP (`POST /slack/events`) or Socket Mode.

Listeners only translate a Slack payload into a command-layer call and render the reply in Block Kit
(DESIGN.md invariant 8). Nothing here connects at import time: everything is built from settings.
"""

from __future__ import annotations

from bot.slack.app import SlackNotConfigured, build_slack_app
from bot.slack.serve import run_slack, slack_router, start_slack
from bot.slack.surface import SlackSurface

__all__ = [
    "SlackNotConfigured",
    "SlackSurface",
    "build_slack_app",
    "run_slack",
    "slack_router",
    "start_slack",
]
