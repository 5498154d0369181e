"""The operator's own mailbox (IMAP_URL): customers' mail in, the operator's own replies seen."""

from bot.mailbox.service import Mailbox, run_mailbox

__all__ = ["Mailbox", "run_mailbox"]
