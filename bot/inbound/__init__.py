"""Inbound connectors: verify, parse and map what the outside world sends into signals."""
