"""The digest closes the loop: pending approvals come with their buttons (copies kept current), what
expired unseen is listed, and the rates, time to decision and cost per action are the very figures
/metrics reports, over one window."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from bot.bootstrap import bootstrap
from jobs import digest as d
from jobs.proposal_service import expire_due
from store import events as ev
from store import lifecycle as lc
from store import proposals as sp
from store.proposal_metrics import RATE_WINDOW, LifecycleMetrics, recent_metrics
from store.settings import Settings
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import (
    OPERATOR,
    RecordingSurface,
    commands,
    email_proposal,
    make_customer,
    record,
    settings_for,
)


def test_the_scheduled_digest_carries_pending_approvals_with_their_buttons(
    store: EventStore, tmp_path: Path
) -> None:
    customer = make_customer(store)
    pids = [record(store, email_proposal(customer)) for _ in range(2)]
    app = app_for(store, settings_for(tmp_path))
    slack, telegram = RecordingSurface(name="slack"), RecordingSurface(name="telegram")
    app.notifier.add(slack)
    app.notifier.add(telegram)

    digest = d.deliver(app)

    assert digest.failed == {}
    for surface in (slack, telegram):
        assert surface.notices[0][0].startswith("Daily digest")
        assert [view.id for view in surface.posted] == pids
        assert all({"approve", "reject"} <= {b.action for b in view.buttons} for view in surface.posted)
    assert "  • #1 · send_email · Ada Lovelace · “Thanks! Best” · 0s" in digest.lines()
    # the digest's copies are the proposal's own: a decision edits them in place
    assert {m["surface"] for m in lc.messages_of(store.engine, pids[0])} == {"slack", "telegram"}
    cmds, _, _ = commands(store, app.settings, notifier=app.notifier)
    assert cmds.run(OPERATOR, "approve 1").ok
    assert slack.last_view().id == pids[0] and slack.last_view().state == "approved"


def test_what_expired_unseen_is_listed_in_the_next_digest(store: EventStore, tmp_path: Path) -> None:
    customer = make_customer(store)
    now = ev.utcnow()
    gone = record(store, email_proposal(customer), expires_at=now - timedelta(minutes=1))
    record(store, email_proposal(customer), expires_at=now + timedelta(hours=3))
    assert expire_due(store, None, now) == [gone]
    digest = d.prepare(store, now + timedelta(hours=2), settings_for(tmp_path).timezone, tmp_path)
    text = "\n".join(digest.lines())
    assert "Expired without a decision since yesterday: 1 (nothing was sent)" in text
    assert re.search(r"  • #1 · send_email · Ada Lovelace · .* · expired \d{4}-\d\d-\d\d", text), text
    assert "#2 · send_email" in text and "Waiting for you: 1" in text
    a_day_later = d.prepare(
        store, now + timedelta(days=1, hours=1), settings_for(tmp_path).timezone, tmp_path
    )
    assert "Expired without a decision" not in "\n".join(a_day_later.lines()), "listed once, not for ever"


def _decided_mix(store: EventStore, settings: Settings) -> None:
    """Two approved, one edited, one rejected now; one rejected 40 days ago (outside the window)."""
    customer = make_customer(store)
    cmds, _, _ = commands(store, settings)
    for _ in range(4):
        record(store, email_proposal(customer))
    assert cmds.run(OPERATOR, "approve 1").ok and cmds.run(OPERATOR, "approve 2").ok
    assert cmds.run(OPERATOR, "edit 3 subject Better").ok
    assert cmds.run(OPERATOR, "reject 4 wrong tone").ok
    old = ev.utcnow() - timedelta(days=40)
    payload = sp.ProposalRecorded(proposal=email_proposal(customer), verdict="approval")
    store.append(lc.on_proposal("prp_old", "proposal.recorded", payload, "test:old", occurred_at=old))
    decided = sp.ProposalDecided(decision="rejected", by="terminal:op", by_name="op", surface="terminal")
    store.append(
        lc.on_proposal("prp_old", "proposal.decided", decided, lc.decision_key("prp_old"), occurred_at=old)
    )


def test_digest_and_metrics_report_the_same_rates_over_one_window(make_settings, tmp_path: Path) -> None:
    app = bootstrap(make_settings(OPERATORS="terminal:op", UNDO_WINDOW_SECONDS="0"), handlers={})
    try:
        _decided_mix(app.store, app.settings)
        now = ev.utcnow()
        digest = d.prepare(app.store, now, app.settings.timezone, tmp_path)
        with app.engine.connect() as connection:
            assert digest.metrics == recent_metrics(connection, now)
        assert digest.metrics is not None and digest.metrics.decided == 4  # the old one is outside
        line = next(x for x in digest.lines() if x.startswith(f"Last {RATE_WINDOW.days} days: "))
        assert "approved 50%, edited 25%, rejected 25%, undone 0%" in line
        assert re.search(r"median time to decision \d+s", line), line
        assert "model spend $0.0080, no action done yet" in line  # four proposals at $0.002 in the window
        body = app.metrics.render().decode()
        assert 'crm_decision_rate{decision="approved"} 0.5' in body
        assert 'crm_decision_rate{decision="edited"} 0.25' in body
        assert 'crm_decision_rate{decision="rejected"} 0.25' in body
        assert 'crm_proposals{agent="inbox_triage",outcome="rejected"} 2.0' in body, "counts stay all-time"
    finally:
        app.close()


def test_duration_and_metrics_line_read_as_a_person_says_them() -> None:
    assert [d.duration(s) for s in (0, 59, 61, 3600 + 5 * 60, 86400 * 3 + 3600 * 4)] == [
        "0s",
        "59s",
        "1m",
        "1h 05m",
        "3d 4h",
    ]
    done = LifecycleMetrics(
        decided=2,
        approval_rate=1.0,
        edit_rate=0.0,
        rejection_rate=0.0,
        undo_rate=0.5,
        decision_seconds_p50=3720.0,
        executed=2,
        cost_usd=0.01,
        cost_per_executed_action=0.005,
    )
    assert d.metrics_line(done) == (
        "approved 100%, edited 0%, rejected 0%, undone 50% · median time to decision 1h 02m"
        " · cost per action $0.0050 (2 done)"
    )
