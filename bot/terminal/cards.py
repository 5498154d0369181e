"""Which proposal cards the terminal has shown, so an action's card is printed once, not twice.

On Slack and Telegram an update edits the message in place; a terminal can only print again. After
`approve ID` both the command's reply and the notify fan-out's update carry the same card, from two
threads and in either order: whichever comes second finds it already shown and prints nothing.
"""

from __future__ import annotations

import threading

from jobs.views import ProposalView


def card_key(view: ProposalView) -> tuple[object, ...]:
    """What makes two renditions of a proposal the same card on screen."""
    return (view.state, tuple(view.lines()), tuple(b.action for b in view.buttons))


class ShownCards:
    """The last card printed for each proposal (thread-safe)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[object, ...]] = {}
        self._lock = threading.Lock()

    def first_showing(self, view: ProposalView) -> bool:
        """Record the card; False when exactly this card was the last one shown for its proposal."""
        key = card_key(view)
        with self._lock:
            if self._last.get(view.id) == key:
                return False
            self._last[view.id] = key
            return True

    def shown(self, proposal_id: str) -> bool:
        """Whether some card of this proposal has been printed."""
        with self._lock:
            return proposal_id in self._last

    def record(self, view: ProposalView) -> None:
        """Note a card printed regardless (a listing the operator asked for)."""
        with self._lock:
            self._last[view.id] = card_key(view)
