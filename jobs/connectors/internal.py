"""Internal updates — stage change, note, task, merge — as events appended with the action's result.

The effect events are appended in the same transaction as `action.executed` and keyed off the
action's idempotency key, so they happen exactly once whatever crashes. Undo appends compensating
events (`compensate`), never deletes.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from jobs.connectors.base import ActionRequest, ActionResult, Handover, PermanentError
from store import events as ev
from store import proposals as sp
from store.state import SqlState
from store.uow import EventStore

INTERNAL_KINDS = frozenset({"change_stage", "add_note", "create_task", "escalate", "merge_customers"})


def _effect(
    request: ActionRequest, event_type: str, payload: ev.Payload, stream: str | None = None
) -> ev.NewEvent:
    return ev.NewEvent(
        type=event_type,
        payload=payload,
        stream=stream or request.customer_id,
        idempotency_key=f"{request.idempotency_key}:effect:{event_type}",
        actor=request.approved_by or f"agent:{request.agent}",
        source="executor",
        causation_id=request.proposal_id,
    )


class InternalConnector:
    """change_stage, add_note, create_task, escalate and merge_customers."""

    name = "internal"
    dedupes = True

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        """Plan the effect events and how to compensate them."""
        with self.store.engine.connect() as connection:
            return self.plan(request, SqlState(connection))

    def plan(self, request: ActionRequest, state: SqlState) -> ActionResult:
        """run(), reading the customers through `state`: the executor passes the transaction that starts
        the attempt, so the effects are planned on what that transaction sees and appended in it."""
        params = request.params
        author = request.approved_by or f"agent:{request.agent}"
        if request.kind == "change_stage":
            stage = str(params.get("stage") or "")
            if stage not in ev.STAGES:
                raise PermanentError(f"unknown stage {stage!r}", retryable=False)
            previous = _stage_of(state, request.customer_id)
            effect = _effect(
                request, "stage.changed", ev.StageChanged(stage=stage, reason=params.get("reason"))
            )
            return ActionResult(f"stage {previous} → {stage}", {"stage": previous}, (effect,))
        if request.kind == "add_note":
            text = (request.draft or {}).get("body") or str(params.get("text") or "")
            if not text.strip():
                raise PermanentError("an empty note", retryable=False)
            effect = _effect(request, "note.added", ev.NoteAdded(text=text, author=author))
            return ActionResult(f"note {effect.id}", {"note_id": effect.id}, (effect,))
        if request.kind in {"create_task", "escalate"}:
            title = str(params.get("title") or "")
            if request.kind == "escalate":
                title = (
                    f"Escalated: {params.get('reason') or (request.draft or {}).get('body') or ''}".strip()
                )
            if not title.strip(": "):
                raise PermanentError("a task needs a title", retryable=False)
            task_id = f"task-{request.proposal_id}"
            due = _date(params.get("due_date"))
            effect = _effect(
                request, "task.created", ev.TaskCreated(task_id=task_id, title=title, due_date=due)
            )
            return ActionResult(f"task {task_id}", {"task_id": task_id}, (effect,))
        if request.kind == "merge_customers":
            into, merged = str(params.get("into") or ""), str(params.get("merged") or "")
            if not into or not merged or into == merged:
                raise PermanentError("a merge needs two different customers", retryable=False)
            reason = str(params.get("reason") or "approved merge")
            compensation = {"into": into, "merged": merged}
            if _merged_into(state, merged) == into:  # identity resolution merged them already
                return ActionResult(f"{merged} is part of {into}", compensation, ())
            effect = _effect(
                request, "customer.merged", ev.CustomerMerged(merged=merged, reason=reason), into
            )
            return ActionResult(f"merged {merged} into {into}", compensation, (effect,))
        raise PermanentError(f"no connector acts on {request.kind}; do it by hand", retryable=False)


def _merged_into(state: SqlState, customer_id: str) -> str | None:
    row = state.get("customers", id=customer_id)
    return str(row["merged_into"]) if row and row["merged_into"] else None


def _stage_of(state: SqlState, customer_id: str) -> str:
    row = state.get("customers", id=customer_id)
    return str(row["stage"]) if row else "lead"


def compensate(
    kind: str, customer_id: str, compensation: dict[str, Any], key: str, by: str
) -> list[ev.NewEvent]:
    """The events that undo an executed internal update."""
    reason = f"undone by {by}"

    def new(event_type: str, payload: ev.Payload, stream: str = customer_id) -> ev.NewEvent:
        return ev.NewEvent(
            type=event_type,
            payload=payload,
            stream=stream,
            idempotency_key=f"{key}:undo:{event_type}",
            actor=by,
            source="executor",
        )

    if kind == "change_stage":
        return [new("stage.changed", ev.StageChanged(stage=compensation["stage"], reason=reason))]
    if kind == "add_note":
        return [new("note.retracted", sp.NoteRetracted(note_id=compensation["note_id"], reason=reason))]
    if kind in {"create_task", "escalate"}:
        return [new("task.cancelled", sp.TaskCancelled(task_id=compensation["task_id"], reason=reason))]
    if kind == "merge_customers":
        payload = ev.CustomerUnmerged(merged=compensation["merged"], reason=reason)
        return [new("customer.unmerged", payload, compensation["into"])]
    return []


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PermanentError(f"due_date {value!r} is not YYYY-MM-DD", retryable=False) from None
