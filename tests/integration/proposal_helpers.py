"""Shared pieces of the proposal lifecycle tests: a customer, a recorded proposal, a recording surface."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.commands import Actor, Commands
from jobs.notify import MessageRef, Notifier
from jobs.views import ProposalView
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.settings import Settings, load_settings
from store.uow import EventStore

OPERATOR = Actor("terminal", "op", "Olivia")
SLACK_OPERATOR = Actor("slack", "U1", "Sam")
TELEGRAM_OPERATOR = Actor("telegram", "42", "Tom")
STRANGER = Actor("slack", "U666", "Mallory")
OPERATORS = "terminal:op,slack:U1,telegram:42"


def settings_for(tmp_path: Any, **values: Any) -> Settings:
    values.setdefault("OPERATORS", OPERATORS)
    values.setdefault("UNDO_WINDOW_SECONDS", 0)
    return load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path / "data"), **values)


def make_customer(store: EventStore, name: str = "Ada Lovelace", email: str = "ada@acme.test") -> str:
    signal = ev.LeadCreated(customer=ev.CustomerRef(name=name, email=email))
    return store.record_signal("lead.created", signal, f"test:{email}", source="test").event.stream


def email_proposal(
    customer_id: str, to: str = "ada@acme.test", body: str = "Hi Ada,\n\nThanks!\n\nBest"
) -> dict[str, Any]:
    return {
        "agent": "inbox_triage",
        "kind": "send_email",
        "customer_id": customer_id,
        "params": {"to": to, "subject": "Re: hello", "body": body},
        "draft": {"subject": "Re: hello", "body": body},
        "rationale": "the customer asked a question",
        "sources": [{"kind": "event", "id": "e1", "note": None}],
        "confidence": 0.8,
        "cost": {"model": None, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.002},
        "drafted_from_template": True,
        "event_id": None,
    }


def proposal(
    customer_id: str, kind: str, params: dict[str, Any], agent: str = "inbox_triage"
) -> dict[str, Any]:
    return {
        "agent": agent,
        "kind": kind,
        "customer_id": customer_id,
        "params": params,
        "draft": None,
        "rationale": "because",
        "sources": [],
        "confidence": 0.9,
        "cost": {"usd": 0.001},
        "drafted_from_template": True,
        "event_id": None,
    }


def record(store: EventStore, payload: dict[str, Any], verdict: str = "approval", **kwargs: Any) -> str:
    pid, _ = lc.record_proposal(
        store, payload, verdict=verdict, rules=["test: rule"], key=ev.new_id(), **kwargs
    )
    return pid


def row(store: EventStore, pid: str) -> dict[str, Any]:
    with store.engine.connect() as connection:
        found = lc.get_proposal(connection, pid)
    assert found is not None
    return found


def events_of(store: EventStore, pid: str, event_type: str | None = None) -> list[ev.Event]:
    with store.engine.connect() as connection:
        found = lc.proposal_events(connection, pid)
    return [e for e in found if event_type is None or e.type == event_type]


def events_typed(store: EventStore, event_type: str) -> list[ev.Event]:
    return [e for e in store.read_all() if e.type == event_type]


@dataclass
class RecordingSurface:
    """A surface that keeps what it was asked to show (the chat surfaces are tested in their issues)."""

    name: str = "terminal"
    posted: list[ProposalView] = field(default_factory=list)
    updates: list[tuple[MessageRef, ProposalView]] = field(default_factory=list)
    replies: list[tuple[str, str, str]] = field(default_factory=list)
    notices: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post_proposal(self, view: ProposalView) -> MessageRef | None:
        with self.lock:
            self.posted.append(view)
            return MessageRef(self.name, "chat-1", str(len(self.posted)))

    def update_proposal(self, ref: MessageRef, view: ProposalView) -> None:
        with self.lock:
            self.updates.append((ref, view))

    def send_reply(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        with self.lock:
            self.replies.append((chat_id, text, idempotency_key))
            return str(len(self.replies))

    def post_notice(self, lines: list[str]) -> None:
        with self.lock:
            self.notices.append(lines)

    def last_view(self) -> ProposalView:
        return self.updates[-1][1] if self.updates else self.posted[-1]


def commands(store: EventStore, settings: Settings, **kwargs: Any) -> tuple[Commands, list[str], Notifier]:
    scheduled: list[str] = []
    notifier = kwargs.pop("notifier", None) or Notifier(store)
    return (
        Commands(
            store,
            settings,
            schedule_execution=lambda pid, _row: scheduled.append(pid),
            notifier=notifier,
            **kwargs,
        ),
        scheduled,
        notifier,
    )


def approved_emails(store: EventStore, tmp_path: Any, n: int) -> list[str]:
    """n email proposals to one new customer, each approved by the operator."""
    cmds, _, _ = commands(store, settings_for(tmp_path))
    customer = make_customer(store)
    pids = [record(store, email_proposal(customer)) for _ in range(n)]
    for pid in pids:
        assert cmds.approve(OPERATOR, pid).ok
    return pids


def start_attempt(store: EventStore, pid: str, attempt: int = 1, lease_until: datetime | None = None) -> None:
    """Put the proposal in "executing" at `attempt` over SMTP, as the executor's start does (a later
    attempt: another worker taking it over once the lease ran out)."""
    lease = lease_until or ev.utcnow() + timedelta(minutes=5)
    started = sp.ActionStarted(
        attempt=attempt, connector="smtp", idempotency_key=f"crm-{pid}", lease_until=lease
    )
    planned = [
        (lc.on_proposal(pid, "action.started", started, lc.attempt_key(pid, attempt, "started")), False)
    ]
    assert lc.transition(store, pid, {"approved", "executing"}, lambda _row: planned).won
