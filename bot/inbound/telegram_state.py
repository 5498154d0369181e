"""The Telegram surface's own operational rows: update ids already handled, and pending edit prompts.

Not projections: nothing here is derived from the log, and nothing here is a business decision (those
are events written by the command layer). Sync functions over an engine; handlers call them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from store import tables as t

# Telegram's update_ids restart at a random value after a week without updates, so ids older than
# that can never come back and their rows can go.
UPDATE_MEMORY = timedelta(days=8)


def claim_update(engine: Engine, update_id: int, now: datetime | None = None) -> bool:
    """True the first time an update_id is seen; False for a repeat (it must be ignored)."""
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(t.telegram_updates).values(update_id=update_id, seen_at=now or datetime.now(UTC))
            )
    except IntegrityError:
        return False
    return True


def forget_old_updates(engine: Engine, now: datetime | None = None) -> int:
    """Drop update ids older than UPDATE_MEMORY; returns how many went."""
    cutoff = (now or datetime.now(UTC)) - UPDATE_MEMORY
    with engine.begin() as connection:
        result = connection.execute(delete(t.telegram_updates).where(t.telegram_updates.c.seen_at < cutoff))
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class PendingEdit:
    """An edit in progress: the prompt asked in chat, and the new text once the operator replied."""

    id: int
    proposal_id: str
    chat_id: str
    prompt_message_id: str
    operator: str
    field: str
    text: str | None
    status: str


def _edit(row: object) -> PendingEdit:
    mapping = row._mapping  # type: ignore[attr-defined]
    return PendingEdit(**{name: mapping[name] for name in PendingEdit.__dataclass_fields__})


def open_edit(
    engine: Engine, proposal_id: str, chat_id: str, prompt_message_id: str, operator: str, field: str
) -> int:
    """Remember the ForceReply prompt sent for an edit; returns the edit's id."""
    with engine.begin() as connection:
        result = connection.execute(
            insert(t.telegram_edits).values(
                proposal_id=proposal_id,
                chat_id=chat_id,
                prompt_message_id=prompt_message_id,
                operator=operator,
                field=field,
                text=None,
                status="prompted",
                created_at=datetime.now(UTC),
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def edit_for_prompt(engine: Engine, chat_id: str, prompt_message_id: str) -> PendingEdit | None:
    """The edit whose prompt a message replies to, if any."""
    e = t.telegram_edits.c
    with engine.connect() as connection:
        row = connection.execute(
            select(t.telegram_edits).where(e.chat_id == chat_id, e.prompt_message_id == prompt_message_id)
        ).first()
    return _edit(row) if row is not None else None


def get_edit(engine: Engine, edit_id: int) -> PendingEdit | None:
    """One edit by id."""
    with engine.connect() as connection:
        row = connection.execute(select(t.telegram_edits).where(t.telegram_edits.c.id == edit_id)).first()
    return _edit(row) if row is not None else None


def set_edit(engine: Engine, edit_id: int, *, status: str, text: str | None = None, expect: str) -> bool:
    """Move an edit from `expect` to `status` (compare-and-set, so a double tap acts once)."""
    e = t.telegram_edits.c
    values: dict[str, object] = {"status": status}
    if text is not None:
        values["text"] = text
    with engine.begin() as connection:
        result = connection.execute(
            update(t.telegram_edits).where(e.id == edit_id, e.status == expect).values(**values)
        )
    return bool(result.rowcount)
