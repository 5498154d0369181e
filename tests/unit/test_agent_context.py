"""build_context against a real store (SQLite and Postgres): history, earlier proposals, corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.context import build_context, paused_agents
from agents.runtime import AgentRuntime
from store import events as ev
from store.proposals import CorrectionRecorded, ProposalRecorded
from store.uow import EventStore

NOW = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
DANA = ev.CustomerRef(name="Dana Reyes", email="dana@acme.example", company="Acme")


def renewal_due(store: EventStore, key: str, at: datetime) -> ev.Event:
    signal = ev.SubscriptionSignal(
        customer=DANA,
        data={"subscription_id": "sub_1", "plan": "Pro", "renews_on": "2026-04-08", "amount": 99},
    )
    return store.record_signal("subscription.renewal_due", signal, key, source="test", occurred_at=at).event


def test_a_recorded_nudge_is_seen_by_the_next_run_so_the_window_is_not_nudged_twice(
    store: EventStore,
) -> None:
    first = renewal_due(store, "test:renewal:1", NOW - timedelta(days=1))
    runtime = AgentRuntime()
    with store.engine.connect() as connection:
        context = build_context(connection, first, first.stream, now=NOW - timedelta(days=1))
    assert context is not None and context.customer.name == "Dana Reyes"
    reviewed = runtime.propose(context)
    assert [r.proposal.kind for r in reviewed] == ["send_email"]
    proposal = reviewed[0].proposal
    store.append(
        ev.NewEvent(
            type="proposal.recorded",
            payload=ProposalRecorded(proposal=proposal.model_dump(mode="json"), verdict="approval"),
            stream="prp_test1",
            idempotency_key="test:prp_test1",
            occurred_at=NOW - timedelta(days=1),
        )
    )
    second = renewal_due(store, "test:renewal:2", NOW)
    with store.engine.connect() as connection:
        context = build_context(connection, second, second.stream, now=NOW)
    assert context is not None
    assert any(e.type == "proposal.pending" for e in context.recent_events)
    assert runtime.propose(context) == []


def test_corrections_on_the_customer_stream_reach_the_templates(store: EventStore) -> None:
    event = renewal_due(store, "test:renewal:3", NOW)
    store.append(
        ev.NewEvent(
            type="correction.recorded",
            payload=CorrectionRecorded(
                proposal_id="prp_x",
                agent="renewal_nudges",
                kind="send_email",
                original={"subject": "s", "body": "Hi Dana,\n\nRenews soon.\n\nBest regards"},
                edited={"subject": "s", "body": "Hello Dana!\n\nRenews soon.\n\nWarm regards,\nSam"},
                by="slack:U1",
                text="edited the greeting and sign-off",
            ),
            stream=event.stream,
            idempotency_key="test:correction:1",
            occurred_at=NOW - timedelta(hours=1),
        )
    )
    with store.engine.connect() as connection:
        context = build_context(connection, event, event.stream, now=NOW)
        assert paused_agents(connection) == set()
    assert context is not None
    assert [c.kind for c in context.corrections] == ["send_email"]
    email = AgentRuntime().propose(context)[0].proposal
    assert email.draft is not None
    assert email.draft.body.startswith("Hello Dana!") and email.draft.body.endswith("Warm regards,\nSam")


def test_an_unknown_customer_has_no_context(store: EventStore) -> None:
    event = renewal_due(store, "test:renewal:4", NOW)
    with store.engine.connect() as connection:
        assert build_context(connection, event, "cus_nobody", now=NOW) is None
