"""One event of every type the project can append goes into one log, and the log replays.

`SAMPLES` must name every type in `store.events.event_types()`: a new event type without a sample
fails here, so `crm replay` can never meet a type nobody tried.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from store import events as ev
from store import proposals as sp
from store import replay
from store.memory import events as mev
from store.uow import EventStore

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CUSTOMER = "cus_every_type"
OTHER = "cus_every_type_other"
PROPOSAL = "prp_every_type"
REF = ev.CustomerRef(name="Ada Lovelace", email="ada@every.example")
PROPOSED = {
    "agent": "inbox_triage",
    "kind": "send_email",
    "customer_id": CUSTOMER,
    "params": {"to": "ada@every.example"},
    "draft": {"subject": "Hello", "body": "Hi Ada"},
    "rationale": "a test",
    "confidence": 0.9,
}
BY: dict[str, Any] = {"by": "terminal:op", "by_name": "op", "surface": "terminal"}

# (type, stream, payload) in an order the lifecycle allows.
SAMPLES: list[tuple[str, str, ev.Payload]] = [
    (
        "customer.created",
        CUSTOMER,
        ev.CustomerCreated(
            name="Ada Lovelace", contacts=(ev.ContactPoint(kind="email", value="ada@every.example"),)
        ),
    ),
    ("customer.created", OTHER, ev.CustomerCreated(name="Ada L.")),
    ("customer.updated", CUSTOMER, ev.CustomerUpdated(company="Analytical")),
    ("customer.contact_added", CUSTOMER, ev.ContactAdded(contact=ev.ContactPoint(kind="slack", value="C1"))),
    ("customer.possible_duplicate", CUSTOMER, ev.PossibleDuplicate(other_id=OTHER, reason="same name")),
    ("customer.duplicate_dismissed", CUSTOMER, ev.DuplicateDismissed(other_id=OTHER)),
    ("customer.merged", CUSTOMER, ev.CustomerMerged(merged=OTHER, reason="same person")),
    ("customer.unmerged", CUSTOMER, ev.CustomerUnmerged(merged=OTHER, reason="not the same")),
    ("lead.created", CUSTOMER, ev.LeadCreated(customer=REF, text="Interested in the pro plan")),
    ("lead.quiet", CUSTOMER, ev.LeadCreated(customer=REF)),
    ("message.received", CUSTOMER, ev.MessageReceived(customer=REF, text="How do I export?")),
    ("message.sent", CUSTOMER, ev.MessageSent(customer=REF, text="Use Settings, then Export.")),
    ("invoice.created", CUSTOMER, ev.InvoiceSignal(customer=REF, data={"invoice_id": "INV-1", "amount": 49})),
    ("invoice.overdue", CUSTOMER, ev.InvoiceSignal(customer=REF, data={"invoice_id": "INV-1", "amount": 49})),
    ("invoice.paid", CUSTOMER, ev.InvoiceSignal(customer=REF, data={"invoice_id": "INV-1", "amount": 49})),
    ("subscription.created", CUSTOMER, ev.SubscriptionSignal(customer=REF, data={"subscription_id": "s1"})),
    ("subscription.updated", CUSTOMER, ev.SubscriptionSignal(customer=REF, data={"subscription_id": "s1"})),
    (
        "subscription.renewal_due",
        CUSTOMER,
        ev.SubscriptionSignal(customer=REF, data={"subscription_id": "s1"}),
    ),
    ("subscription.cancelled", CUSTOMER, ev.SubscriptionSignal(customer=REF, data={"subscription_id": "s1"})),
    ("note.added", CUSTOMER, ev.NoteAdded(text="Prefers email", author="op")),
    ("task.created", CUSTOMER, ev.TaskCreated(task_id="t1", title="Call back")),
    ("task.completed", CUSTOMER, ev.TaskCompleted(task_id="t1")),
    ("task.created", CUSTOMER, ev.TaskCreated(task_id="t2", title="Send quote")),
    ("task.cancelled", CUSTOMER, sp.TaskCancelled(task_id="t2", reason="undone")),
    ("note.retracted", CUSTOMER, sp.NoteRetracted(note_id="n-none", reason="undone")),
    ("stage.changed", CUSTOMER, ev.StageChanged(stage="trial")),
    ("deal.updated", CUSTOMER, ev.DealUpdated(deal_id="d1", title="Pro plan", amount_cents=4900)),
    ("digest.sent", "digest", ev.DigestSent(slot=AT, pending=1, overdue=0, surface="telegram")),
    ("agent.paused", "agents", sp.AgentPaused(agent="inbox_triage", paused=True, by="terminal:op")),
    ("proposal.recorded", PROPOSAL, sp.ProposalRecorded(proposal=PROPOSED, verdict="approval")),
    (
        "proposal.message_posted",
        PROPOSAL,
        sp.ProposalMessagePosted(surface="terminal", chat_id="-", message_id="1"),
    ),
    ("decision.refused", PROPOSAL, sp.DecisionRefused(action="approve", reason="not in OPERATORS", **BY)),
    ("proposal.snoozed", PROPOSAL, sp.ProposalSnoozed(until=AT + timedelta(hours=1), **BY)),
    ("proposal.woke", PROPOSAL, sp.ProposalWoke(expires_at=AT + timedelta(days=1))),
    (
        "proposal.reminded",
        PROPOSAL,
        sp.ProposalReminded(expires_at=AT + timedelta(days=1), surfaces=["slack"]),
    ),
    (
        "proposal.decided",
        PROPOSAL,
        sp.ProposalDecided(decision="approved", approved={"params": PROPOSED["params"]}, **BY),
    ),
    (
        "action.started",
        PROPOSAL,
        sp.ActionStarted(
            attempt=1, connector="smtp", idempotency_key="k1", lease_until=AT + timedelta(minutes=5)
        ),
    ),
    ("action.handover", PROPOSAL, sp.ActionHandover(attempt=1)),
    ("action.uncertain", PROPOSAL, sp.ActionUncertain(attempt=1, note="the worker died")),
    ("action.resolved", PROPOSAL, sp.ActionResolved(choice="resend", **BY)),
    ("action.failed", PROPOSAL, sp.ActionFailed(attempt=2, error="550 mailbox full", retryable=True)),
    ("action.executed", PROPOSAL, sp.ActionExecuted(attempt=3, reference="<m1@every.example>")),
    ("proposal.undone", PROPOSAL, sp.ProposalUndone(how="compensated", **BY)),
    ("proposal.expired", PROPOSAL, sp.ProposalExpired()),
    ("proposal.withdrawn", PROPOSAL, sp.ProposalWithdrawn(reason="answered outside", message_event_id="e1")),
    (
        "correction.recorded",
        CUSTOMER,
        sp.CorrectionRecorded(
            proposal_id=PROPOSAL, agent="inbox_triage", kind="send_email", by="terminal:op", text="edited"
        ),
    ),
    (
        "message.classified",
        CUSTOMER,
        ev.MessageClassified(message_event_id="m1", intent="question", confidence=0.9),
    ),
    (
        "intent.corrected",
        CUSTOMER,
        ev.IntentCorrected(message_event_id="m1", intent="spam", text="Buy links"),
    ),
    ("memory.corrected", CUSTOMER, mev.MemoryCorrected(text="She moved to Berlin")),
    (
        "memory.summarised",
        CUSTOMER,
        mev.MemorySummarised(text="Asked about exports", summarises=("e#0",), period_start=AT, period_end=AT),
    ),
    ("memory.forgotten", CUSTOMER, mev.MemoryForgotten()),
]


def test_the_samples_cover_every_event_type() -> None:
    assert {event_type for event_type, _, _ in SAMPLES} == set(ev.event_types())


def test_a_log_with_every_event_type_replays_and_verifies(store: EventStore) -> None:
    for n, (event_type, stream, payload) in enumerate(SAMPLES):
        new = ev.NewEvent(
            type=event_type,
            payload=payload,
            stream=stream,
            idempotency_key=f"every:{n}",
            occurred_at=AT + timedelta(seconds=n),
        )
        assert not store.append(new, dispatch=False).duplicate
    types = {event.type for event in store.read_all()}
    assert types == set(ev.event_types())

    replay.replay(store.engine)
    result = replay.verify(store.engine)
    assert result.ok, [d.describe() for d in result.differences]


def test_trusted_decoding_of_every_event_type_equals_full_validation(store: EventStore) -> None:
    """Replay's shortcut (JSON text in one pass, write-only checks skipped) reads every row the same."""
    import json

    from sqlalchemy import select

    from store import tables as t

    for n, (event_type, stream, payload) in enumerate(SAMPLES):
        store.append(
            ev.NewEvent(type=event_type, payload=payload, stream=stream, idempotency_key=f"trusted:{n}"),
            dispatch=False,
        )
    with store.engine.connect() as connection:
        rows = connection.execute(select(t.events).order_by(t.events.c.position)).all()
    trusted = {event.position: event for event in store.read_all()}
    assert len(rows) == len(SAMPLES) == len(trusted)
    for row in rows:
        stored = row._mapping
        validated = ev.parse_payload(stored["type"], stored["version"], stored["payload"])
        assert trusted[stored["position"]].payload == validated, stored["type"]
        assert type(trusted[stored["position"]].payload) is type(validated)
        text = json.dumps(stored["payload"])
        assert ev.parse_stored(stored["type"], stored["version"], text) == validated


def test_trusted_decoding_runs_the_upcasters_on_old_versions() -> None:
    old = '{"body": "Called, wants a quote"}'
    assert ev.parse_stored("note.added", 1, old) == ev.parse_payload(
        "note.added", 1, {"body": "Called, wants a quote"}
    )
    assert ev.parse_stored("note.added", 1, old).text == "Called, wants a quote"  # type: ignore[attr-defined]
