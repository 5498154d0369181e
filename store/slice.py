"""The customer context slice: what a person (or an agent) needs to decide in twenty seconds.

Built from projections for "now", or from the customer's own events for a past date (time travel).
"""

from __future__ import annotations

import difflib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Select, String, bindparam, func, or_, select

from store import events as ev
from store import log, projector
from store import tables as t
from store.db import one_of
from store.identity import normalise_name
from store.state import MemoryState, ProjectionState, SqlState

RECENT_EVENTS = 10
TOUCH_TYPES = (
    "message.received",
    "message.sent",
    "lead.created",
    "note.added",
    "invoice.overdue",
    "invoice.paid",
)
# What the bot sends a customer, as the slice's recent touches name it.
SENT_KINDS = {"send_email": "email sent", "send_chat_reply": "chat reply sent"}
# The escape character of customer search's LIKE patterns (the same on SQLite and Postgres).
LIKE_ESCAPE = "\\"


class Touch(BaseModel):
    event_id: str
    position: int
    type: str
    occurred_at: datetime
    summary: str


class ContextSlice(BaseModel):
    """One customer's picture. Amounts are integer cents."""

    id: str
    name: str | None
    company: str | None
    stage: str
    mrr_cents: int
    lifetime_value_cents: int
    renewal_date: date | None
    notes: str | None
    timezone: str | None
    created_at: datetime
    last_touch_at: datetime | None
    merged_ids: list[str]
    contacts: list[dict[str, str]]
    open_invoices: list[dict[str, Any]]
    subscriptions: list[dict[str, Any]]
    deals: list[dict[str, Any]]
    open_tasks: list[dict[str, Any]]
    recent_notes: list[dict[str, Any]]
    possible_duplicates: list[dict[str, Any]]
    recent: list[Touch]
    as_of: datetime | None = None


def summarise(event: ev.Event) -> str:
    """A one-line description of an event for a person."""
    p = event.payload
    if isinstance(p, ev.Signal):
        data = p.typed_data()
        if isinstance(data, ev.InvoiceData):
            return f"{event.type}: {data.invoice_id} {data.cents() / 100:.2f} {data.currency.upper()}"
        if isinstance(data, ev.SubscriptionData):
            return f"{event.type}: {data.plan or data.subscription_id or ''} renews {data.renews_on or '?'}"
        subject = data.subject if isinstance(data, ev.MessageData) else None
        text = (p.text or "").strip().replace("\n", " ")
        return f"{event.type}: {subject + ' — ' if subject else ''}{text[:120]}"
    if isinstance(p, ev.NoteAdded):
        return f"note by {p.author}: {p.text[:120]}"
    return event.type


def find_customers(connection: Connection, query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Canonical customers matching an id, email, domain, or (part of) a name or company.

    A customer merged into another is found by its old id, name or company too, as the one it is
    part of now (`/customer beta` after Beta was merged into Acme shows Acme).
    """
    c = t.customers.c
    needle = query.strip()
    if not needle:
        return []
    lowered = needle.lower()
    by_key = select(t.contact_points.c.customer_id).where(
        t.contact_points.c.value.in_([needle, lowered, lowered.lstrip("@")])
    )
    exact = select(t.customers).where(or_(c.id == needle, c.id.in_(by_key), c.domain == lowered.lstrip("@")))
    rows = connection.execute(exact.order_by(c.id).limit(limit)).all()
    key = normalise_name(needle)
    if not rows and key:
        # `%` and `_` in a query are literal characters, never LIKE wildcards (`crm customer %`
        # must not list everyone).
        pattern = f"%{_escape_like(key)}%"
        fuzzy = select(t.customers).where(
            or_(
                c.name_key.like(pattern, escape=LIKE_ESCAPE),
                func.lower(c.company).like(pattern.lower(), escape=LIKE_ESCAPE),
            ),
        )
        rows = connection.execute(fuzzy.order_by(c.merged_into.is_not(None), c.name).limit(limit)).all()
    return _canonical_rows(connection, [dict(row._mapping) for row in rows])


def _canonical_rows(connection: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row replaced by the canonical customer it is part of, each customer once, in order."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = {row["id"]}
        while row["merged_into"] is not None and row["merged_into"] not in seen:
            into = connection.execute(
                select(t.customers).where(t.customers.c.id == row["merged_into"])
            ).first()
            if into is None:
                break
            row = dict(into._mapping)
            seen.add(row["id"])
        found.setdefault(row["id"], row)
    return list(found.values())


def find_merged(connection: Connection, query: str | None, limit: int = 10) -> list[dict[str, Any]]:
    """Customers merged into another now, matching an id, a contact they brought, or (part of) a name;
    every merged customer when `query` is None. Newest merge first."""
    c, cp = t.customers.c, t.contact_points.c
    merged = select(t.customers).where(c.merged_into.is_not(None))
    needle = (query or "").strip()
    if needle:
        lowered = needle.lower()
        brought = select(cp.origin_customer_id).where(cp.value.in_([needle, lowered, lowered.lstrip("@")]))
        key = normalise_name(needle) or lowered
        merged = merged.where(
            or_(
                c.id == needle,
                c.id.in_(brought),
                c.name_key.like(f"%{_escape_like(key)}%", escape=LIKE_ESCAPE),
                func.lower(c.company).like(f"%{_escape_like(lowered)}%", escape=LIKE_ESCAPE),
            )
        )
    rows = connection.execute(merged.order_by(c.position.desc()).limit(limit)).all()
    return [dict(row._mapping) for row in rows]


def _escape_like(text: str) -> str:
    """text with LIKE's wildcards and the escape character itself made literal."""
    for special in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, LIKE_ESCAPE + special)
    return text


def closest_names(connection: Connection, query: str, limit: int = 3) -> list[str]:
    """Names nearest to a query that matched nothing, for "did you mean"."""
    c = t.customers.c
    names = connection.execute(select(c.name).where(c.merged_into.is_(None), c.name.is_not(None))).scalars()
    return difflib.get_close_matches(query, list(names), n=limit, cutoff=0.4)


def group_of(connection: Connection, customer_id: str) -> list[str]:
    """The customer and everyone merged into them, directly or through a chain."""
    group, frontier = [customer_id], [customer_id]
    while frontier:
        absorbed = connection.execute(
            select(t.customers.c.id).where(t.customers.c.merged_into.in_(frontier))
        ).scalars()
        frontier = [cid for cid in absorbed if cid not in group]
        group.extend(frontier)
    return group


def group_query(customer: Any = None) -> Select[Any]:
    """group_of as a subquery over the bound parameter "customer_id" (or the expression `customer`),
    for a read that wants the group's rows in the same round trip."""
    c = t.customers.c
    root = bindparam("customer_id", type_=String) if customer is None else customer
    group = select(root.label("id")).cte("customer_group", recursive=True)
    # UNION, not UNION ALL: a cycle of merges (which should never be) ends instead of looping.
    group = group.union(select(c.id).where(c.merged_into == group.c.id))
    return select(group.c.id)


def groups_query(dialect: str) -> Any:
    """group_query for several customers at once, over the bound list "customer_ids": a CTE of (root,
    id), each root with itself and every customer merged into it, transitively."""
    c = t.customers.c
    roots = select(c.id.label("root"), c.id.label("id")).where(one_of(c.id, "customer_ids", dialect))
    group = roots.cte("customer_groups", recursive=True)
    return group.union(select(group.c.root, c.id).where(c.merged_into == group.c.id))


def _ever_merged_into(connection: Connection, group: list[str]) -> list[str]:
    """The group plus every customer the log shows merged into one of its members, transitively."""
    e = t.events.c
    group, frontier = list(group), list(group)
    while frontier:
        query = select(e.payload).where(e.stream.in_(frontier), e.type == "customer.merged")
        absorbed = {str(payload["merged"]) for payload in connection.execute(query).scalars()}
        frontier = sorted(absorbed - set(group))
        group.extend(frontier)
    return group


def build_slice(
    connection: Connection, customer_id: str, as_of: date | datetime | None = None
) -> ContextSlice | None:
    """The slice for a canonical customer, now or at the end of a past day (None if unknown then)."""
    group = group_of(connection, customer_id)
    if as_of is not None:  # include customers merged in then, even if unmerged since
        group = _ever_merged_into(connection, group)
    if as_of is None:
        state: ProjectionState = SqlState(connection)
        recent = [_touch(e) for e in _recent_events(connection, group)]
        until = None
    else:
        until = _end_of(as_of)
        history = log.read_streams(connection, group, until=until)
        memory = MemoryState()
        for event in history:
            projector.apply(event, memory)
        state = memory
        recent = [_touch(e) for e in reversed(history) if e.type in TOUCH_TYPES][:RECENT_EVENTS]
    recent = sorted(
        [*recent, *_sent(connection, group, until)], key=lambda touch: touch.occurred_at, reverse=True
    )
    customer = state.get("customers", id=customer_id)
    if customer is None:
        return None
    members = [cid for cid in group if cid == customer_id or state.get("customers", id=cid) is not None]
    merged_now = [
        cid for cid in members if cid != customer_id and projector.canonical_id(state, cid) == customer_id
    ]
    ids = [customer_id, *merged_now]
    rows = {table: [row for cid in ids for row in state.scan(table, customer_id=cid)] for table in _TABLES}
    extra = [state.get("customers", id=cid) or {} for cid in merged_now]
    return ContextSlice(
        id=customer_id,
        name=customer["name"] or next((r["name"] for r in extra if r.get("name")), None),
        company=customer["company"] or next((r["company"] for r in extra if r.get("company")), None),
        stage=customer["stage"],
        mrr_cents=customer["mrr_cents"] + sum(r.get("mrr_cents", 0) for r in extra),
        lifetime_value_cents=customer["lifetime_value_cents"]
        + sum(r.get("lifetime_value_cents", 0) for r in extra),
        renewal_date=customer["renewal_date"],
        notes=customer["notes"],
        timezone=customer["timezone"],
        created_at=customer["created_at"],
        last_touch_at=max(
            (r["last_touch_at"] for r in [customer, *extra] if r.get("last_touch_at")), default=None
        ),
        merged_ids=merged_now,
        contacts=sorted(
            ({"kind": r["kind"], "value": r["value"]} for r in rows["contact_points"]),
            key=lambda r: (r["kind"], r["value"]),
        ),
        open_invoices=sorted(
            (_public(r) for r in rows["invoices"] if r["status"] != "paid"), key=lambda r: str(r["due_date"])
        ),
        subscriptions=[_public(r) for r in rows["subscriptions"]],
        deals=[_public(r) for r in rows["deals"]],
        open_tasks=[_public(r) for r in rows["tasks"] if r["status"] == "open"],
        recent_notes=sorted((_public(r) for r in rows["notes"]), key=lambda r: r["created_at"], reverse=True)[
            :5
        ],
        possible_duplicates=[_public(r) for r in rows["possible_duplicates"] if r["status"] == "open"],
        recent=recent[:RECENT_EVENTS],
        as_of=until,
    )


# Contact points are keyed by their current owner; the rest by the stream that created them.
_TABLES = ("contact_points", "invoices", "subscriptions", "deals", "tasks", "notes", "possible_duplicates")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in {"customer_id", "origin_customer_id"}}


def _touch(event: ev.Event) -> Touch:
    return Touch(
        event_id=event.id,
        position=event.position,
        type=event.type,
        occurred_at=event.occurred_at,
        summary=summarise(event),
    )


def _recent_events(connection: Connection, group: list[str]) -> list[ev.Event]:
    e = t.events.c
    query = (
        select(t.events)
        .where(e.stream.in_(group), e.type.in_(TOUCH_TYPES))
        .order_by(e.position.desc())
        .limit(RECENT_EVENTS)
    )
    return [log.to_event(row._mapping) for row in connection.execute(query)]


def _sent(connection: Connection, group: list[str], until: datetime | None) -> list[Touch]:
    """What the bot sent the customer for the operator (an executed email or chat reply, which lives on
    its proposal's stream, not the customer's), newest first: the slice shows it was answered."""
    p = t.proposals.c
    query = (
        select(p.id, p.kind, p.proposed, p.approved, p.executed_at, p.position)
        .where(p.customer_id.in_(group), p.state == "executed", p.kind.in_(tuple(SENT_KINDS)))
        .where(p.executed_at.is_not(None))
        .order_by(p.executed_at.desc())
        .limit(RECENT_EVENTS)
    )
    if until is not None:
        query = query.where(p.executed_at <= until)
    touches = []
    for row in connection.execute(query):
        chosen = row.approved or row.proposed or {}
        draft, params = chosen.get("draft") or {}, chosen.get("params") or {}
        subject = draft.get("subject") if row.kind == "send_email" else None
        text = " ".join(str(draft.get("body") or params.get("text") or "").split())
        summary = f"{SENT_KINDS[row.kind]}: {subject + ' — ' if subject else ''}{text[:120]}"
        touches.append(
            Touch(
                event_id=row.id,
                position=row.position,
                type="action.executed",
                occurred_at=row.executed_at,
                summary=summary,
            )
        )
    return touches


def _end_of(as_of: date | datetime) -> datetime:
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(microseconds=1)
