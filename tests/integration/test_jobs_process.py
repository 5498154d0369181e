"""process_event: the handler table's handlers in order, each recorded once, a second run a no-op."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from jobs import context
from jobs.context import JobContext
from jobs.handlers import INBOX_TRIAGE, LEAD_QUALIFICATION, MEMORY
from jobs.process import EventMissing, Outcome, handle_event, process_event
from store import tables as t
from store.events import CustomerRef, Event, MessageReceived
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import RecordingSubscriber, app_for, lead


@pytest.fixture
def ctx(store: EventStore, make_settings: type[Settings]) -> Iterator[JobContext]:
    job_context = app_for(store, make_settings())
    context.install(job_context)
    yield job_context
    context.uninstall()


def _count(store: EventStore, table: t.Table) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_process_event_runs_each_subscriber_once_and_records_the_event(ctx: JobContext) -> None:
    recorder = RecordingSubscriber()
    ctx.handlers[MEMORY] = recorder
    event = lead(ctx.store, 1)
    assert _count(ctx.store, t.outbox) == 1

    assert process_event(event.id) == "processed"

    assert recorder.calls == [event.id]
    assert _count(ctx.store, t.outbox) == 0
    with ctx.store.engine.connect() as connection:
        row = connection.execute(select(t.processed_events)).one()
    assert (row.event_id, row.position) == (event.id, event.position)


def test_processing_an_event_twice_is_a_no_op(ctx: JobContext) -> None:
    recorder = RecordingSubscriber()
    ctx.handlers[MEMORY] = recorder
    event = lead(ctx.store, 1)
    assert handle_event(ctx, event.id) is Outcome.PROCESSED
    assert handle_event(ctx, event.id) is Outcome.ALREADY_PROCESSED
    assert recorder.calls == [event.id]
    assert _count(ctx.store, t.processed_events) == 1


def test_handlers_run_in_the_table_s_order_and_only_for_their_event_types(ctx: JobContext) -> None:
    journal: list[str] = []
    ctx.handlers[MEMORY] = RecordingSubscriber("memory", journal=journal)
    ctx.handlers[LEAD_QUALIFICATION] = RecordingSubscriber("leads", journal=journal)
    ctx.handlers[INBOX_TRIAGE] = RecordingSubscriber("messages", journal=journal)
    first = lead(ctx.store, 1)
    message = MessageReceived(customer=CustomerRef(email="lead@c1.example.com"), text="Ünïcödé 👋 reply")
    second = ctx.store.record_signal("message.received", message, "test:msg:1", source="test").event

    handle_event(ctx, first.id)
    handle_event(ctx, second.id)

    assert journal == [
        f"memory:{first.id}",
        f"leads:{first.id}",
        f"memory:{second.id}",
        f"messages:{second.id}",
    ]
    assert second.stream == first.stream  # resolved to the same customer at append time


def test_a_failing_subscriber_leaves_the_event_unprocessed_for_a_retry(ctx: JobContext) -> None:
    class Failing(RecordingSubscriber):
        def handle(self, event: Event, ctx: JobContext) -> None:
            super().handle(event, ctx)
            if len(self.calls) == 1:
                raise ConnectionError("model API went away")

    flaky = Failing("flaky")
    ctx.handlers[MEMORY] = flaky
    event = lead(ctx.store, 1)
    with pytest.raises(ConnectionError):
        handle_event(ctx, event.id)
    assert _count(ctx.store, t.processed_events) == 0
    assert _count(ctx.store, t.outbox) == 1
    assert handle_event(ctx, event.id) is Outcome.PROCESSED
    assert flaky.calls == [event.id, event.id]
    assert flaky.effects == {event.id}


def test_an_unknown_event_id_is_an_error_not_a_silent_success(ctx: JobContext) -> None:
    with pytest.raises(EventMissing):
        handle_event(ctx, "00000000-0000-0000-0000-000000000000")
    assert _count(ctx.store, t.processed_events) == 0


def test_a_job_without_an_installed_context_says_how_to_install_one() -> None:
    context.uninstall()
    with pytest.raises(context.NoJobContext, match="install"):
        process_event("whatever")
