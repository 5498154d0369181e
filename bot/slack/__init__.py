"""The Slack surface: one Bolt app, served over HTTP (`POST /slack/events`) or Socket Mode.

Listeners only translate a Slack payload into a command-layer call and render the reply in Block Kit
(DESIGN.md invariant 8). Nothing here connects at import time: everything is built from settings.
"""

from __future__ import annotations

from bot.slack.app import SlackNotConfigured, build_slack_app
from bot.slack.serve import mount_slack, run_slack, start_slack
from bot.slack.surface import SlackSurface, install_slack_surface, slack_client

__all__ = [
    "SlackNotConfigured",
    "SlackSurface",
    "build_slack_app",
    "install_slack_surface",
    "mount_slack",
    "run_slack",
    "slack_client",
    "start_slack",
]
