"""The unit of work: an event, the projections it changes and its outbox row, in one transaction."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from store import events as ev
from store import log, projector
from store import tables as t
from store.db import SentTogether, end_failed_commit, opened_by_first_query
from store.identity import IdentityLookup, company_domain, resolve, strong_keys
from store.state import SqlState
from store.storable import check_storable

CORE_PROJECTION = "core"

# The stage a customer first seen through a signal of this type starts in.
_FIRST_STAGE = {
    "invoice.created": "customer",
    "invoice.overdue": "customer",
    "invoice.paid": "customer",
    "subscription.created": "customer",
    "subscription.updated": "customer",
    "subscription.renewal_due": "customer",
    "subscription.cancelled": "churned",
}


def new_customer_id() -> str:
    """`cus_` + milliseconds + randomness: unique, and sorting by id sorts by creation time."""
    return f"cus_{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Appended:
    event: ev.Event
    duplicate: bool


class SqlLookup:
    """IdentityLookup over the projection tables, inside the current transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # Every key of the customers owners() found, read in the same query (keys_of is asked next).
        self._keys: dict[str, set[ev.ContactPoint]] = {}

    def owners(self, keys: tuple[ev.ContactPoint, ...]) -> dict[ev.ContactPoint, str]:
        cp = t.contact_points.c
        holders = select(cp.customer_id).where(
            tuple_(cp.kind, cp.value).in_([(k.kind, k.value) for k in keys])
        )
        rows = self.connection.execute(
            select(cp.kind, cp.value, cp.customer_id).where(cp.customer_id.in_(holders.scalar_subquery()))
        )
        found: dict[ev.ContactPoint, str] = {}
        for kind, value, customer_id in rows:
            key = ev.ContactPoint(kind=kind, value=value)
            self._keys.setdefault(customer_id, set()).add(key)
            found[key] = customer_id
        return {key: found[key] for key in keys if key in found}

    def keys_of(self, customer_id: str) -> set[ev.ContactPoint]:
        if customer_id in self._keys:
            return set(self._keys[customer_id])
        cp = t.contact_points.c
        rows = self.connection.execute(select(cp.kind, cp.value).where(cp.customer_id == customer_id))
        return {ev.ContactPoint(kind=kind, value=value) for kind, value in rows}

    def customers_named(self, name_key: str) -> list[str]:
        c = t.customers.c
        query = select(c.id).where(c.name_key == name_key, c.merged_into.is_(None)).order_by(c.id)
        return list(self.connection.execute(query).scalars())

    def customers_at(self, domain: str, limit: int) -> list[str]:
        c = t.customers.c
        query = select(c.id).where(c.domain == domain, c.merged_into.is_(None)).order_by(c.id).limit(limit)
        return list(self.connection.execute(query).scalars())


# The core projection's position statements, built once (they run on every transaction).
_POSITIONS = t.projection_positions
_APPLIED = select(_POSITIONS.c.position).where(_POSITIONS.c.name == CORE_PROJECTION)


def _save_applied(dialect: Any) -> Any:
    """Sets the position, or moves it forward only: one statement whether or not the row exists yet."""
    stmt = dialect.insert(_POSITIONS).values(name=CORE_PROJECTION, position=bindparam("p"))
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"position": stmt.excluded.position},
        where=_POSITIONS.c.position < stmt.excluded.position,
    )


_SAVE_APPLIED = {"postgresql": _save_applied(postgresql), "sqlite": _save_applied(sqlite)}
_OUTBOX = insert(t.outbox)


@dataclass
class Transaction:
    """One write transaction on the log. Appends are serialised for its whole duration."""

    connection: Connection
    phone_region: str = "US"
    appended: list[ev.Event] = field(default_factory=list)
    dispatched: list[ev.Event] = field(default_factory=list)  # those with an outbox row
    # The core projection's position as this transaction knows it (None until it applies an event),
    # and whether it moved since it was written: it is written once, at commit, however many events.
    applied: int | None = None
    applied_unsaved: bool = False
    # A batch asks for a signal's strong keys up to three times (check, prepare, resolution), and
    # checks it twice (check, record_signal): each is worked out once per transaction.
    _keys: dict[ev.CustomerRef, tuple[ev.ContactPoint, ...]] = field(default_factory=dict, repr=False)
    _checked: dict[int, ev.Signal] = field(default_factory=dict, repr=False)  # by id, held so ids stay unique
    # The next position to give an event appended at commit: where to read it until it is read
    # (read_positions_ahead's (sent, index)), None when it was not read ahead.
    _next_position: Any = field(default=None, repr=False)
    # The rows of EventStore.transaction's read_beside (none when it was not asked).
    rows_beside: Callable[[], list[dict[str, Any]]] = field(default=list, repr=False)

    def __post_init__(self) -> None:
        self.state = SqlState(self.connection, remember=True)

    def find(self, idempotency_key: str) -> ev.Event | None:
        return log.find_by_key(self.connection, idempotency_key)

    def check(self, signal: ev.Signal) -> None:
        """Raise what record_signal would for a signal that cannot be recorded, before anything is written
        (store.intake leaves such a signal out of its batch)."""
        check_storable(signal)
        self.strong_keys(signal.customer)
        self._checked[id(signal)] = signal

    def strong_keys(self, ref: ev.CustomerRef) -> tuple[ev.ContactPoint, ...]:
        """store.identity.strong_keys(ref) in this transaction's phone region, normalised once."""
        keys = self._keys.get(ref)
        if keys is None:
            keys = self._keys[ref] = strong_keys(ref, self.phone_region)
        return keys

    def prepare(self, signals: list[tuple[str, ev.Signal]]) -> None:
        """Load up front what recording these (idempotency key, signal) pairs reads; each has passed
        `check`. Nothing here: this transaction reads as it goes (store.batch's loads in bulk)."""

    def append(self, new: ev.NewEvent, dispatch: bool = True) -> Appended:
        """Append unless the key is known (then return the original); project it; queue it for work."""
        return self._appended_unless_known(new, log.insert_unless_known(self.connection, new), dispatch)

    def append_all(self, news: list[tuple[ev.NewEvent, bool]], *, new_keys: bool = False) -> list[Appended]:
        """append() for each (event, dispatch?), the events inserted together: one round trip on Postgres
        for a batch of actions' checkpoints (store.log.insert_all_unless_known).

        `new_keys`: the caller bets that the log holds none of the keys, in a transaction that read the
        next position with its lock (EventStore.transaction's positions_ahead) and holds its writes
        back: the events are then written with those writes, at commit, at positions given here, and
        this costs no round trip. A key the log does hold fails the commit (IntegrityError, a unique
        violation): nothing is written, and the caller appends again without the bet."""
        if new_keys and self._next_position is not None:
            return [self._appended(self._append_at_commit(new), dispatch) for new, dispatch in news]
        inserted = log.insert_all_unless_known(self.connection, [new for new, _ in news])
        return [
            self._appended_unless_known(new, event, dispatch)
            for (new, dispatch), event in zip(news, inserted, strict=True)
        ]

    def _appended_unless_known(self, new: ev.NewEvent, event: ev.Event | None, dispatch: bool) -> Appended:
        """The insert's result: the event inserted, projected; or None, the log's event under that key."""
        if event is None:
            existing = self.find(new.idempotency_key)
            assert existing is not None  # the append lock keeps the key from vanishing meanwhile
            return Appended(existing, duplicate=True)
        return self._appended(event, dispatch)

    def _append_new(self, new: ev.NewEvent, dispatch: bool) -> Appended:
        """append() for an event whose key the caller has just looked up, in this transaction."""
        return self._appended(log.insert_event(self.connection, new), dispatch)

    def read_positions_ahead(self, sent: SentTogether) -> None:
        """Add the read of the next position to `sent`, the statements that take the lock (Postgres;
        see append_all's new_keys)."""
        self._next_position = (sent, sent.add(log.NEXT_POSITION_SQL))

    def _append_at_commit(self, new: ev.NewEvent) -> ev.Event:
        """The event at the next position, its insert held back with the transaction's other writes."""
        if not isinstance(self._next_position, int):
            sent, index = self._next_position
            self._next_position = int(sent.rows(index)[0][0])
        values, model = log.event_row(new)
        values["position"] = self._next_position
        self._next_position += 1
        self.state.write(log.INSERT_AT, values)
        return ev.Event(**{**values, "payload": model})

    def _appended(self, event: ev.Event, dispatch: bool) -> Appended:
        """Project a just-inserted event and give it its outbox row when it is work for the workers."""
        # No need to ask whether the projections applied it: its position was drawn under the append
        # lock, after every committed event's, and the projections never run ahead of the log.
        projector.apply(event, self.state)
        self._applied_up_to(event.position)
        if dispatch:
            self.state.write(
                _OUTBOX,
                {
                    "position": event.position,
                    "event_id": event.id,
                    "created_at": event.recorded_at,
                    "attempts": 0,
                },
            )
            self.dispatched.append(event)
        self.appended.append(event)
        return Appended(event, duplicate=False)

    def project(self, event: ev.Event) -> None:
        """Apply an event read back from the log unless the core projections have applied its position."""
        if self.applied is None:
            self.applied = self.connection.execute(_APPLIED).scalar_one_or_none() or 0
        if event.position <= self.applied:
            return
        projector.apply(event, self.state)
        self._applied_up_to(event.position)

    def _applied_up_to(self, position: int) -> None:
        self.applied = max(self.applied or 0, position)
        self.applied_unsaved = True

    def save_position(self) -> None:
        """Write the projection's position once for the whole transaction (held with the other writes)."""
        if self.applied_unsaved:
            self.state.write(_SAVE_APPLIED[self.connection.dialect.name], {"p": self.applied})
            self.applied_unsaved = False
        if isinstance(self._next_position, int):  # events were given positions: move the sequence on
            self.state.write(log.SET_SEQUENCE, {"last": self._next_position - 1})

    def wait_for_disk(self) -> None:
        """Make the commit wait for the disk, though the transaction began as one that need not
        (EventStore.transaction(durable=False)); sent with the held writes."""
        if self.connection.dialect.name == "postgresql":
            self.state.write(log.WAIT, {})

    def finish(self, commit: Callable[[], None]) -> None:
        """Save the position, send every held write and commit: one round trip on Postgres (see
        SqlState.flush_and_commit), in which the lock taken at BEGIN is held for the shortest time."""
        self.save_position()
        try:
            self.state.flush_and_commit(commit)
        except BaseException:
            end_failed_commit(self.connection)
            raise

    def lookup(self) -> IdentityLookup:
        """What identity resolution reads customers through in this transaction."""
        return SqlLookup(self.connection)

    def record_signal(
        self,
        signal_type: str,
        signal: ev.Signal,
        idempotency_key: str,
        *,
        source: str,
        actor: str = "outside",
        occurred_at: datetime | None = None,
        confidence: float | None = None,
        correlation_id: str | None = None,
        event_id: str | None = None,
    ) -> Appended:
        """Record a signal against the customer it resolves to (created, extended or merged as needed).

        event_id is the id the event gets when it is new (the intake promised it to the sender).
        """
        existing = self.find(idempotency_key)
        if existing is not None:
            return Appended(existing, duplicate=True)
        # Refused here on SQLite too, which would store what Postgres refuses (store.storable).
        if self._checked.get(id(signal)) is not signal:
            check_storable(signal)
        customer_id = self.resolve_customer(
            signal.customer,
            idempotency_key,
            occurred_at=occurred_at,
            source=source,
            first_stage=_FIRST_STAGE.get(signal_type, "lead"),
        )
        return self._append_new(
            ev.NewEvent(
                type=signal_type,
                payload=signal,
                stream=customer_id,
                idempotency_key=idempotency_key,
                actor=actor,
                source=source,
                confidence=confidence,
                correlation_id=correlation_id,
                occurred_at=occurred_at,
                **({"id": event_id} if event_id else {}),
            ),
            dispatch=True,
        )

    def resolve_customer(
        self,
        ref: ev.CustomerRef,
        key_base: str,
        *,
        occurred_at: datetime | None = None,
        source: str = "internal",
        first_stage: str = "lead",
        created: ev.CustomerCreated | None = None,
        created_key: str | None = None,
    ) -> str:
        """The canonical customer for ref, recording creation, new keys and merges as events.

        Every event written here is keyed off key_base, so retrying the same signal writes nothing new.
        """
        resolution = resolve(ref, self.lookup(), self.phone_region, self.strong_keys(ref))

        def emit(
            suffix: str,
            stream: str,
            event_type: str,
            payload: ev.Payload,
            key: str | None = None,
            dispatch: bool = False,
        ) -> None:
            self.append(
                ev.NewEvent(
                    type=event_type,
                    payload=payload,
                    stream=stream,
                    idempotency_key=key or f"{key_base}#{suffix}",
                    source=source,
                    occurred_at=occurred_at,
                ),
                dispatch=dispatch,
            )

        if resolution.customer_id is None:
            customer_id = new_customer_id()
            email = next((k.value for k in resolution.new_keys if k.kind == "email"), None)
            payload = created or ev.CustomerCreated(stage=first_stage)
            payload = payload.model_copy(
                update={
                    "name": payload.name or ref.name or ref.company or email,
                    "company": payload.company or ref.company,
                    "domain": payload.domain or company_domain(email),
                    "contacts": tuple(resolution.new_keys),
                }
            )
            emit("customer", customer_id, "customer.created", payload, key=created_key)
            for other, reason in resolution.possible_duplicates:
                emit(
                    f"dup:{other}",
                    customer_id,
                    "customer.possible_duplicate",
                    ev.PossibleDuplicate(other_id=other, reason=reason),
                    dispatch=True,  # put to the operator: Merge / Not the same (jobs.handlers)
                )
            return customer_id
        customer_id = resolution.customer_id
        for merged, reason in resolution.merges:
            emit(
                f"merge:{merged}",
                customer_id,
                "customer.merged",
                ev.CustomerMerged(merged=merged, reason=reason),
                dispatch=True,  # announced to the operator with Undo (jobs.handlers)
            )
        for key in resolution.new_keys:
            emit(
                f"contact:{key.kind}:{key.value}",
                customer_id,
                "customer.contact_added",
                ev.ContactAdded(contact=key),
            )
        return customer_id


class EventStore:
    """The log and its core projections over one engine."""

    def __init__(
        self,
        engine: Engine,
        phone_region: str = "US",
        after_commit: Callable[[list[ev.Event]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.phone_region = phone_region
        # Called with the events that got an outbox row, once their transaction has committed: the
        # composition root hands them to the queue. It must not raise (the outbox keeps them safe).
        self.after_commit = after_commit

    @contextmanager
    def transaction(
        self,
        kind: type[Transaction] = Transaction,
        *,
        durable: bool = True,
        first_read: tuple[str, dict[str, Any]] | None = None,
        rows_read: tuple[str, Any, dict[str, Any]] | None = None,
        read_beside: tuple[Any, dict[str, Any]] | None = None,
        positions_ahead: bool = False,
    ) -> Iterator[Transaction]:
        """A write transaction on the log; `kind` a Transaction subclass (store.batch's, for a batch).

        `durable=False` only where losing the commit to a crash of Postgres is harmless (see
        store.log.lock_for_append): its commit returns without waiting for the disk. `first_read`
        (table, primary key): the row the transaction reads first, read in the round trip that takes
        the lock. `rows_read` (table, statement, parameters): a read of whole rows sent in that round
        trip too, taken with `tx.state.rows_ahead()`. `read_beside` (statement, parameters): any
        other read sent in it, whose rows `tx.rows_beside()` takes. `positions_ahead`: the next
        position is read in it as well, for appends at commit (Transaction.append_all's new_keys).
        """
        with self.engine.connect() as connection, opened_by_first_query(connection) as sent:
            # Postgres: BEGIN, the lock and the reads go together, as one query (store.db).
            log.lock_for_append(connection, durable=durable, sent=sent)
            tx = kind(connection, self.phone_region)
            if first_read is not None:
                table, key = first_read
                tx.state.read_ahead(sent, table, **key)
            if rows_read is not None:
                tx.state.read_ahead_rows(sent, *rows_read)
            if read_beside is not None:
                tx.rows_beside = tx.state.read_beside(sent, *read_beside)
            if positions_ahead and sent is not None:
                tx.read_positions_ahead(sent)
            if sent is not None:
                sent.send()
            yield tx
            tx.finish(connection.commit)
        if tx.dispatched and self.after_commit is not None:
            self.after_commit(list(tx.dispatched))

    def append(self, new: ev.NewEvent, dispatch: bool = True) -> Appended:
        with self.transaction() as tx:
            tx.state.defer()  # one event: its projection reads go through the state, its writes wait
            return tx.append(new, dispatch=dispatch)

    def record_signal(
        self, signal_type: str, signal: ev.Signal, idempotency_key: str, **kwargs: object
    ) -> Appended:
        with self.transaction() as tx:
            return tx.record_signal(signal_type, signal, idempotency_key, **kwargs)  # type: ignore[arg-type]

    def get(self, event_id: str) -> ev.Event | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(t.events).where(t.events.c.id == event_id)).first()
        return log.to_event(row._mapping) if row is not None else None

    def read_all(self, after: int = 0, batch: int = 5_000) -> Iterator[ev.Event]:
        return log.read_all(self.engine, after=after, batch=batch)
