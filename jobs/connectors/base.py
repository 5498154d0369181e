"""What every connector takes and returns, and the three ways it can fail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from store.events import NewEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionRequest:
    """One approved action, as it will be executed (the edited version when the operator edited it)."""

    proposal_id: str
    kind: str
    agent: str
    customer_id: str
    params: dict[str, Any]
    draft: dict[str, Any] | None
    idempotency_key: str  # derived from the proposal; the same on every attempt
    attempt: int
    approved_by: str | None = None
    # Facts the executor looked up for the connector (e.g. the customer's last message id).
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionResult:
    """What happened: the far side's reference, how to undo it, and events to append with the result."""

    reference: str | None = None
    compensation: dict[str, Any] | None = None
    effects: tuple[NewEvent, ...] = ()


class TransientError(Exception):
    """Failed before anything took effect, and may work later: retried with backoff."""


class PermanentError(Exception):
    """Failed and will fail the same way if simply repeated; reported to the operator."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable  # whether a Retry button makes sense (e.g. after fixing SMTP auth)


class OutcomeUnknown(Exception):
    """Failed after the point of no return: it may or may not have taken effect."""


class Superseded(Exception):
    """Raised by handover(): a newer attempt took the proposal over (this one's lease ran out), so this
    one must not act."""


Handover = Callable[[], None]


def send_ahead(handover: Handover) -> bool:
    """Start recording the handover without waiting for it, where the executor can: the connector then
    does what can still be taken back (an SMTP envelope) while it commits, and calls handover() as
    always, right before the step that cannot be taken back; that call waits for it, and may refuse.
    False, having done nothing, where it cannot (then handover() does it all). A connector whose
    irreversible step never came calls it all the same before raising (wait_unless_taken_over), so a
    handover that lost says so; the executor waits for any it did not.
    """
    begin = getattr(handover, "begin", None)
    return bool(begin()) if begin is not None else False


class Connector(Protocol):
    """Acts for one or more action kinds."""

    name: str
    # True when the far side honours the idempotency key, so repeating an attempt is harmless.
    dedupes: bool

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        """Do it. Call handover() right before the step that cannot be taken back."""
        ...


def wait_unless_taken_over(handover: Handover) -> None:
    """Wait for a handover sent ahead of a step that then failed before the irreversible one: nothing
    was sent, so the connector's own error goes up after it, unless the handover lost (Superseded goes
    up instead: the attempt was taken over). Its other errors are only logged, as they say nothing
    about what was sent."""
    try:
        handover()
    except Superseded:
        raise
    except Exception:
        log.warning("a handover sent ahead of a step that failed could not be waited for", exc_info=True)
