"""`crm demo`: a believable small business to try the bot on, and a short stream of incoming signals."""
