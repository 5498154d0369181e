"""SQLAlchemy Core tables: the insert-only event log, the outbox, and the projections derived from the log.

Core rather than the ORM: projections are applied row by row on the hot path and in bulk on replay,
and both want plain dictionaries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy import DateTime as _DateTime

metadata = MetaData()


class DateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text and would drop the zone)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__()

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the common case (utcnow, and what this type reads back): as it is
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BIGINT on Postgres, INTEGER (the rowid alias, so autoincrementing) on SQLite.
Position = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("stream", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("source", String(64), nullable=False),
    Column("confidence", Float, nullable=True),
    Column("correlation_id", String(64), nullable=True),
    Column("causation_id", String(64), nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Index("ix_events_stream_position", "stream", "position"),
    Index("ix_events_type_position", "type", "position"),
)

# One row per event still to be processed by a worker; deleted when processing is recorded.
outbox = Table(
    "outbox",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("enqueued_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
)

# The inbox (transactional inbox pattern): a signal accepted from outside, durably, before it is in the
# log. The web routes write one row per delivery without taking the append lock, so a burst of webhooks
# is answered at the speed of an insert; `store.intake.sequence` moves rows into the log in batches (the
# customer resolved, projections and outbox row written, under the append lock) with the event id the
# sender was already given. A sequenced row stays as the receipt of its key, so a redelivery answers
# the same event id; its copy of the signal is cleared then (the log holds it).
intake = Table(
    "intake",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("event_id", String(36), nullable=False),
    Column("type", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=True),
    Column("signal", JSON(none_as_null=True), nullable=True),
    Column("staged_at", DateTime(timezone=True), nullable=False),
    Column("position", Position, nullable=True),  # the event's log position, once sequenced
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    # When a row the log refused for good was reported to the operator (chat notice, `crm jobs`).
    Column("reported_at", DateTime(timezone=True), nullable=True),
    Index(
        "ix_intake_pending",
        "id",
        postgresql_where=text("position IS NULL"),
        sqlite_where=text("position IS NULL"),
    ),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("position", Position, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)

# Which handler (jobs.handlers) has handled which event: "done", or "skipped" with the reason shown to
# the operator. "*" marks events handled before tracking was per handler (every handler saw them).
handled_events = Table(
    "handled_events",
    metadata,
    Column("handler", String(64), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("position", Position, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False),
    Index("ix_handled_events_handler_position", "handler", "position"),
)

# The log position each projection has applied; applying an older event again changes nothing.
projection_positions = Table(
    "projection_positions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Position, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("name_key", String(255), nullable=True, index=True),
    Column("company", String(255), nullable=True),
    Column("domain", String(255), nullable=True, index=True),
    Column("stage", String(32), nullable=False),
    Column("mrr_cents", BigInteger, nullable=False),
    Column("lifetime_value_cents", BigInteger, nullable=False),
    Column("renewal_date", Date, nullable=True),
    Column("notes", Text, nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("merged_into", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_touch_at", DateTime(timezone=True), nullable=True),
    Column("position", Position, nullable=False),
)

# Strong identity keys: one (kind, value) belongs to exactly one customer.
contact_points = Table(
    "contact_points",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("value", String(320), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("origin_customer_id", String(64), nullable=False, index=True),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

possible_duplicates = Table(
    "possible_duplicates",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("other_id", String(64), primary_key=True),
    Column("reason", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)

deals = Table(
    "deals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("title", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("stage", String(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_date", Date, nullable=True),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("plan", String(128), nullable=True),
    Column("amount_cents", BigInteger, nullable=False),  # billed per period (interval)
    Column("monthly_cents", BigInteger, nullable=False, server_default=text("0")),  # what MRR counts
    Column("currency", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("renews_on", Date, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

notes = Table(
    "notes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("author", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_date", Date, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The projections `crm replay` rebuilds, in the order rows are written back. Later issues add theirs
# (proposals, decisions) here and in a migration.
PROJECTION_TABLES: tuple[Table, ...] = (
    customers,
    contact_points,
    possible_duplicates,
    deals,
    invoices,
    subscriptions,
    notes,
    tasks,
)

# --- Slack surface (issue 7) -------------------------------------------------------------------------
# Slack event ids already handled: Slack redelivers an event (same event_id, X-Slack-Retry-Num) when
# it saw no 200 within 3 s, and Bolt does not de-duplicate. Operational, not a projection: not replayed.
slack_events_seen = Table(
    "slack_events_seen",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
)


# ---- issue 5: proposals, decisions and actions (projections of proposal.* / action.* events) ----
proposals = Table(
    "proposals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("agent", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    # pending | snoozed | expired | rejected | refused | approved | executing | executed | failed |
    # uncertain | undone | closed
    Column("state", String(16), nullable=False, index=True),
    Column("verdict", String(16), nullable=False),
    Column("verdict_then", String(16), nullable=True),  # deferred: what it becomes when it wakes
    Column("rules", JSON, nullable=False),
    Column("proposed", JSON, nullable=False),
    Column("approved", JSON, nullable=True),
    Column("decision", String(16), nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("decided_by_name", String(255), nullable=True),
    Column("surface", String(16), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
    Column("snoozed_until", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("not_before", DateTime(timezone=True), nullable=True),
    Column("event_id", String(36), nullable=True),
    Column("cost_usd", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("action_key", String(128), nullable=True),
    Column("phase", String(16), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("result_ref", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("retryable", Boolean, nullable=True),
    Column("compensation", JSON, nullable=True),
    Column("executed_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("position", Position, nullable=False),
    # The proposal's short handle (#12): its place among proposal.recorded events in the log, so a
    # replay gives every proposal the same number again.
    Column("number", Integer, nullable=True),
    # When the operator was last reminded that it expires soon (cleared when it wakes with a new expiry).
    Column("reminded_at", DateTime(timezone=True), nullable=True),
    Index("ix_proposals_number", "number", unique=True),
)

# Running counters of projections (the last proposal number given); a projection like any other.
counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

# Every chat message showing a proposal, so each copy can be edited in place after a decision.
proposal_messages = Table(
    "proposal_messages",
    metadata,
    Column("surface", String(16), primary_key=True),
    Column("chat_id", String(64), primary_key=True),
    Column("message_id", String(64), primary_key=True),
    Column("proposal_id", String(32), nullable=False, index=True),
    Column("posted_at", DateTime(timezone=True), nullable=False),
)

# The proposal version (its row's last event position) each posted message was last asked to show; a
# refresh claims a higher version before it edits, so an older render never replaces a newer one.
# Not a projection: replay leaves it alone.
message_renders = Table(
    "message_renders",
    metadata,
    Column("surface", String(16), primary_key=True),
    Column("chat_id", String(64), primary_key=True),
    Column("message_id", String(64), primary_key=True),
    Column("version", Position, nullable=False),
    Column("rendered_at", DateTime(timezone=True), nullable=False),
)

# One row per execution attempt: the checkpoint trail of the executor.
actions = Table(
    "actions",
    metadata,
    Column("id", String(48), primary_key=True),  # proposal id + ":" + attempt
    Column("proposal_id", String(32), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("connector", String(32), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # started | handover | executed | failed | uncertain
    Column("reference", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

# Paused agents ("*" pauses all of them).
agent_pauses = Table(
    "agent_pauses",
    metadata,
    Column("agent", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("by", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


# ---- Telegram surface (issue 8) ------------------------------------------------------------------
# Operational state, not projections (nothing here is replayed from the log).
# update_ids already handled: Telegram redelivers an update after a non-2xx webhook answer or a
# restart before the getUpdates offset was confirmed; the same update_id must not act twice.
telegram_updates = Table(
    "telegram_updates",
    metadata,
    Column("update_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
)

# Edit prompts: the ForceReply question the bot asked (answered by a reply to prompt_message_id),
# then the edited text waiting for Approve / Cancel.
telegram_edits = Table(
    "telegram_edits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("proposal_id", String(32), nullable=False, index=True),
    Column("chat_id", String(32), nullable=False),
    Column("prompt_message_id", String(32), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("text", Text, nullable=True),
    Column("status", String(16), nullable=False),  # prompted | drafted | approved | cancelled
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_telegram_edits_prompt", "chat_id", "prompt_message_id", unique=True),
)

# ---- Memory (issue 19) ---------------------------------------------------------------------------
# What a one-customer recall ranks and filters on, for every memory in a hot Chroma collection
# (store.memory.vectors): indexed by customer, so recall reads ~100 rows instead of asking Chroma, whose
# metadata filter scans the collection. A mirror of the collection, not a projection of the log.
memory_vectors = Table(
    "memory_vectors",
    metadata,
    Column("collection", String(63), primary_key=True),  # the Chroma collection (one per model)
    Column("customer_id", String(64), primary_key=True),  # the stream the memory was written under
    Column("id", String(80), primary_key=True),  # memory id: event id#chunk
    Column("kind", String(16), nullable=False),
    Column("occurred_us", BigInteger, nullable=False),  # microseconds since 1970, UTC
    Column("position", BigInteger, nullable=False),
    Column("chunk", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian
    Index("ux_memory_vectors_id", "collection", "id", unique=True),
    # On SQLite the rows are stored in key order, so a customer's rows lie together and a recall reads a
    # few neighbouring pages (at 1,000,000 memories, cold: p95 1.2 ms against 9.5 ms scattered by rowid).
    sqlite_with_rowid=False,
)

# Collections whose memory_vectors rows are complete (written since the collection was empty, or filled
# from it once); recall reads the rows only for these.
memory_vector_sets = Table(
    "memory_vector_sets",
    metadata,
    Column("collection", String(63), primary_key=True),
    Column("complete_at", DateTime(timezone=True), nullable=False),
)
