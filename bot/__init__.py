"""Chat surfaces, the channel-agnostic command layer, the web app and the CLI."""
