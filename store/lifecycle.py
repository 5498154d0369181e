"""Proposal state transitions as compare-and-set appends, and the reads the lifecycle needs.

Every transition runs inside one log transaction, which holds the append lock (a Postgres advisory
lock, SQLite's BEGIN IMMEDIATE): the proposal's state is read and the event appended with nobody in
between, so of two concurrent decisions exactly one wins (DESIGN.md invariant 4). Terminal decisions
also share one idempotency key per proposal (`<id>:decision`), so even a second writer that slipped
past the state check could not record a second decision. The executor's commonest transitions are
sent as one statement each that compares and sets under the lock (store.handover, store.starts):
the proposal's state and attempt, and for a start the row's position too, as its plan found them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from store import events as ev
from store import log
from store import proposals as sp
from store import tables as t
from store.db import one_of
from store.state import SqlState
from store.uow import EventStore, Transaction

# (event, dispatch?) — dispatch puts it in the outbox for the workers (memory reads corrections).
Planned = tuple[ev.NewEvent, bool]
# (proposal id, the states it may be in, what to append given its row): one compare-and-set.
Step = tuple[str, Collection[str], Callable[[dict[str, Any]], Iterable[Planned] | None]]


@dataclass(frozen=True)
class Transition:
    """The result of a compare-and-set: whether it won, and the proposal row after it (or as found)."""

    won: bool
    row: dict[str, Any] | None
    events: tuple[ev.Event, ...] = ()
    beside: tuple[dict[str, Any], ...] = ()  # the rows of a read_beside, on the first transition

    @property
    def missing(self) -> bool:
        return self.row is None


def transition(
    store: EventStore,
    proposal_id: str,
    allowed: Collection[str],
    plan: Callable[[dict[str, Any]], Iterable[Planned] | None],
    *,
    durable: bool = True,
    read_beside: tuple[Any, dict[str, Any]] | None = None,
) -> Transition:
    """Append what `plan(row)` returns if the proposal is in one of `allowed` states; else lose.

    `plan` may return None to decline after looking at the row (e.g. a lease still running).
    `durable=False`: the commit does not wait for the disk (EventStore.transaction). `read_beside`
    (statement, parameters): a read sent in the round trip that takes the lock, its rows given as the
    transition's `beside`.
    """
    step = (proposal_id, allowed, plan)
    return transition_each(store, [step], durable=durable, read_beside=read_beside)[0]


def transition_each(
    store: EventStore,
    steps: Sequence[Step],
    *,
    durable: bool = True,
    read_beside: tuple[Any, dict[str, Any]] | None = None,
) -> list[Transition]:
    """transition() for each (proposal id, allowed states, plan) in one log transaction, each won or
    lost on its own: the executor records a batch's results, or one result with the next handover,
    under one lock and one commit. The proposals are read in the round trip that takes the lock
    (and `read_beside`, given as the first transition's `beside`)."""
    ids = [proposal_id for proposal_id, _, _ in steps]
    if len(set(ids)) != len(ids):
        raise ValueError("one step per proposal in a transaction")
    return _betting_keys_are_new(
        store, lambda new_keys: _transition_each(store, ids, steps, durable, read_beside, new_keys=new_keys)
    )


def _betting_keys_are_new(store: EventStore, run: Callable[[bool], list[Transition]]) -> list[Transition]:
    """`run(new_keys)`, a transition's transaction. Each event's key names its proposal, attempt and
    step, so the log holds it only when the step was recorded before (a retry after a transient
    failure): on Postgres, bet it does not, and write the events with the projection's writes, at
    commit, in one round trip (Transaction.append_all). A lost bet commits nothing; the transition is
    then run again, planned on what the log holds."""
    if store.engine.dialect.name == "postgresql":
        try:
            return run(True)
        except IntegrityError as exc:
            if not isinstance(exc.orig, UniqueViolation):
                raise
    return run(False)


def _transition_each(
    store: EventStore,
    ids: list[str],
    steps: Sequence[Step],
    durable: bool,
    read_beside: tuple[Any, dict[str, Any]] | None,
    *,
    new_keys: bool,
) -> list[Transition]:
    others = ("proposals", _BY_ID[store.engine.dialect.name], {"ids": ids[1:]}) if ids[1:] else None
    with store.transaction(
        durable=durable,
        first_read=("proposals", {"id": ids[0]}),
        rows_read=others,
        read_beside=read_beside,
        positions_ahead=new_keys,
    ) as tx:
        tx.state.rows_ahead()
        beside = tuple(tx.rows_beside())
        rows = [tx.state.get("proposals", id=proposal_id) for proposal_id in ids]
        plans = [_plan(row, allowed, plan) for row, (_, allowed, plan) in zip(rows, steps, strict=True)]
        first, *rest = _append_plans(tx, ids, rows, plans, new_keys=new_keys)
        return [replace(first, beside=beside), *rest]


def start_batch(
    store: EventStore,
    proposal_id: str,
    allowed: Collection[str],
    plan: Callable[[dict[str, Any], SqlState], Iterable[Planned] | None],
    *,
    more: int,
    now: datetime,
    durable: bool = True,
    read_beside: tuple[Any, dict[str, Any]] | None = None,
) -> list[Transition]:
    """transition() of proposal_id and, when it wins, the same plan for up to `more` other approved
    proposals whose undo window is over (the oldest decisions first), in one log transaction: how the
    executor starts a backlog. Only the transitions won by the others are returned after the first.
    The others are read in the round trip that takes the lock, so a lone proposal costs nothing more.
    `plan(row, state)` may read the projection through `state`, the transaction's own, and may record
    a result as well (an action that acts only through the log runs as it starts): the commit then
    waits for the disk whatever `durable` says, since the operator is shown the result. On Postgres a
    lost bet (_betting_keys_are_new) plans again, in a new transaction: `plan` must not carry anything
    from one transaction over to the next. `read_beside` (statement, parameters): a read sent in the
    round trip that takes the lock too, its rows given as the first transition's `beside`.
    """
    claim = ("proposals", CLAIM, {"id": proposal_id, "now": now, "n": more, "state": "approved"})

    def run(new_keys: bool) -> list[Transition]:
        with store.transaction(
            durable=durable,
            first_read=("proposals", {"id": proposal_id}),
            rows_read=claim if more else None,
            read_beside=read_beside,
            positions_ahead=new_keys,
        ) as tx:
            row = tx.state.get("proposals", id=proposal_id)
            others = tx.state.rows_ahead()
            beside = tuple(tx.rows_beside())

            def planned(current: dict[str, Any]) -> Iterable[Planned] | None:
                return plan(current, tx.state)

            first = _plan(row, allowed, planned)
            if first is None:
                others = []
            ids = [proposal_id, *(other["id"] for other in others)]
            rows = [row, *others]
            plans = [first, *(_plan(other, allowed, planned) for other in others)]
            won = _append_plans(tx, ids, rows, plans, new_keys=new_keys)
            if any(event.type in sp.RESULTS for transition in won for event in transition.events):
                tx.wait_for_disk()
            return [replace(won[0], beside=beside), *(transition for transition in won[1:] if transition.won)]

    return _betting_keys_are_new(store, run)


def _plan(
    row: dict[str, Any] | None,
    allowed: Collection[str],
    plan: Callable[[dict[str, Any]], Iterable[Planned] | None],
) -> list[Planned] | None:
    if row is None or row["state"] not in allowed:
        return None
    planned = plan(row)
    return list(planned) if planned is not None else None


def _append_plans(
    tx: Transaction,
    ids: list[str],
    rows: list[dict[str, Any] | None],
    plans: list[list[Planned] | None],
    *,
    new_keys: bool = False,
) -> list[Transition]:
    # Every read is done: from here on the transaction reads the tables only through its state, so the
    # projection's writes can wait and go to the database together, at commit.
    state = tx.state
    state.defer()
    planned_events = [event for planned in plans if planned for event in planned]
    inserted = iter(tx.append_all(planned_events, new_keys=new_keys))
    results = []
    for proposal_id, row, planned in zip(ids, rows, plans, strict=True):
        if planned is None:
            results.append(Transition(False, row))
            continue
        appended = [next(inserted) for _ in planned]
        if not appended or appended[0].duplicate:
            results.append(Transition(False, state.get("proposals", id=proposal_id)))
            continue
        events = tuple(a.event for a in appended)
        results.append(Transition(True, state.get("proposals", id=proposal_id), events))
    return results


# Proposals by id, for transition_each: one statement per dialect, built once.
_BY_ID = {
    dialect: select(t.proposals).where(one_of(t.proposals.c.id, "ids", dialect))
    for dialect in ("postgresql", "sqlite")
}

# Approved proposals whose undo window is over, oldest decision first: a backlog the executor starts
# together (store/lifecycle.start_batch). Built once; it runs in the round trip that takes the lock.
CLAIM = (
    select(t.proposals)
    .where(
        t.proposals.c.state == bindparam("state"),
        or_(t.proposals.c.not_before.is_(None), t.proposals.c.not_before <= bindparam("now")),
        t.proposals.c.id != bindparam("id"),
    )
    .order_by(t.proposals.c.decided_at, t.proposals.c.id)
    .limit(bindparam("n"))
)


def on_proposal(proposal_id: str, event_type: str, payload: ev.Payload, key: str, **kw: Any) -> ev.NewEvent:
    """A NewEvent on a proposal's stream."""
    return ev.NewEvent(
        type=event_type, payload=payload, stream=proposal_id, idempotency_key=key, source="lifecycle", **kw
    )


def attempt_key(proposal_id: str, attempt: int, checkpoint: str) -> str:
    """The idempotency key of an attempt's checkpoint ("started", "handover" or "result"): one of each
    per attempt in the log, whichever worker appends it."""
    return f"{proposal_id}:{attempt}:{checkpoint}"


def record_proposal(
    store: EventStore,
    proposal: dict[str, Any],
    *,
    verdict: str,
    rules: list[str],
    key: str,
    refusal: str | None = None,
    expires_at: datetime | None = None,
    not_before: datetime | None = None,
    then: str | None = None,
    correlation_id: str | None = None,
) -> tuple[str, bool]:
    """Record an agent's proposal under an idempotency key; returns (proposal id, duplicate)."""
    proposal_id = sp.new_proposal_id()
    payload = sp.ProposalRecorded(
        proposal=proposal,
        verdict=verdict,
        rules=rules,
        refusal=refusal,
        expires_at=expires_at,
        not_before=not_before,
        then=then,
    )
    appended = store.append(
        on_proposal(
            proposal_id,
            "proposal.recorded",
            payload,
            key,
            actor=f"agent:{proposal.get('agent', '?')}",
            causation_id=proposal.get("event_id"),
            correlation_id=correlation_id,
        ),
        dispatch=False,
    )
    return appended.event.stream, appended.duplicate


def decision_key(proposal_id: str) -> str:
    """The one idempotency key every terminal decision on a proposal shares."""
    return f"{proposal_id}:decision"


def record_message(store: EventStore, proposal_id: str, surface: str, chat_id: str, message_id: str) -> None:
    """Remember a chat message that shows a proposal (so it can be edited in place later)."""
    store.append(
        on_proposal(
            proposal_id,
            "proposal.message_posted",
            sp.ProposalMessagePosted(surface=surface, chat_id=chat_id, message_id=message_id),
            f"{proposal_id}:msg:{surface}:{chat_id}:{message_id}",
        ),
        dispatch=False,
    )


def set_paused(store: EventStore, agent: str, paused: bool, by: str) -> None:
    """Pause or resume an agent ("*": all of them)."""
    store.append(
        ev.NewEvent(
            type="agent.paused",
            payload=sp.AgentPaused(agent=agent, paused=paused, by=by),
            stream="agents",
            idempotency_key=f"agents:{ev.new_id()}",
            actor=by,
            source="lifecycle",
        ),
        dispatch=False,
    )


# ---- reads ---------------------------------------------------------------------------------------

# A piece of a proposal id typed by hand (its start or its end) must be at least this long.
MIN_PIECE = 4
# How many proposals an ambiguous piece lists.
AMBIGUOUS_SHOWN = 5
_HANDLE = re.compile(r"^#?(\d{1,9})$")


def get_proposal(connection: Connection, proposal_id: str) -> dict[str, Any] | None:
    """The proposal row by id."""
    return SqlState(connection).get("proposals", id=proposal_id)


def find_proposal(connection: Connection, typed: str) -> dict[str, Any] | None:
    """The proposal a person typed: its id, its number (`12`, `#12`) or a unique piece of its id (the
    start, with or without `prp_`, or the end, at least MIN_PIECE characters); None when none or
    several match (`proposals_matching` tells which)."""
    found = proposals_matching(connection, typed)
    return found[0] if len(found) == 1 else None


def proposals_matching(
    connection: Connection, typed: str, limit: int = AMBIGUOUS_SHOWN
) -> list[dict[str, Any]]:
    """Every proposal (up to `limit`) the typed id, number or id piece could mean."""
    text = typed.strip()
    row = get_proposal(connection, text) if text else None
    if row is not None:
        return [row]
    p = t.proposals.c
    handle = _HANDLE.match(text)
    if handle:
        found = connection.execute(select(t.proposals).where(p.number == int(handle[1]))).first()
        if found is not None:
            return [dict(found._mapping)]
    if len(text.lower().removeprefix("prp_")) < MIN_PIECE or not text.replace("_", "").isalnum():
        return []
    piece = text.lower().replace("_", r"\_")
    core = piece.removeprefix(r"prp\_")
    query = (
        select(t.proposals)
        .where(
            or_(
                p.id.like(f"{piece}%", escape="\\"),
                p.id.like(f"prp\\_{core}%", escape="\\"),
                p.id.like(f"%{piece}", escape="\\"),
            )
        )
        .order_by(p.number)
        .limit(limit)
    )
    return [dict(found._mapping) for found in connection.execute(query)]


def messages_of(engine: Engine, proposal_id: str) -> list[dict[str, Any]]:
    """Every chat message that shows the proposal."""
    with engine.connect() as connection:
        return SqlState(connection).scan("proposal_messages", proposal_id=proposal_id)


def claim_render(engine: Engine, surface: str, chat_id: str, message_id: str, version: int) -> bool:
    """Claim a chat message for showing `version` of its proposal before editing it.

    False when the message shows (or is being given) that version or a newer one: an older render must
    not replace it.
    """
    r = t.message_renders.c
    key = and_(r.surface == surface, r.chat_id == chat_id, r.message_id == message_id)
    values = {"version": version, "rendered_at": ev.utcnow()}
    with engine.begin() as connection:
        if connection.execute(
            update(t.message_renders).where(key, r.version < version).values(values)
        ).rowcount:
            return True
        if connection.execute(select(r.version).where(key)).first() is not None:
            return False
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(t.message_renders).values(
                    surface=surface, chat_id=chat_id, message_id=message_id, **values
                )
            )
        return True
    except IntegrityError:  # claimed by a concurrent render in the meantime: compare again
        return claim_render(engine, surface, chat_id, message_id, version)


def rendered_version(engine: Engine, surface: str, chat_id: str, message_id: str) -> int:
    """The newest version of its proposal a chat message was claimed for (0: none yet)."""
    r = t.message_renders.c
    with engine.connect() as connection:
        found = connection.execute(
            select(r.version).where(r.surface == surface, r.chat_id == chat_id, r.message_id == message_id)
        ).scalar()
    return int(found or 0)


def customer_name(connection: Connection, customer_id: str) -> str | None:
    """A customer's display name (name, else company)."""
    return display_name(SqlState(connection).get("customers", id=customer_id))


def display_name(customer: Mapping[str, Any] | None) -> str | None:
    """The name a customer's row is shown by (name, else company); None without a row."""
    if customer is None:
        return None
    return customer["name"] or customer["company"]


# The name and company of the customer of the bound "proposal_id": read beside a decision, for its reply.
CUSTOMER_OF_PROPOSAL = select(t.customers.c.name, t.customers.c.company).where(
    t.customers.c.id
    == select(t.proposals.c.customer_id).where(t.proposals.c.id == bindparam("proposal_id")).scalar_subquery()
)


def in_state(connection: Connection, *states: str, limit: int = 50) -> list[dict[str, Any]]:
    """Proposals in the given states, oldest first."""
    p = t.proposals.c
    query = select(t.proposals).where(p.state.in_(states)).order_by(p.created_at, p.id).limit(limit)
    return [dict(row._mapping) for row in connection.execute(query)]


def count_in_state(connection: Connection, *states: str) -> int:
    """How many proposals are in the given states."""
    p = t.proposals.c
    return int(connection.execute(select(func.count()).where(p.state.in_(states))).scalar_one())


def open_for(connection: Connection, customer_ids: list[str], limit: int = 10) -> list[dict[str, Any]]:
    """A customer's proposals still waiting for a decision, oldest first."""
    p = t.proposals.c
    query = (
        select(t.proposals)
        .where(p.customer_id.in_(customer_ids), p.state == "pending")
        .order_by(p.created_at, p.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(query)]


def due_to_expire(connection: Connection, now: datetime) -> list[str]:
    """Pending proposals whose time is up."""
    p = t.proposals.c
    query = select(p.id).where(p.state == "pending", p.expires_at.is_not(None), p.expires_at <= now)
    return list(connection.execute(query.order_by(p.expires_at)).scalars())


def due_for_reminder(connection: Connection, now: datetime, lead: timedelta) -> list[str]:
    """Pending proposals expiring within `lead` of now that nobody was reminded of yet."""
    p = t.proposals.c
    query = select(p.id).where(
        p.state == "pending",
        p.reminded_at.is_(None),
        p.expires_at.is_not(None),
        p.expires_at > now,
        p.expires_at <= now + lead,
    )
    return list(connection.execute(query.order_by(p.expires_at)).scalars())


def expired_since(connection: Connection, since: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Proposals that expired without a decision since a time, oldest first."""
    p = t.proposals.c
    query = (
        select(t.proposals)
        .where(p.state == "expired", p.decided_at >= since)
        .order_by(p.decided_at, p.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(query)]


def due_to_wake(connection: Connection, now: datetime) -> list[str]:
    """Snoozed (or policy-deferred) proposals whose time has come."""
    p = t.proposals.c
    query = select(p.id).where(p.state == "snoozed", p.snoozed_until <= now)
    return list(connection.execute(query.order_by(p.snoozed_until)).scalars())


def due_to_run(connection: Connection, now: datetime, stale_before: datetime) -> list[str]:
    """Approved proposals whose undo window is over but were last touched before `stale_before` (their
    job may have been lost), and executions whose lease ran out (their worker died)."""
    p = t.proposals.c
    waiting = and_(
        p.state == "approved", or_(p.not_before.is_(None), p.not_before <= now), p.updated_at <= stale_before
    )
    abandoned = and_(p.state == "executing", p.lease_until <= now)
    return list(connection.execute(select(p.id).where(or_(waiting, abandoned)).order_by(p.id)).scalars())


def pauses(connection: Connection) -> dict[str, datetime]:
    """The agents paused now ("*" for all) and since when."""
    a = t.agent_pauses.c
    rows = connection.execute(select(a.agent, a.at).where(a.paused.is_(True))).all()
    return {agent: at for agent, at in rows}


def paused_agents(connection: Connection) -> set[str]:
    """Agents that may not propose now ("*" when all are paused)."""
    a = t.agent_pauses.c
    return set(connection.execute(select(a.agent).where(a.paused.is_(True))).scalars())


def corrections_for(
    connection: Connection, customer_ids: list[str], kind: str | None = None, limit: int = 10
) -> list[ev.Event]:
    """The operator's corrections for these customers (and action kind), newest first."""
    e = t.events.c
    query = (
        select(t.events)
        .where(e.type == "correction.recorded", e.stream.in_(customer_ids))
        .order_by(e.position.desc())
        .limit(limit * 4 if kind else limit)
    )
    found = [log.to_event(row._mapping) for row in connection.execute(query)]
    if kind is not None:
        found = [event for event in found if getattr(event.payload, "kind", None) == kind]
    return found[:limit]


def proposal_events(connection: Connection, proposal_id: str) -> list[ev.Event]:
    """A proposal's own events, in order."""
    return log.read_streams(connection, [proposal_id])
