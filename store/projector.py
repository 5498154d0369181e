"""How each event changes the projections. Pure functions of (event, state): no clock, no I/O of their own.

Every value written comes from the event, so a replay produces byte-for-byte the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from store import events as ev
from store.identity import normalise_name
from store.state import ProjectionState, Row

Handler = Callable[[ev.Event, ProjectionState], None]
HANDLERS: dict[str, Handler] = {}


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        for event_type in event_types:
            HANDLERS[event_type] = handler
        return handler

    return decorate


def apply(event: ev.Event, state: ProjectionState) -> None:
    """Apply one event; types without a handler change nothing here."""
    handler = HANDLERS.get(event.type)
    if handler is not None:
        handler(event, state)


def canonical_id(state: ProjectionState, customer_id: str) -> str:
    """Follow merges to the customer that absorbed this one."""
    seen = {customer_id}
    row = state.get("customers", id=customer_id)
    while row is not None and row["merged_into"]:
        customer_id = row["merged_into"]
        if customer_id in seen:  # a cycle cannot be recorded, but never loop on one
            break
        seen.add(customer_id)
        row = state.get("customers", id=customer_id)
    return customer_id


def _customer(state: ProjectionState, event: ev.Event) -> Row | None:
    return state.get("customers", id=event.stream)


def _touch(state: ProjectionState, event: ev.Event, **changes: object) -> None:
    row = _customer(state, event)
    if row is None:
        return
    row.update(changes)
    row["updated_at"] = event.occurred_at
    row["position"] = event.position
    state.put("customers", row)


@handles("customer.created")
def _customer_created(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.CustomerCreated)
    state.put(
        "customers",
        {
            "id": event.stream,
            "name": p.name,
            "name_key": normalise_name(p.name),
            "company": p.company,
            "domain": p.domain,
            "stage": p.stage,
            "mrr_cents": p.mrr_cents,
            "lifetime_value_cents": 0,
            "renewal_date": p.renewal_date,
            "notes": p.notes,
            "timezone": p.timezone,
            "merged_into": None,
            "created_at": event.occurred_at,
            "updated_at": event.occurred_at,
            "last_touch_at": None,
            "position": event.position,
        },
    )
    for contact in p.contacts:
        _add_contact(state, event.stream, contact, event.occurred_at)


def _add_contact(state: ProjectionState, customer_id: str, contact: ev.ContactPoint, at: datetime) -> None:
    if state.get("contact_points", kind=contact.kind, value=contact.value) is not None:
        return  # a strong key belongs to whoever had it first
    state.put(
        "contact_points",
        {
            "kind": contact.kind,
            "value": contact.value,
            "customer_id": canonical_id(state, customer_id),
            "origin_customer_id": customer_id,
            "added_at": at,
        },
    )


@handles("customer.updated")
def _customer_updated(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.CustomerUpdated)
    changes = p.model_dump(exclude_none=True)
    if "name" in changes:
        changes["name_key"] = normalise_name(changes["name"])
    _touch(state, event, **changes)


@handles("customer.contact_added")
def _contact_added(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.ContactAdded)
    _add_contact(state, event.stream, p.contact, event.occurred_at)


@handles("customer.merged")
def _customer_merged(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.CustomerMerged)
    merged = state.get("customers", id=p.merged)
    if merged is None:
        return
    merged["merged_into"] = event.stream
    merged["position"] = event.position
    state.put("customers", merged)
    for contact in state.scan("contact_points", customer_id=p.merged):
        contact["customer_id"] = event.stream
        state.put("contact_points", contact)
    for pair in state.scan("possible_duplicates", customer_id=p.merged) + state.scan(
        "possible_duplicates", other_id=p.merged
    ):
        if {pair["customer_id"], pair["other_id"]} == {p.merged, event.stream}:
            pair["status"] = "merged"
            state.put("possible_duplicates", pair)


@handles("customer.unmerged")
def _customer_unmerged(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.CustomerUnmerged)
    merged = state.get("customers", id=p.merged)
    if merged is None or merged["merged_into"] != event.stream:
        return
    merged["merged_into"] = None
    merged["position"] = event.position
    state.put("customers", merged)
    for contact in state.scan("contact_points", customer_id=event.stream):
        owner = canonical_id(state, contact["origin_customer_id"])
        if owner != contact["customer_id"]:
            contact["customer_id"] = owner
            state.put("contact_points", contact)


@handles("customer.possible_duplicate")
def _possible_duplicate(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.PossibleDuplicate)
    state.put(
        "possible_duplicates",
        {
            "customer_id": event.stream,
            "other_id": p.other_id,
            "reason": p.reason,
            "status": "open",
            "detected_at": event.occurred_at,
        },
    )


@handles("customer.duplicate_dismissed")
def _duplicate_dismissed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.DuplicateDismissed)
    pair = state.get("possible_duplicates", customer_id=event.stream, other_id=p.other_id)
    if pair is not None:
        pair["status"] = "dismissed"
        state.put("possible_duplicates", pair)


@handles("lead.created", "message.received", "message.sent")
def _touched(event: ev.Event, state: ProjectionState) -> None:
    _touch(state, event, last_touch_at=event.occurred_at)


@handles("invoice.created", "invoice.overdue", "invoice.paid")
def _invoice(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.Signal)
    data = p.typed_data()
    assert isinstance(data, ev.InvoiceData)
    row = state.get("invoices", id=data.invoice_id) or {
        "id": data.invoice_id,
        "customer_id": event.stream,
        "status": "open",
        "paid_at": None,
        "due_date": None,
    }
    was_paid = row["status"] == "paid"
    row["amount_cents"] = data.cents() or row.get("amount_cents") or 0
    row["currency"] = data.currency
    row["due_date"] = data.due_date or row["due_date"]
    row["updated_at"] = event.occurred_at
    if event.type == "invoice.paid":
        row["status"], row["paid_at"] = "paid", event.occurred_at
    elif not was_paid:  # a late "overdue" never reopens a paid invoice
        row["status"] = "overdue" if event.type == "invoice.overdue" else "open"
    state.put("invoices", row)
    if event.type == "invoice.paid" and not was_paid:
        customer = _customer(state, event)
        if customer is not None:
            value = customer["lifetime_value_cents"] + row["amount_cents"]
            _touch(state, event, lifetime_value_cents=value)


@handles(
    "subscription.created",
    "subscription.updated",
    "subscription.renewal_due",
    "subscription.cancelled",
)
def _subscription(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.Signal)
    data = p.typed_data()
    assert isinstance(data, ev.SubscriptionData)
    sub_id = data.subscription_id or f"{event.stream}:default"
    row = state.get("subscriptions", id=sub_id) or {
        "id": sub_id,
        "customer_id": event.stream,
        "plan": None,
        "amount_cents": 0,
        "monthly_cents": 0,
        "currency": data.currency,
        "status": "active",
        "renews_on": None,
    }
    row["plan"] = data.plan or row["plan"]
    if data.amount is not None or data.amount_cents is not None:
        row["amount_cents"] = data.cents()
        row["monthly_cents"] = data.monthly_cents()
    row["currency"] = data.currency
    row["renews_on"] = data.renews_on or row["renews_on"]
    row["updated_at"] = event.occurred_at
    if event.type == "subscription.cancelled":
        row["status"] = "cancelled"
    elif event.type in {"subscription.created", "subscription.updated"}:
        row["status"] = "active"
    state.put("subscriptions", row)
    _roll_up_subscriptions(event, state)


def _roll_up_subscriptions(event: ev.Event, state: ProjectionState) -> None:
    """MRR (each subscription's amount per month, whatever its billing interval) and renewal date follow
    the customer's active subscriptions."""
    customer = _customer(state, event)
    if customer is None:
        return
    subs = state.scan("subscriptions", customer_id=event.stream)
    active = [sub for sub in subs if sub["status"] == "active"]
    changes: dict[str, object] = {"mrr_cents": sum(sub["monthly_cents"] for sub in active)}
    renewals = [sub["renews_on"] for sub in active if sub["renews_on"] is not None]
    changes["renewal_date"] = min(renewals) if renewals else None
    if active and customer["stage"] in {"lead", "qualified", "trial"}:
        changes["stage"] = "customer"
    elif not active and customer["stage"] == "customer":
        changes["stage"] = "churned"
    _touch(state, event, **changes)


@handles("note.added")
def _note_added(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.NoteAdded)
    state.put(
        "notes",
        {
            "id": event.id,
            "customer_id": event.stream,
            "text": p.text,
            "author": p.author,
            "created_at": event.occurred_at,
        },
    )


@handles("task.created")
def _task_created(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.TaskCreated)
    state.put(
        "tasks",
        {
            "id": p.task_id,
            "customer_id": event.stream,
            "title": p.title,
            "status": "open",
            "due_date": p.due_date,
            "created_at": event.occurred_at,
        },
    )


@handles("task.completed")
def _task_completed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.TaskCompleted)
    task = state.get("tasks", id=p.task_id)
    if task is not None:
        task["status"] = "done"
        state.put("tasks", task)


@handles("stage.changed")
def _stage_changed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.StageChanged)
    _touch(state, event, stage=p.stage)


@handles("deal.updated")
def _deal_updated(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ev.DealUpdated)
    state.put(
        "deals",
        {
            "id": p.deal_id,
            "customer_id": event.stream,
            "title": p.title,
            "amount_cents": p.amount_cents,
            "stage": p.stage,
            "updated_at": event.occurred_at,
        },
    )
