"""An email's handover in one round trip (Postgres): the executor's commonest log transaction, sent whole.

A connector that cannot deduplicate (SMTP) records `action.handover` durably right before the step
that cannot be taken back, and the batch's results so far go in the same transaction
(jobs.execute). The general way (store.lifecycle.transition_each) takes the lock and reads the
proposal rows in one round trip, plans and projects in Python, and sends the writes and COMMIT in a
second: per email, more client and server CPU than the send itself. Here, where every step is an
`action.executed` result or the handover, the whole transaction is one simple query of statements
prepared on the connection (store.literals; sent again on statements prepared anew where they went):

    BEGIN; the append lock; for each step, in order: its event, inserted one past the last while
    its proposal is executing the step's attempt and the log does not hold the event's key; the
    action row and the proposal row changed as the projector changes them for that event
    (store.proposal_projection), where that event was inserted; the core projection's position; the
    last step's proposal as it ends; the events' sequence moved past the last event; COMMIT

Each step wins or loses on its own, as a compare-and-set of transition_each does: under the append lock
nothing moves between a step's guard and its writes. A step that loses writes nothing and takes no
position, and nothing draws from the sequence before the COMMIT's statement, so positions stay gap-free
as in the general way. A step loses: a result whose proposal moved on, or a handover the log holds
already (a retry of the same attempt after a transient failure, which then goes on: the caller reads
the proposal's state and attempt as this transaction left it). SQLite, and any other result (a
failure, effect events), go the general way.

`send` sends the query without waiting for it: the email connector sends the SMTP envelope while it
commits (jobs.execute._HandingOver), and waits for it before DATA.

The rows written must be those the projector writes for the same events: tests/integration/
test_handover.py replays the log over the live rows and compares them, for every step's outcome.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, bindparam, cast, exists, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql

from store import lifecycle as lc
from store import log
from store import proposals as sp
from store import tables as t
from store.db import opened_by_first_query, simple_statement
from store.uow import CORE_PROJECTION, EventStore

_P, _A, _E = t.proposals.c, t.actions.c, t.events.c
_EVENT_COLUMNS = tuple(column for column in t.events.c if column.name != "position")
# A step's event is inserted while its proposal is executing the attempt that took the step and the
# log does not hold its key (a retry's step recorded before), one past the last event. The sequence is
# not drawn from here: it is moved past the last event by the query's last statement before COMMIT
# (_SET_SEQUENCE), as the general way moves it, so a query that fails on its way (and is sent again,
# store.literals) leaves no gap in the positions.
_LAST = select(func.coalesce(func.max(_E.position), 0)).scalar_subquery()
_INSERT_EVENT = (
    insert(t.events)
    .from_select(
        ["position", *(column.name for column in _EVENT_COLUMNS)],
        select(
            _LAST + 1,
            # Typed values (`%(id)s::VARCHAR`, without a length, so an overlong one is refused by the
            # column as in the general way): a select list gives Postgres nothing to infer them from.
            *(
                cast(bindparam(column.name), Float)
                if column.name == "confidence"
                else bindparam(column.name, type_=column.type)
                for column in _EVENT_COLUMNS
            ),
        ).where(
            exists().where(
                _P.id == bindparam("pid"), _P.state == "executing", _P.attempts == bindparam("attempt")
            ),
            ~exists().where(_E.idempotency_key == bindparam("idempotency_key")),
        ),
    )
    .returning(_E.position)
)
# max() alone, so that Postgres reads it off the end of the positions' index (an aggregate beside it,
# such as a count, would read the whole log); setval is strict: on an empty log it sets nothing.
_LAST_POSITION = select(func.max(_E.position).label("last")).subquery()
_SET_SEQUENCE = select(
    func.setval(literal_column("pg_get_serial_sequence('events', 'position')"), _LAST_POSITION.c.last)
)

# The rows change only where this transaction inserted the step's event (by its id).
_INSERTED = exists().where(_E.id == bindparam("new_event"))
_ITS_POSITION = select(_E.position).where(_E.id == bindparam("new_event")).scalar_subquery()
# The action and proposal rows as store.proposal_projection's _handover and _executed change them.
_ACTION_HANDED = update(t.actions).where(_A.id == bindparam("aid"), _INSERTED).values(state="handover")
_PROPOSAL_HANDED = (
    update(t.proposals)
    .where(_P.id == bindparam("pid"), _INSERTED)
    .values(phase="handover", updated_at=bindparam("at"), position=_ITS_POSITION)
)
_ACTION_EXECUTED = (
    update(t.actions)
    .where(_A.id == bindparam("aid"), _INSERTED)
    .values(state="executed", reference=bindparam("reference"), finished_at=bindparam("at"))
)
_PROPOSAL_EXECUTED = (
    update(t.proposals)
    .where(_P.id == bindparam("pid"), _INSERTED)
    .values(
        state="executed",
        phase="done",
        lease_until=None,
        result_ref=bindparam("reference"),
        compensation=bindparam("compensation"),
        executed_at=bindparam("at"),
        finished_at=bindparam("at"),
        updated_at=bindparam("at"),
        position=_ITS_POSITION,
    )
)
# Moves forward only, to the last event appended (the core projection has applied every one).
_POSITION = postgresql.insert(t.projection_positions).from_select(
    ["name", "position"], select(bindparam("name"), func.max(_E.position))
)
_SAVE_POSITION = _POSITION.on_conflict_do_update(
    index_elements=["name"],
    set_={"position": _POSITION.excluded.position},
    where=t.projection_positions.c.position < _POSITION.excluded.position,
)
_AS_IT_ENDS = select(_P.state, _P.attempts).where(_P.id == bindparam("pid"))


@dataclass(frozen=True)
class Step:
    """One compare-and-set of a handover's transaction: `payload`, an ActionExecuted or the
    ActionHandover, appended on proposal `pid` while it is executing `attempt`."""

    pid: str
    attempt: int
    payload: sp.ActionExecuted | sp.ActionHandover

    @property
    def event_type(self) -> str:
        return "action.handover" if isinstance(self.payload, sp.ActionHandover) else "action.executed"

    @property
    def key(self) -> str:
        return lc.attempt_key(
            self.pid, self.attempt, "handover" if self.event_type == "action.handover" else "result"
        )


@dataclass(frozen=True)
class Outcome:
    """Which steps won, and the last step's proposal (state, attempt) as the transaction left it (None:
    there is no such proposal)."""

    won: tuple[bool, ...]
    last: tuple[str, int] | None


def hand_over(store: EventStore, steps: Sequence[Step]) -> Outcome | None:
    """Append each step's event where its proposal is still executing its attempt, in one durable
    transaction sent as one query. None, having written nothing, on SQLite (the caller then goes the
    general way)."""
    sent = send(store, steps)
    return sent.outcome() if sent is not None else None


class Sent:
    """A handover on its way (`send`): Postgres runs it while the caller does something else, and
    `outcome` waits for it. The caller must take the outcome: the query holds a connection until then."""

    def __init__(self, store: EventStore, steps: Sequence[Step]) -> None:
        self._outcome: Outcome | None = None
        self._running: Iterator[None] | None = self._run(store, steps)
        next(self._running)  # up to the query sent (an error raises here, with nothing left running)

    def outcome(self) -> Outcome:
        if self._running is not None:
            running, self._running = self._running, None
            for _ in running:  # the rest: the rows read, the connection given back
                pass
        assert self._outcome is not None
        return self._outcome

    def _run(self, store: EventStore, steps: Sequence[Step]) -> Iterator[None]:
        dialect = store.engine.dialect
        with store.engine.connect() as connection, opened_by_first_query(connection) as sent:
            assert sent is not None
            sent.add(log.LOCK)
            inserted = [_add_step(sent, dialect, step) for step in steps]
            sent.add(*simple_statement(dialect, _SAVE_POSITION, {"name": CORE_PROJECTION}))
            ended = sent.add(*simple_statement(dialect, _AS_IT_ENDS, {"pid": steps[-1].pid}))
            sent.add(*simple_statement(dialect, _SET_SEQUENCE, {}))
            sent.add("COMMIT")
            yield from sent.sending()
        last = sent.rows(ended)
        won = tuple(bool(sent.rows(index)) for index in inserted)
        self._outcome = Outcome(won, (str(last[0][0]), int(last[0][1])) if last else None)


def send(store: EventStore, steps: Sequence[Step]) -> Sent | None:
    """hand_over's query, sent without waiting for it (None, having sent nothing, on SQLite)."""
    if store.engine.dialect.name != "postgresql" or not steps:
        return None
    ids = [step.pid for step in steps]
    if len(set(ids)) != len(ids):
        raise ValueError("one step per proposal in a transaction")
    return Sent(store, steps)


def _add_step(sent: Any, dialect: Any, step: Step) -> int:
    """Add one step's statements to `sent`; the index of its event's insert (a row when it won)."""
    values, _ = log.event_row(lc.on_proposal(step.pid, step.event_type, step.payload, step.key))
    index = sent.add(
        *simple_statement(dialect, _INSERT_EVENT, {**values, "pid": step.pid, "attempt": step.attempt})
    )
    new_event, at = values["id"], values["occurred_at"]
    aid = f"{step.pid}:{step.attempt}"
    if isinstance(step.payload, sp.ActionHandover):
        sent.add(*simple_statement(dialect, _ACTION_HANDED, {"aid": aid, "new_event": new_event}))
        sent.add(
            *simple_statement(dialect, _PROPOSAL_HANDED, {"pid": step.pid, "new_event": new_event, "at": at})
        )
    else:
        result = {"new_event": new_event, "at": at, "reference": step.payload.reference}
        sent.add(*simple_statement(dialect, _ACTION_EXECUTED, {"aid": aid, **result}))
        changes = {"pid": step.pid, "compensation": step.payload.compensation, **result}
        sent.add(*simple_statement(dialect, _PROPOSAL_EXECUTED, changes))
    return index
