"""Recording a batch of signals in one transaction with a handful of statements, not several per signal.

store.intake moves staged signals into the log in batches, under the append lock. Recorded one at a
time (Transaction.record_signal), a signal costs 6 round trips for a known customer and 17 for a new
one: its key looked up, the owners of its contact keys, its customer read and written, its event and
outbox row inserted, and more for a new customer. A BatchTransaction records the same signals with the
same code (record_signal, resolve_customer, the projector) over what `prepare` loads for the whole batch
in three queries (the log's events for the batch's keys; the owners of every contact key in the batch,
with all their keys; the customers involved: those owners, and those of the same name or among the
oldest at the same company domain as a new customer), and writes at commit, once each: the events, at the
positions the log would have given them one by one; their outbox rows; the projection rows
(store.state.BatchState). Each signal sees the effects of those before it in the batch, as it would
one by one: every read goes through the state the writes update.

A key derived from a signal's own (`…#customer`, `…#contact:…`) is taken as new unless this batch wrote
it: only a transaction that recorded the signal writes it. Were the log to hold one anyway, the insert
of the events fails, and store.intake records the batch's rows one at a time instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select

from store import events as ev
from store import log
from store import tables as t
from store.db import insert_rows, one_of
from store.identity import DOMAIN_MATCHES, IdentityLookup, company_domain, normalise_name
from store.log import storable_key
from store.state import BatchState
from store.uow import Appended, Transaction

_EVENTS = t.events.c
_CONTACTS = t.contact_points.c
_CUSTOMERS = t.customers.c


class BatchLookup:
    """IdentityLookup over a batch's state: what SqlLookup reads, served from memory where it can be.

    A company domain can have thousands of customers, and a new customer is compared with its oldest
    DOMAIN_MATCHES only, so those are all `prepare` loads of a domain: its `heads`, the ids of the oldest
    canonical customers at the domain (all of them when fewer). The oldest `limit` canonical customers
    known at the domain are then the table's oldest while every head customer is still canonical there:
    a customer not known is as the table holds it, so not canonical or younger than the heads. Otherwise
    (a head customer merged away in this batch) the table is asked.
    """

    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.heads: dict[str, list[str]] = {}

    def owners(self, keys: tuple[ev.ContactPoint, ...]) -> dict[ev.ContactPoint, str]:
        found = {}
        for key in keys:
            row = self.state.get("contact_points", kind=key.kind, value=key.value)
            if row is not None:
                found[key] = row["customer_id"]
        return found

    def keys_of(self, customer_id: str) -> set[ev.ContactPoint]:
        rows = self.state.scan("contact_points", customer_id=customer_id)
        return {ev.ContactPoint(kind=row["kind"], value=row["value"]) for row in rows}

    def customers_named(self, name_key: str) -> list[str]:
        return self._canonical(self.state.scan("customers", name_key=name_key))

    def customers_at(self, domain: str, limit: int) -> list[str]:
        head = self.heads.get(domain)
        rows = self.state.known("customers", domain=domain)
        if head is not None and rows is not None and limit <= DOMAIN_MATCHES:
            canonical = self._canonical(rows)
            if len(head) < DOMAIN_MATCHES or set(head) <= set(canonical):
                return canonical[:limit]
        self.state.flush()
        connection = self.state.connection
        query = _READS[connection.dialect.name]["heads"]
        found = [
            dict(row._mapping)
            for row in connection.execute(query, {"domains": [domain], "limit": max(limit, DOMAIN_MATCHES)})
        ]
        self.state.load("customers", found)
        self.know_heads(found, [domain])
        return self._canonical(found)[:limit]

    def know_heads(self, rows: list[dict[str, Any]], domains: Iterable[str]) -> None:
        """Note the head customers of these domains, given customer rows just read from the table that
        include every head customer of each."""
        at: dict[str, list[dict[str, Any]]] = {domain: [] for domain in domains}
        for row in rows:
            if row["domain"] in at:
                at[row["domain"]].append(row)
        for domain, at_domain in at.items():
            self.heads[domain] = self._canonical(at_domain)[:DOMAIN_MATCHES]

    @staticmethod
    def _canonical(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(row["id"] for row in rows if row["merged_into"] is None)


def _head_ids(dialect: str) -> Select[Any]:
    """The ids of the oldest `limit` canonical customers at each of the `domains`, in one query."""
    ranked = (
        select(
            _CUSTOMERS.id,
            func.row_number().over(partition_by=_CUSTOMERS.domain, order_by=_CUSTOMERS.id).label("rank"),
        )
        .where(one_of(_CUSTOMERS.domain, "domains", dialect), _CUSTOMERS.merged_into.is_(None))
        .subquery()
    )
    return select(ranked.c.id).where(ranked.c.rank <= bindparam("limit"))


def _prepare_reads(dialect: str) -> dict[str, Select[Any]]:
    """`prepare`'s reads, built once: the log's events with the `keys`; the contact points of every
    customer holding one of the `kinds` with one of the `values`; the customers with an id among
    the `owners`, a name key among the `names`, or among the head customers of the `domains`."""
    holders = select(_CONTACTS.customer_id).where(
        one_of(_CONTACTS.kind, "kinds", dialect), one_of(_CONTACTS.value, "values", dialect)
    )
    return {
        "events": select(t.events).where(one_of(_EVENTS.idempotency_key, "keys", dialect)),
        "contacts": select(t.contact_points).where(_CONTACTS.customer_id.in_(holders.scalar_subquery())),
        "customers": select(t.customers).where(
            or_(
                one_of(_CUSTOMERS.id, "owners", dialect),
                one_of(_CUSTOMERS.name_key, "names", dialect),
                _CUSTOMERS.id.in_(_head_ids(dialect)),
            )
        ),
        "heads": select(t.customers).where(_CUSTOMERS.id.in_(_head_ids(dialect))),
    }


_READS = {dialect: _prepare_reads(dialect) for dialect in ("postgresql", "sqlite")}


class BatchTransaction(Transaction):
    """A log transaction for a batch of signals: `prepare`, then record_signal each, in order."""

    def __post_init__(self) -> None:
        self.state: BatchState = BatchState(self.connection)
        self.identities = BatchLookup(self.state)
        self.known: dict[str, ev.Event] = {}  # by stored key: the log's, and this batch's
        self.rows: list[dict[str, Any]] = []  # events to insert at commit
        self.outbox: list[dict[str, Any]] = []
        self.next: int | None = None  # the position of the next event

    def prepare(self, signals: list[tuple[str, ev.Signal]]) -> None:
        """Load what recording these (idempotency key, signal) pairs reads, in three queries."""
        keys = [storable_key(key) for key, _ in signals]
        reads = _READS[self.connection.dialect.name]
        for row in self.connection.execute(reads["events"], {"keys": keys}):
            self.known[row.idempotency_key] = log.to_event(row._mapping)
        refs = [
            signal.customer for key, (_, signal) in zip(keys, signals, strict=True) if key not in self.known
        ]
        contacts = {ref: self.strong_keys(ref) for ref in refs}
        wanted = {(key.kind, key.value) for found in contacts.values() for key in found}
        rows = self._contact_rows(wanted)
        owners = {row["customer_id"] for row in rows}
        held = {(row["kind"], row["value"]) for row in rows}
        self.state.load(
            "contact_points",
            rows,
            complete=[("customer_id", owner) for owner in owners],
            absent=list(wanted - held),
        )
        # A reference none of whose keys is held may make a new customer, compared by name and domain.
        unknown = [ref for ref, own in contacts.items() if not any((k.kind, k.value) in held for k in own)]
        names = {name for ref in unknown if (name := normalise_name(ref.name))}
        domains = {
            domain
            for ref in unknown
            for key in contacts[ref]
            if key.kind == "email" and (domain := company_domain(key.value))
        }
        # The customers involved: the keys' owners, and those a new customer could be a duplicate of.
        if owners or names or domains:
            wanted_customers = {
                "owners": list(owners),
                "names": list(names),
                "domains": list(domains),
                "limit": DOMAIN_MATCHES,
            }
            result = self.connection.execute(reads["customers"], wanted_customers)
            found = [dict(row._mapping) for row in result]
            self.state.load(
                "customers",
                found,
                complete=[("name_key", name) for name in names],
                absent=[(owner,) for owner in owners - {row["id"] for row in found}],
            )
            self.identities.know_heads(found, domains)

    def _contact_rows(self, wanted: set[tuple[Any, str]]) -> list[dict[str, Any]]:
        """Every contact point of the customers holding any of these keys (and maybe of a few more).

        Asked as kind IN … AND value IN … rather than (kind, value) IN …, which Postgres plans several
        times slower for a batch's hundreds of pairs; a pair it matches that was not asked for (an
        email's value under another kind) only loads one more customer's rows, all of them."""
        if not wanted:
            return []
        kinds = sorted({kind for kind, _ in wanted})
        values = sorted({value for _, value in wanted})
        query = _READS[self.connection.dialect.name]["contacts"]
        result = self.connection.execute(query, {"kinds": kinds, "values": values})
        return [dict(row._mapping) for row in result]

    def append(self, new: ev.NewEvent, dispatch: bool = True) -> Appended:
        """As Transaction's: the key looked up (in memory), the event written at commit."""
        existing = self.find(new.idempotency_key)
        if existing is not None:
            return Appended(existing, duplicate=True)
        return self._append_new(new, dispatch)

    def append_all(self, news: list[tuple[ev.NewEvent, bool]], *, new_keys: bool = False) -> list[Appended]:
        """As Transaction's; every event is written at commit here anyway, its key looked up in memory."""
        return [self.append(new, dispatch) for new, dispatch in news]

    def find(self, idempotency_key: str) -> ev.Event | None:
        return self.known.get(storable_key(idempotency_key))

    def lookup(self) -> IdentityLookup:
        return self.identities

    def _append_new(self, new: ev.NewEvent, dispatch: bool) -> Appended:
        """As Transaction's, with the event's row and its outbox row written at commit."""
        if self.next is None:
            self.next = log.next_position(self.connection)
        values, payload = log.event_row(new)
        values["position"], self.next = self.next, self.next + 1
        event = ev.Event(**{**values, "payload": payload})
        self.rows.append(values)
        self.known[event.idempotency_key] = event
        if event.type == "customer.created":  # a customer just made has no contact points yet
            self.state.complete("contact_points", customer_id=event.stream)
        self.project(event)
        if dispatch:
            row = {"position": event.position, "event_id": event.id, "created_at": event.recorded_at}
            self.outbox.append({**row, "attempts": 0})
            self.dispatched.append(event)
        self.appended.append(event)
        return Appended(event, duplicate=False)

    def save_position(self) -> None:
        if self.rows:
            log.insert_events(self.connection, self.rows)
        if self.outbox:
            insert_rows(self.connection, t.outbox, self.outbox)
        self.state.flush()
        super().save_position()
