"""A backlog of approved proposals is executed in batches, and every one of them still exactly once.

jobs.execute starts a waiting backlog in one transaction, runs each action in turn and records the
results together, or with the next handover. These tests count what the servers received, the
transactions committed and the events appended, on SQLite and on Postgres.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from jobs.connectors.base import ActionRequest, ActionResult, Handover, PermanentError
from jobs.execute import Executor, default_connectors
from jobs.proposal_service import recover_stalled
from store import events as ev
from store import handover
from store import lifecycle as lc
from store import proposals as sp
from store.uow import EventStore
from tests.integration.proposal_helpers import (
    OPERATOR,
    commands,
    email_proposal,
    events_of,
    make_customer,
    proposal,
    record,
    row,
    settings_for,
)
from tests.integration.test_execute_crash import _kill, _spawn, _wait_for
from tests.standins.smtp import SmtpStandin


class Counting:
    """Records which proposals it ran; optionally fails a proposal's first run."""

    name = "counting"

    def __init__(self, *, dedupes: bool = True, fail_first: set[str] | None = None) -> None:
        self.dedupes = dedupes
        self.ran: list[str] = []
        self.fail_first = set(fail_first or ())
        self.lock = threading.Lock()

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        with self.lock:
            self.ran.append(request.proposal_id)
            failing = request.proposal_id in self.fail_first
            self.fail_first.discard(request.proposal_id)
        if failing:
            raise PermanentError("the server said no", retryable=True)
        if not self.dedupes:
            handover()
        return ActionResult(reference=f"ref-{request.proposal_id}")


def _approved(store: EventStore, settings: Any, n: int, kind: str = "send_email") -> list[str]:
    cmds, _, _ = commands(store, settings)
    customer = make_customer(store)
    pids = []
    for _ in range(n):
        payload = email_proposal(customer) if kind == "send_email" else proposal(customer, kind, {"x": 1})
        pid = record(store, payload)
        assert cmds.approve(OPERATOR, pid).ok
        pids.append(pid)
    return pids


@contextmanager
def _commits(engine: Engine) -> Iterator[list[int]]:
    counted: list[int] = []

    def on_commit(_connection: Any) -> None:
        counted.append(1)

    event.listen(engine, "commit", on_commit)
    try:
        yield counted
    finally:
        event.remove(engine, "commit", on_commit)


def test_a_backlog_is_started_together_and_each_email_sent_once(store: EventStore, tmp_path: Path) -> None:
    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url, MAIL_FROM="ops@example.test")
        pids = _approved(store, settings, 5)
        executor = Executor(store, default_connectors(store, settings, lambda name: None))
        with _commits(store.engine) as commits:
            assert executor.execute(pids[0]).status == "executed"
        assert [row(store, pid)["state"] for pid in pids] == ["executed"] * 5
        assert len(smtp.messages) == 5
        assert len({message["Message-ID"] for message in smtp.messages}) == 5
        # One start for all five; each handover carries the previous email's result; one last result.
        # One at a time it would be three per email (start, handover, result).
        assert len(commits) == 1 + 5 + 1
        started = [events_of(store, pid, "action.started")[0].position for pid in pids]
        assert started == list(range(started[0], started[0] + 5))  # one transaction appended them
        # Their own jobs come later: each finds its proposal done and appends nothing.
        count = sum(1 for _ in store.read_all())
        with _commits(store.engine) as commits:
            assert [executor.execute(pid).status for pid in pids[1:]] == ["nothing"] * 4
        assert commits == [] and sum(1 for _ in store.read_all()) == count
        assert len(smtp.messages) == 5


def test_actions_that_deduplicate_take_two_transactions_for_the_whole_backlog(
    store: EventStore, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    pids = _approved(store, settings, 4)
    connector = Counting()
    with _commits(store.engine) as commits:
        outcome = Executor(store, {"send_email": connector}, batch_more=2).execute(pids[0])
    assert outcome.status == "executed"
    assert connector.ran == pids[:3]  # the oldest decisions first, up to the batch's size
    assert len(commits) == 2
    assert [row(store, pid)["state"] for pid in pids] == ["executed"] * 3 + ["approved"]
    assert [row(store, pid)["result_ref"] for pid in pids[:3]] == [f"ref-{pid}" for pid in pids[:3]]


def test_only_approved_proposals_whose_undo_window_is_over_join_a_batch(
    store: EventStore, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    due = _approved(store, settings, 2)
    cmds, _, _ = commands(store, settings)
    customer = make_customer(store, "Grace", "grace@navy.test")
    pending = record(store, email_proposal(customer))
    rejected = record(store, email_proposal(customer))
    assert cmds.reject(OPERATOR, rejected).ok
    windowed_settings = settings_for(tmp_path, UNDO_WINDOW_SECONDS=600)
    windowed_cmds, _, _ = commands(store, windowed_settings)
    windowed = record(store, email_proposal(customer))
    assert windowed_cmds.approve(OPERATOR, windowed).ok
    connector = Counting()
    assert Executor(store, {"send_email": connector}).execute(due[0]).status == "executed"
    assert connector.ran == due
    states = {pid: row(store, pid)["state"] for pid in (pending, rejected, windowed)}
    assert states == {pending: "pending", rejected: "rejected", windowed: "approved"}


def test_a_batch_that_ran_out_of_time_leaves_the_rest_to_the_sweep(store: EventStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    pids = _approved(store, settings, 3)
    connector = Counting()
    ticks = iter(range(0, 10_000, 100))  # each look at the clock is 100 s later; the budget is 75 s
    executor = Executor(store, {"send_email": connector}, lease_seconds=300, monotonic=lambda: next(ticks))
    assert executor.execute(pids[0]).status == "executed"
    assert connector.ran == pids[:1]
    assert [row(store, pid)["state"] for pid in pids] == ["executed", "executing", "executing"]
    # Their own jobs find the lease running and leave them: nothing runs twice meanwhile.
    assert [executor.execute(pid).status for pid in pids[1:]] == ["busy", "busy"]
    assert recover_stalled(store, lambda pid: None) == []
    # When the lease has run out the sweep queues them again, and they run once each.
    later = ev.utcnow() + timedelta(seconds=301)
    assert sorted(recover_stalled(store, lambda pid: None, now=later)) == sorted(pids[1:])
    late = Executor(store, {"send_email": connector}, clock=lambda: later, batch_more=0)
    assert [late.execute(pid).status for pid in pids[1:]] == ["executed", "executed"]
    assert Counter(connector.ran) == Counter(pids)
    assert [e.payload.attempt for e in events_of(store, pids[1], "action.started")] == [1, 2]  # type: ignore[attr-defined]


def test_a_failed_batched_action_retried_by_the_operator_runs_again(
    store: EventStore, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    pids = _approved(store, settings, 3)
    connector = Counting(dedupes=False, fail_first={pids[1]})
    executor = Executor(store, {"send_email": connector})
    assert executor.execute(pids[0]).status == "executed"
    assert [row(store, pid)["state"] for pid in pids] == ["executed", "failed", "executed"]
    assert row(store, pids[1])["error"] == "the server said no"
    cmds, scheduled, _ = commands(store, settings)
    assert cmds.retry(OPERATOR, pids[1]).ok and scheduled == [pids[1]]
    # The retry's job reaches a proposal the batch took earlier: it looks, finds it approved again, runs.
    assert executor.execute(pids[1]).status == "executed"
    assert Counter(connector.ran) == Counter({pids[0]: 1, pids[1]: 2, pids[2]: 1})
    # The executed one's own job is answered from memory (executed is final), without a statement.
    with _statements(store.engine) as sent:
        assert executor.execute(pids[2]).status == "nothing"
    assert sent == []
    assert Counter(connector.ran) == Counter({pids[0]: 1, pids[1]: 2, pids[2]: 1})


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, text: str, *_args: Any) -> None:
        sent.append(text)

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)


@pytest.mark.parametrize("dedupes", [True, False])
def test_two_workers_on_one_backlog_run_each_action_once(
    store: EventStore, tmp_path: Path, dedupes: bool
) -> None:
    settings = settings_for(tmp_path)
    pids = _approved(store, settings, 40)
    connector = Counting(dedupes=dedupes)
    workers = [Executor(store, {"send_email": connector}, batch_more=7) for _ in range(2)]
    statuses: list[str] = []

    def work(executor: Executor, order: list[str]) -> None:
        for pid in order:
            statuses.append(executor.execute(pid).status)

    orders = [random.Random(seed).sample(pids, len(pids)) for seed in (1, 2)]
    threads = [threading.Thread(target=work, args=pair) for pair in zip(workers, orders, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(connector.ran) == Counter(pids)  # every one once
    assert {row(store, pid)["state"] for pid in pids} == {"executed"}
    assert len(statuses) == 80 and set(statuses) <= {"executed", "busy", "nothing"}
    for pid in pids:
        assert len(events_of(store, pid, "action.executed")) == 1


def test_a_worker_killed_in_the_middle_of_a_batch_loses_nothing_and_sends_nothing_twice(
    db_url: str, store: EventStore, tmp_path: Path
) -> None:
    with SmtpStandin() as smtp:
        settings = settings_for(tmp_path, SMTP_URL=smtp.url, MAIL_FROM="ops@example.test")
        pids = _approved(store, settings, 3)
        marker = tmp_path / "paused"
        child = _spawn(db_url, smtp.url, pids[0], "after#2", marker)  # stop once the 2nd email is sent
        _wait_for(marker.exists, child)
        _kill(child)
        assert len(smtp.messages) == 2
        # The first email's result went with the second's handover; the second was sent with no
        # result; the third was started and never handed over.
        assert [row(store, pid)["state"] for pid in pids] == ["executed", "executing", "executing"]
        assert row(store, pids[1])["phase"] == "handover" and row(store, pids[2])["phase"] != "handover"
        later = ev.utcnow() + timedelta(seconds=301)
        late = Executor(store, default_connectors(store, settings, lambda name: None), clock=lambda: later)
        outcomes = [late.execute(pid).status for pid in pids]
        assert outcomes == ["nothing", "uncertain", "executed"]
        assert len(smtp.messages) == 3
        assert len({message["Message-ID"] for message in smtp.messages}) == 3


def test_results_waiting_for_a_handover_that_could_not_be_written_are_recorded_after(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    pids = _approved(store, settings, 2)
    connector = Counting(dedupes=False)
    failures = []

    def flaky(original: Any) -> Any:
        def record(store_: EventStore, steps: Any, *args: Any, **kwargs: Any) -> Any:
            if len(steps) == 2 and not failures:  # the first result with the second one's handover
                failures.append(steps)
                raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
            return original(store_, steps, *args, **kwargs)

        return record

    # The general way, and on Postgres the one-query way (store.handover) that a handover takes first.
    monkeypatch.setattr(lc, "transition_each", flaky(lc.transition_each))
    monkeypatch.setattr(handover, "send", flaky(handover.send))
    Executor(store, {"send_email": connector}).execute(pids[0])
    assert failures and connector.ran == pids  # the second never got past its handover
    first, second = row(store, pids[0]), row(store, pids[1])
    assert (first["state"], first["result_ref"]) == ("executed", f"ref-{pids[0]}")
    assert second["state"] == "failed" and "server closed the connection" in second["error"]
    assert second["retryable"] is True


def test_a_step_whose_event_the_log_already_holds_loses_and_the_others_still_win(
    store: EventStore, tmp_path: Path
) -> None:
    """On Postgres transition_each bets that the log holds none of its events' keys and writes them with
    the commit; a lost bet commits nothing of that try, and the steps are planned again on the log."""
    customer = make_customer(store)
    first, second = (record(store, proposal(customer, "add_note", {"text": n})) for n in ("one", "two"))
    expires = ev.utcnow() + timedelta(days=1)
    planned: list[str] = []

    def remind(pid: str) -> lc.Step:
        def plan(_row: dict[str, Any]) -> list[lc.Planned]:
            planned.append(pid)
            reminded = sp.ProposalReminded(expires_at=expires)
            return [(lc.on_proposal(pid, "proposal.reminded", reminded, f"{pid}:reminded"), False)]

        return pid, {"pending"}, plan

    [alone] = lc.transition_each(store, [remind(second)])
    assert alone.won
    head = log_head(store)
    won_first, lost_second = lc.transition_each(store, [remind(first), remind(second)])
    assert won_first.won and not lost_second.won
    assert lost_second.row is not None and lost_second.row["reminded_at"] == row(store, second)["reminded_at"]
    reminders = [e for e in store.read_all() if e.type == "proposal.reminded"]
    assert [e.stream for e in reminders] == [second, first]
    assert reminders[-1].position == head + 1  # written once, next in the log
    assert row(store, first)["reminded_at"] is not None and row(store, first)["position"] == head + 1
    bet = 2 if store.engine.dialect.name == "postgresql" else 1  # planned again after the lost bet
    assert planned == [second] + [first, second] * bet
    lc.set_paused(store, "triage", True, "op")  # drawn from the sequence, which moved past those given
    assert [e.position for e in store.read_all()][-1] == head + 2


def log_head(store: EventStore) -> int:
    return max(e.position for e in store.read_all())


def test_a_batch_start_whose_event_the_log_holds_is_planned_again_in_a_new_transaction(
    store: EventStore, tmp_path: Path
) -> None:
    """start_batch makes the same bet: lost, it plans every proposal again, in a new transaction."""
    cmds, _, _ = commands(store, settings_for(tmp_path, UNDO_WINDOW_SECONDS=0))
    customer = make_customer(store)
    pids = [record(store, proposal(customer, "add_note", {"text": f"note {n}"})) for n in range(3)]
    for pid in pids:
        assert cmds.approve(OPERATOR, pid).ok
    taken = f"{pids[1]}:reminded"
    [alone] = lc.transition_each(store, [(pids[1], {"approved"}, lambda _row: [reminder(pids[1], taken)])])
    assert alone.won
    seen: list[tuple[str, Any]] = []  # (proposal, the state it was planned on), held: no id is reused

    def plan(row: dict[str, Any], state: Any) -> list[lc.Planned]:
        seen.append((row["id"], state))
        return [reminder(row["id"], f"{row['id']}:reminded")]  # the second one's is in the log

    first, *others = lc.start_batch(store, pids[0], {"approved"}, plan, more=5, now=ev.utcnow())
    assert first.won and [o.row["id"] for o in others if o.row] == [pids[2]]
    reminded = [e.stream for e in store.read_all() if e.type == "proposal.reminded"]
    assert reminded == [pids[1], pids[0], pids[2]]
    tries = 2 if store.engine.dialect.name == "postgresql" else 1
    assert [pid for pid, _ in seen] == pids * tries
    assert len({id(state) for _, state in seen}) == tries  # each try planned in its own transaction


def reminder(pid: str, key: str) -> lc.Planned:
    reminded = sp.ProposalReminded(expires_at=ev.utcnow() + timedelta(days=1))
    return lc.on_proposal(pid, "proposal.reminded", reminded, key), False
