"""Connectors: the only code that acts on the outside world, called by the executor (never by agents)."""
