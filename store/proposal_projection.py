"""How proposal, decision and action events change the projections: proposals, messages, actions, pauses.

Pure functions of (event, state), registered with the projector; every value comes from the event, so
`crm replay` rebuilds the same rows. Also tells the memory layer what a correction leaves in memory.
"""

from __future__ import annotations

from typing import Any

from store import events as ev
from store.projector import handles
from store.proposals import (
    ActionExecuted,
    ActionFailed,
    ActionHandover,
    ActionResolved,
    ActionStarted,
    ActionUncertain,
    AgentPaused,
    CorrectionRecorded,
    NoteRetracted,
    ProposalDecided,
    ProposalMessagePosted,
    ProposalRecorded,
    ProposalSnoozed,
    ProposalUndone,
    ProposalWithdrawn,
    ProposalWoke,
    TaskCancelled,
)
from store.state import ProjectionState

# ---- projector handlers --------------------------------------------------------------------------


def _row(state: ProjectionState, event: ev.Event) -> dict[str, Any] | None:
    return state.get("proposals", id=event.stream)


def _save(target: ProjectionState, event: ev.Event, row: dict[str, Any], /, **changes: Any) -> None:
    """Change a proposal row that exists: only the changed columns are written (a whole row is 36
    columns, two of them JSON documents)."""
    changes.update(updated_at=event.occurred_at, position=event.position)
    row.update(changes)
    target.update("proposals", changes, id=row["id"])


@handles("proposal.recorded")
def _recorded(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalRecorded)
    proposal = p.proposal
    # A deferral that still needs a person is shown now and only held at send time (quiet hours,
    # frequency caps): the operator decides in the evening, the email leaves in the morning. A
    # deferred automatic action is snoozed until it may run.
    held_for_approval = p.verdict == "deferred" and p.then == "approval"
    state_name = (
        "pending"
        if held_for_approval
        else {"refused": "refused", "deferred": "snoozed"}.get(p.verdict, "pending")
    )
    cost = proposal.get("cost") or {}
    counter = state.get("counters", name=PROPOSAL_COUNTER)
    number = (int(counter["value"]) if counter else 0) + 1
    state.put("counters", {"name": PROPOSAL_COUNTER, "value": number})
    state.put(
        "proposals",
        {
            "id": event.stream,
            "customer_id": proposal["customer_id"],
            "agent": proposal["agent"],
            "kind": proposal["kind"],
            "state": state_name,
            "verdict": p.verdict,
            "verdict_then": p.then,
            "rules": list(p.rules),
            "proposed": proposal,
            "approved": None,
            "decision": None,
            "decided_by": None,
            "decided_by_name": None,
            "surface": None,
            "decided_at": None,
            "reason": p.refusal,
            "snoozed_until": p.not_before if p.verdict == "deferred" and not held_for_approval else None,
            "expires_at": p.expires_at,
            "not_before": p.not_before if held_for_approval else None,
            "event_id": proposal.get("event_id"),
            "cost_usd": float(cost.get("usd") or 0.0),
            "attempts": 0,
            "action_key": None,
            "phase": None,
            "lease_until": None,
            "result_ref": None,
            "error": None,
            "retryable": None,
            "compensation": None,
            "executed_at": None,
            "finished_at": None,
            "created_at": event.occurred_at,
            "updated_at": event.occurred_at,
            "position": event.position,
            "number": number,
            "reminded_at": None,
        },
    )


# The counter behind proposals' short handles (#12), one per database.
PROPOSAL_COUNTER = "proposals"


@handles("proposal.decided")
def _decided(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalDecided)
    row = _row(state, event)
    if row is None:
        return
    rejected = p.decision == "rejected"
    _save(
        state,
        event,
        row,
        state="rejected" if rejected else "approved",
        decision=p.decision,
        decided_by=p.by,
        decided_by_name=p.by_name,
        surface=p.surface,
        decided_at=event.occurred_at,
        reason=p.reason,
        approved=None if rejected else p.approved,
        not_before=p.not_before,
        finished_at=event.occurred_at if rejected else None,
    )


def _ended_undecided(state: ProjectionState, event: ev.Event, outcome: str, **changes: Any) -> None:
    """The proposal ended without a person's decision (expired, withdrawn): nothing was sent."""
    row = _row(state, event)
    if row is not None:
        _save(
            state,
            event,
            row,
            state=outcome,
            decision=outcome,
            decided_by="system",
            decided_at=event.occurred_at,
            finished_at=event.occurred_at,
            **changes,
        )


@handles("proposal.expired")
def _expired(event: ev.Event, state: ProjectionState) -> None:
    _ended_undecided(state, event, "expired")


@handles("proposal.withdrawn")
def _withdrawn(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalWithdrawn)
    _ended_undecided(state, event, "withdrawn", reason=p.reason)


@handles("proposal.snoozed")
def _snoozed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalSnoozed)
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, state="snoozed", snoozed_until=p.until)


@handles("proposal.woke")
def _woke(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalWoke)
    row = _row(state, event)
    if row is not None:
        _save(
            state, event, row, state="pending", snoozed_until=None, expires_at=p.expires_at, reminded_at=None
        )


@handles("proposal.reminded")
def _reminded(event: ev.Event, state: ProjectionState) -> None:
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, reminded_at=event.occurred_at)


@handles("proposal.undone")
def _undone(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalUndone)
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, state="undone", phase=p.how, finished_at=event.occurred_at)


@handles("proposal.message_posted")
def _message_posted(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ProposalMessagePosted)
    state.put(
        "proposal_messages",
        {
            "surface": p.surface,
            "chat_id": p.chat_id,
            "message_id": p.message_id,
            "proposal_id": event.stream,
            "posted_at": event.occurred_at,
        },
    )


def _action(state: ProjectionState, event: ev.Event, attempt: int) -> dict[str, Any] | None:
    return state.get("actions", id=f"{event.stream}:{attempt}")


@handles("action.started")
def _started(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionStarted)
    # A first attempt has nothing before it to take over (and the lookup would cost a read per action).
    previous = _action(state, event, p.attempt - 1) if p.attempt > 1 else None
    if previous is not None and previous["state"] in {"started", "handover"}:
        # taken over after its worker died; it provably sent nothing (else it would be "uncertain")
        previous.update(state="abandoned", finished_at=event.occurred_at)
        state.put("actions", previous)
    state.put(
        "actions",
        {
            "id": f"{event.stream}:{p.attempt}",
            "proposal_id": event.stream,
            "attempt": p.attempt,
            "connector": p.connector,
            "idempotency_key": p.idempotency_key,
            "state": "started",
            "reference": None,
            "error": None,
            "started_at": event.occurred_at,
            "finished_at": None,
        },
    )
    row = _row(state, event)
    if row is not None:
        _save(
            state,
            event,
            row,
            state="executing",
            attempts=p.attempt,
            action_key=p.idempotency_key,
            phase="started",
            lease_until=p.lease_until,
            error=None,
            retryable=None,
        )


@handles("action.handover")
def _handover(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionHandover)
    state.update("actions", {"state": "handover"}, id=f"{event.stream}:{p.attempt}")
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, phase="handover")


def _finish_action(target: ProjectionState, event: ev.Event, attempt: int, /, **changes: Any) -> None:
    target.update("actions", {**changes, "finished_at": event.occurred_at}, id=f"{event.stream}:{attempt}")


@handles("action.executed")
def _executed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionExecuted)
    _finish_action(state, event, p.attempt, state="executed", reference=p.reference)
    row = _row(state, event)
    if row is not None:
        _save(
            state,
            event,
            row,
            state="executed",
            phase="done",
            lease_until=None,
            result_ref=p.reference,
            compensation=p.compensation,
            executed_at=event.occurred_at,
            finished_at=event.occurred_at,
        )


@handles("action.failed")
def _failed(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionFailed)
    _finish_action(state, event, p.attempt, state="failed", error=p.error)
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, state="failed", lease_until=None, error=p.error, retryable=p.retryable)


@handles("action.uncertain")
def _uncertain(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionUncertain)
    _finish_action(state, event, p.attempt, state="uncertain", error=p.note)
    row = _row(state, event)
    if row is not None:
        _save(state, event, row, state="uncertain", lease_until=None, error=p.note)


@handles("action.resolved")
def _resolved(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, ActionResolved)
    row = _row(state, event)
    if row is None:
        return
    if p.choice in ("keep", "superseded"):
        phase = "kept" if p.choice == "keep" else "superseded"
        _save(state, event, row, state="closed", phase=phase, finished_at=event.occurred_at)
    else:  # resend or retry: back in the queue, no undo window the second time
        _save(state, event, row, state="approved", phase=p.choice, not_before=None)


@handles("agent.paused")
def _agent_paused(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, AgentPaused)
    if p.agent == "*" and not p.paused:  # resuming all clears every pause
        for row in state.scan("agent_pauses", paused=True):
            state.put("agent_pauses", {**row, "paused": False, "by": p.by, "at": event.occurred_at})
    state.put("agent_pauses", {"agent": p.agent, "paused": p.paused, "by": p.by, "at": event.occurred_at})


@handles("note.retracted")
def _note_retracted(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, NoteRetracted)
    note = state.get("notes", id=p.note_id)
    if note is not None and not note["text"].startswith(RETRACTED):
        note["text"] = f"{RETRACTED} {note['text']}"
        state.put("notes", note)


# A retracted note stays in the record, marked; the projection has no deletes.
RETRACTED = "[retracted]"


@handles("task.cancelled")
def _task_cancelled(event: ev.Event, state: ProjectionState) -> None:
    p = event.payload
    assert isinstance(p, TaskCancelled)
    task = state.get("tasks", id=p.task_id)
    if task is not None:
        task["status"] = "cancelled"
        state.put("tasks", task)


def _correction_memory(event: ev.Event) -> Any:
    """What a correction leaves in customer memory (the memory layer's extractor registry)."""
    from store.memory.extract import Extracted

    p = event.payload
    assert isinstance(p, CorrectionRecorded)
    parts = [f"Operator correction for {p.kind} (agent {p.agent}): {p.text}"]
    if p.original and p.edited:
        parts.append(f"Proposed: {str(p.original.get('body') or '')[:400]}")
        parts.append(f"Approved instead: {str(p.edited.get('body') or '')[:400]}")
    if p.params_after and p.params_after != p.params_before:
        changed = {k: v for k, v in p.params_after.items() if p.params_before.get(k) != v}
        parts.append(f"Changed: {changed}")
    return Extracted("correction", "\n".join(parts))


def _register_memory_extractor() -> None:
    from store.memory.extract import register_extractor

    register_extractor("correction.recorded", _correction_memory)


_register_memory_extractor()
