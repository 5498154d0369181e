"""An email's handover in one round trip (Postgres): the executor's commonest log transaction, sent whole.

A connector that cannot deduplicate (SMTP) records `action.handover` durably right before the step
that cannot be taken back, and the batch's results so far go in the same transaction
(jobs.execute). The general way (store.lifecycle.transition_each) takes the lock and reads the
proposal rows in one round trip, plans and projects in Python, and sends the writes and COMMIT in a
second: per email, more client and server CPU than the send itself. Here, where every step is an
`action.executed` result or the handover, the whole transaction is one simple query of statements
prepared on the connection (store.literals; sent again on statements prepared anew where they went):

    BEGIN; the append lock; for each step, in order, one statement: its event, inserted one past
    the last while its proposal is executing the step's attempt and the log does not hold the event's
    key, and where it was, the action row and the proposal row changed as the projector changes them
    for that event (store.proposal_projection); one statement to end: the core projection's
    position, the events' sequence moved past the last event, the last step's proposal as it ends;
    COMMIT

A step is one statement (its insert and its two updates in one WITH), not three, and so is the end:
a two-step handover sends six statements where it sent twelve, less for the client to bind and read
back and for Postgres to run (0.37 → 0.23 ms of client CPU for one, docs/benchmarks.md).

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
# (_ENDING), as the general way moves it, so a query that fails on its way (and is sent again,
# store.literals) leaves no gap in the positions.
_LAST = select(func.coalesce(func.max(_E.position), 0)).scalar_subquery()
_INSERTED = (
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
    .cte("inserted")
)


def _step_statement(action: dict[str, Any], proposal: dict[str, Any]) -> Any:
    """A step as one statement: its event inserted (_INSERTED), and where it was, the action and
    proposal rows changed as store.proposal_projection changes them for that event; the event's
    position, where it was inserted. The three run on one snapshot, so the changes read the insert's
    outcome from its RETURNING, not from the table."""
    inserted = exists(select(_INSERTED.c.position))
    action_changed = update(t.actions).where(_A.id == bindparam("aid"), inserted).values(**action)
    its_position = select(_INSERTED.c.position).scalar_subquery()
    proposal_changed = (
        update(t.proposals)
        .where(_P.id == bindparam("pid"), inserted)
        .values(**proposal, updated_at=bindparam("occurred_at"), position=its_position)
    )
    return select(_INSERTED.c.position).add_cte(
        action_changed.cte("action_changed"), proposal_changed.cte("proposal_changed")
    )


# The action and proposal rows as store.proposal_projection's _handover and _executed change them.
_HANDED = _step_statement({"state": "handover"}, {"phase": "handover"})
_EXECUTED = _step_statement(
    {"state": "executed", "reference": bindparam("reference"), "finished_at": bindparam("occurred_at")},
    {
        "state": "executed",
        "phase": "done",
        "lease_until": None,
        "result_ref": bindparam("reference"),
        "compensation": bindparam("compensation"),
        "executed_at": bindparam("occurred_at"),
        "finished_at": bindparam("occurred_at"),
    },
)

# Moves forward only, to the last event appended (the core projection has applied every one).
_POSITION = postgresql.insert(t.projection_positions).from_select(
    ["name", "position"], select(bindparam("name"), func.max(_E.position))
)
_SAVE_POSITION = _POSITION.on_conflict_do_update(
    index_elements=["name"],
    set_={"position": _POSITION.excluded.position},
    where=t.projection_positions.c.position < _POSITION.excluded.position,
).cte("position_saved")
# max() alone, so that Postgres reads it off the end of the positions' index (an aggregate beside it,
# such as a count, would read the whole log); setval is strict: on an empty log it sets nothing.
_LAST_POSITION = select(func.max(_E.position)).scalar_subquery()
# The transaction's end in one statement: the core projection's position saved, the events' sequence
# moved past the last event, and the last step's proposal as it ends (NULLs: there is no such proposal).
_ENDING = select(
    func.setval(literal_column("pg_get_serial_sequence('events', 'position')"), _LAST_POSITION),
    select(_P.state).where(_P.id == bindparam("pid")).scalar_subquery(),
    select(_P.attempts).where(_P.id == bindparam("pid")).scalar_subquery(),
).add_cte(_SAVE_POSITION)


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
            ending = {"name": CORE_PROJECTION, "pid": steps[-1].pid}
            ended = sent.add(*simple_statement(dialect, _ENDING, ending))
            sent.add("COMMIT")
            yield from sent.sending()
        ((_, state, attempt),) = sent.rows(ended)
        won = tuple(bool(sent.rows(index)) for index in inserted)
        self._outcome = Outcome(won, (str(state), int(attempt)) if state is not None else None)


def send(store: EventStore, steps: Sequence[Step]) -> Sent | None:
    """hand_over's query, sent without waiting for it (None, having sent nothing, on SQLite)."""
    if store.engine.dialect.name != "postgresql" or not steps:
        return None
    ids = [step.pid for step in steps]
    if len(set(ids)) != len(ids):
        raise ValueError("one step per proposal in a transaction")
    return Sent(store, steps)


def _add_step(sent: Any, dialect: Any, step: Step) -> int:
    """Add one step's statement to `sent`; its index (a row when its event was inserted)."""
    values, _ = log.event_row(lc.on_proposal(step.pid, step.event_type, step.payload, step.key))
    values.update(pid=step.pid, attempt=step.attempt, aid=f"{step.pid}:{step.attempt}")
    if isinstance(step.payload, sp.ActionHandover):
        return sent.add(*simple_statement(dialect, _HANDED, values))
    values.update(reference=step.payload.reference, compensation=step.payload.compensation)
    return sent.add(*simple_statement(dialect, _EXECUTED, values))
