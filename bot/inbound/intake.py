"""Recording an inbound signal: staged in the inbox, then sequenced into the log (store.intake).

Every connector (POST /signals, Stripe, email, `crm signal`, chat messages) ends here, so they all share
the idempotency and "nothing lost" behaviour (DESIGN.md invariant 2, issue 3's outbox rule). The web
routes `accept` (answer once staged); everything else `record`s (answer once in the log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.inbound.errors import InboundRefused, InvalidSignal
from store.events import CustomerRef, Signal, utcnow
from store.identity import IdentityError, normalise_email, normalise_phone
from store.intake import Staged, sequence, stage, stage_all, staging_row
from store.storable import MAX_EMAIL, unstorable

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from bot.bootstrap import App
    from store.intake_async import AsyncStager

# Deeper than any signal needs; keeps the JSON serialisers far from Python's recursion limit.
MAX_NESTING = 32


@dataclass(frozen=True)
class InboundSignal:
    """A verified, parsed signal ready to record; `key` is source-prefixed (e.g. `stripe:evt_…`)."""

    type: str
    signal: Signal
    key: str
    source: str
    occurred_at: datetime | None = None


# The source of signals written by hand or by another system (bot.inbound.signals.SOURCE).
SIGNALS_SOURCE = "signals"


@dataclass(frozen=True)
class Accepted:
    """The outcome of recording: the event id (the original one on a redelivery)."""

    event_id: str
    duplicate: bool
    type: str
    source: str
    # `data` fields the project does not read for this type, with the nearest known name.
    warnings: tuple[str, ...] = ()


def record(container: App, inbound: InboundSignal) -> Accepted:
    """Record the signal now: through the inbox like every delivery, then straight into the log.

    For chat messages, the CLI and the demo, which want the event in the log when this returns; its
    process_event job is queued on commit (a redelivery was queued the first time).
    """
    staged = _stage(container.engine, container, inbound)
    if staged.row_id is not None:
        sequence(container.store, rows=[staged.row_id])
    return Accepted(staged.event_id, staged.duplicate, inbound.type, inbound.source, _warnings(inbound))


def record_all(
    container: App, inbounds: Sequence[InboundSignal], *, along: Callable[[Connection], None]
) -> list[Accepted | InboundRefused]:
    """Record a batch now, as `record` does each: the outcome per signal, in order.

    A signal `record` would refuse is not staged and its refusal is returned in its place. The rest are
    staged in one transaction that also runs `along` (the mailbox watch stores how far it has read), so
    both commit or neither does; then they are sequenced into the log together, after anything staged
    before them. A crash between the two leaves them staged: the next batch, the sequencing job or the
    relay (jobs.relay) moves them, as for any accepted signal.
    """
    outcomes: list[Accepted | InboundRefused | None] = []
    rows, kept = [], []
    for inbound in inbounds:
        try:
            check_storable(container, inbound)
        except InboundRefused as exc:
            outcomes.append(exc)
            continue
        kept.append((len(outcomes), inbound))
        outcomes.append(None)
        rows.append(
            staging_row(
                inbound.type,
                inbound.signal,
                inbound.key,
                source=inbound.source,
                occurred_at=inbound.occurred_at,
            )
        )
    with container.engine.begin() as connection:
        staged = stage_all(connection, rows)
        along(connection)
    if any(one.row_id is not None for one in staged):
        # Everything staged until now, in staging order: a batch a crash left staged goes first.
        sequence(container.store, staged_before=utcnow())
    for (at, inbound), one in zip(kept, staged, strict=True):
        outcomes[at] = Accepted(one.event_id, one.duplicate, inbound.type, inbound.source, _warnings(inbound))
    return [outcome for outcome in outcomes if outcome is not None]


def accept(container: App, inbound: InboundSignal) -> Accepted:
    """Accept the signal for recording: durable in the inbox on return, in the log moments later.

    What the web routes answer with: one insert and no append lock, so a burst of deliveries is taken
    as fast as rows can be written; the kicker queues the job that sequences them into the log.
    """
    return _accepted(container, inbound, _stage(container.intake_engine, container, inbound))


async def accept_on_loop(container: App, stager: AsyncStager, inbound: InboundSignal) -> Accepted:
    """`accept` from the event loop with the app's async stager (Postgres): no worker thread."""
    check_storable(container, inbound)
    staged = await stager.stage(
        inbound.type, inbound.signal, inbound.key, source=inbound.source, occurred_at=inbound.occurred_at
    )
    return _accepted(container, inbound, staged)


def _warnings(inbound: InboundSignal) -> tuple[str, ...]:
    """Unread `data` fields of a signal someone wrote (POST /signals, `crm signal`); the email and
    Stripe parsers fill `data` themselves, so their fields are no news to anyone."""
    from store.signal_fields import unread_field_warnings

    if inbound.source != SIGNALS_SOURCE:
        return ()
    return tuple(unread_field_warnings(inbound.type, inbound.signal.data or {}))


def _accepted(container: App, inbound: InboundSignal, staged: Staged) -> Accepted:
    if staged.row_id is not None:
        container.intake_kicker.kick()
    return Accepted(staged.event_id, staged.duplicate, inbound.type, inbound.source, _warnings(inbound))


def check_storable(container: App, inbound: InboundSignal) -> None:
    """Refuse, naming the field, what the log could not store or the identity rules not resolve.

    Everything the sequencer could refuse is refused here, before the 202: a signal accepted is a
    signal that reaches the log.
    """
    ensure_storable(inbound.signal.model_dump(mode="json"))
    check_contacts(inbound.signal.customer, container.settings.crm_phone_region)
    problems = unstorable(inbound.signal)
    if problems:
        raise InvalidSignal(
            f"{problems[0][0]} {problems[0][1]}",
            errors=[{"field": field, "message": message} for field, message in problems],
        )


def _stage(engine: Engine, container: App, inbound: InboundSignal) -> Staged:
    check_storable(container, inbound)
    return stage(
        engine,
        inbound.type,
        inbound.signal,
        inbound.key,
        source=inbound.source,
        occurred_at=inbound.occurred_at,
    )


def check_contacts(customer: CustomerRef, phone_region: str) -> None:
    """Refuse an email or phone the identity rules cannot normalise, naming the field, before writing."""
    checks = (("email", normalise_email), ("phone", lambda value: normalise_phone(value, phone_region)))
    for field, normalise in checks:
        value = getattr(customer, field)
        if value is None:
            continue
        if field == "email" and len(value) > MAX_EMAIL:
            message = f"longer than {MAX_EMAIL} characters, the most an email address can have"
            raise InvalidSignal(
                f"customer.email is {message}", errors=[{"field": "customer.email", "message": message}]
            )
        try:
            normalise(value)
        except IdentityError as exc:
            raise InvalidSignal(
                str(exc), errors=[{"field": f"customer.{field}", "message": str(exc)}]
            ) from None


def ensure_storable(value: Any) -> None:
    """Refuse what no column can hold (NUL characters, lone UTF-16 surrogates) and absurd nesting."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise InvalidSignal(
                f"{where} is nested more than {MAX_NESTING} levels deep",
                errors=[{"field": where, "message": f"nested more than {MAX_NESTING} levels deep"}],
            )
        if isinstance(item, str):
            _check_text(where, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                path = f"{where}.{key}" if where else str(key)
                _check_text(path, str(key))
                stack.append((path, child, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child, depth + 1) for index, child in enumerate(item))


def _check_text(where: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidSignal(
            f"{where or 'body'} contains a NUL character",
            errors=[{"field": where, "message": "contains a NUL character"}],
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSignal(
            f"{where or 'body'} contains a lone surrogate",
            errors=[{"field": where, "message": "contains an unpaired UTF-16 surrogate"}],
        ) from None
