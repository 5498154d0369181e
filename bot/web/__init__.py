"""The HTTP app (`crm web`): signal intake, webhooks, health and metrics."""

from bot.web.app import create_app

__all__ = ["create_app"]
