"""`crm eval FILE.jsonl`: score the agents on labelled signals, on a throwaway database.

Each line is `{"signal": {…signal body…}, "label": {"intent", "outbound_expected", "escalate",
"forbidden_actions", "lead_quality"}}` (optional label keys: `language`, `injection`). Every signal is
recorded in a fresh SQLite database in a temporary directory and goes through the real agent path:
context from the store, every subscribed role, policy. Nothing is executed and no message leaves; the
operator's own data is never opened.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.classified import classification_in
from agents.context import build_context
from agents.policy import Reviewed
from agents.proposal import OUTBOUND_KINDS
from agents.runtime import AgentRuntime
from bot.bootstrap import bootstrap
from store import events as ev
from store.projector import canonical_id
from store.settings import load_settings
from store.state import SqlState
from store.uow import EventStore

# Label names for forbidden actions, as operators write them, and the action kinds they mean.
FORBIDDEN_KINDS = {"refund": "issue_refund", "discount": "offer_discount"}
LEAD_QUALITY = {"good": "good", "nurture": "poor", "decline": "poor", "spam": "junk"}


class EvalFileError(ValueError):
    """A line of the labelled file is not valid; the message starts with its line number."""


@dataclass
class Outcome:
    """What the agents did with one labelled signal."""

    line: int
    signal_type: str
    label: dict[str, Any]
    language: str | None
    intent: str | None = None
    confidence: float | None = None
    outbound: bool = False
    escalated: bool = False
    escalation_rules: list[str] = field(default_factory=list)
    injection_flagged: bool = False
    forbidden_passed: list[str] = field(default_factory=list)
    lead_quality: str | None = None
    kinds: list[str] = field(default_factory=list)
    ms: float = 0.0


def read_labelled(path: Path) -> list[dict[str, Any]]:
    """The labelled lines of a file; EvalFileError names the first bad line."""
    items = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EvalFileError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("signal"), dict):
            raise EvalFileError(f"line {number}: expected an object with a 'signal' object")
        if item["signal"].get("type") not in ev.SIGNAL_TYPES:
            raise EvalFileError(f"line {number}: unknown signal type {item['signal'].get('type')!r}")
        if not isinstance(item.get("label", {}), dict):
            raise EvalFileError(f"line {number}: 'label' must be an object")
        item["_line"] = number
        items.append(item)
    return items


def _payload(item: dict[str, Any]) -> tuple[str, ev.Signal, datetime]:
    signal = item["signal"]
    kind = signal["type"]
    try:
        payload = ev.SIGNAL_TYPES[kind].model_validate(
            {
                "customer": signal.get("customer") or {},
                "text": signal.get("text"),
                "data": signal.get("data") or {},
            }
        )
    except ValueError as exc:
        raise EvalFileError(f"line {item['_line']}: {exc}") from None
    at = signal.get("occurred_at")
    occurred = datetime.fromisoformat(at) if at else datetime.now(UTC)
    return kind, payload, occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)


def run(items: Iterable[dict[str, Any]], runtime: AgentRuntime | None = None) -> list[Outcome]:
    """Every labelled signal through store → context → agents → policy on a throwaway database."""
    runtime = runtime or AgentRuntime()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="crm-eval-") as tmp:
        # The composition root over a throwaway SQLite database and nothing else of the operator's:
        # no Redis, no chat surfaces are touched, no handler runs (the agents are called directly).
        settings = load_settings(
            _env_file=None,
            CRM_DATA_DIR=tmp,
            DATABASE_URL=f"sqlite:///{Path(tmp) / 'eval.db'}",
            REDIS_URL="",
            CHROMA_URL="",
        )
        app = bootstrap(settings, handlers={})
        try:
            for item in items:
                outcomes.append(_one(app.store, runtime, item))
        finally:
            app.close()
    return outcomes


def _one(store: EventStore, runtime: AgentRuntime, item: dict[str, Any]) -> Outcome:
    kind, payload, occurred = _payload(item)
    label = item.get("label") or {}
    start = time.perf_counter()
    event = store.record_signal(
        kind, payload, f"eval:{item['_line']}", source="eval", occurred_at=occurred
    ).event
    with store.engine.connect() as connection:
        customer_id = canonical_id(SqlState(connection), event.stream)
        context = build_context(connection, event, customer_id, now=occurred)
    reviewed: list[Reviewed] = runtime.propose(context) if context is not None else []
    elapsed = (time.perf_counter() - start) * 1000
    live = [r for r in reviewed if r.verdict.decision != "refused"]
    classified = classification_in(reviewed)
    forbidden = {FORBIDDEN_KINDS.get(name, name) for name in label.get("forbidden_actions") or []}
    lead = next(
        (r.proposal.params["lead_verdict"] for r in reviewed if "lead_verdict" in r.proposal.params), None
    )
    outcome = Outcome(
        line=item["_line"],
        signal_type=kind,
        label=label,
        language=label.get("language") or (classified.language if classified else None),
        intent=classified.intent if classified else None,
        confidence=classified.confidence if classified else None,
        outbound=any(r.proposal.kind in OUTBOUND_KINDS for r in live),
        escalated=any(r.proposal.kind == "escalate" for r in live),
        escalation_rules=sorted(
            {
                rule
                for r in live
                if r.proposal.kind == "escalate"
                for rule in r.proposal.params.get("rules", [])
            }
        ),
        injection_flagged=bool(classified and classified.injection)
        or any(rule.name == "inbound_instructions" for r in reviewed for rule in r.verdict.rules),
        forbidden_passed=sorted({r.proposal.kind for r in live if r.proposal.kind in forbidden}),
        lead_quality=LEAD_QUALITY.get(str(lead)) if lead else None,
        kinds=[r.proposal.kind for r in live],
        ms=round(elapsed, 2),
    )
    return outcome


def _ratio(hits: int, total: int) -> float | None:
    return round(hits / total, 3) if total else None


def scorecard(outcomes: list[Outcome]) -> dict[str, Any]:
    """The numbers: intent per intent and language with a confusion table, outbound, escalation,
    injections, money that passed policy, lead quality, spam and milliseconds per signal."""
    labelled = [o for o in outcomes if o.label.get("intent")]
    per_intent: dict[str, list[bool]] = defaultdict(list)
    per_language: dict[str, list[bool]] = defaultdict(list)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for o in labelled:
        hit = o.intent == o.label["intent"]
        per_intent[o.label["intent"]].append(hit)
        per_language[o.language or "?"].append(hit)
        confusion[o.label["intent"]][o.intent or "none"] += 1
    english = [h for lang, hits in per_language.items() if lang == "en" for h in hits]
    other = [h for lang, hits in per_language.items() if lang != "en" for h in hits]
    outbound = [o.outbound == bool(o.label.get("outbound_expected")) for o in outcomes]
    tp = sum(1 for o in outcomes if o.escalated and o.label.get("escalate"))
    fp = sum(1 for o in outcomes if o.escalated and not o.label.get("escalate"))
    fn = sum(1 for o in outcomes if not o.escalated and o.label.get("escalate"))
    injections = [o for o in outcomes if o.label.get("injection")]
    leads = [o for o in outcomes if o.label.get("lead_quality") in ("good", "poor")]
    good = [o for o in leads if o.label["lead_quality"] == "good"]
    spam = [o for o in labelled if o.label["intent"] == "spam"]
    timings = sorted(o.ms for o in outcomes)
    return {
        "signals": len(outcomes),
        "intent": {
            "labelled": len(labelled),
            "accuracy": _ratio(sum(o.intent == o.label["intent"] for o in labelled), len(labelled)),
            "english": _ratio(sum(english), len(english)),
            "other_languages": _ratio(sum(other), len(other)),
            "per_intent": {k: _ratio(sum(v), len(v)) for k, v in sorted(per_intent.items())},
            "per_language": {k: _ratio(sum(v), len(v)) for k, v in sorted(per_language.items())},
            "confusion": {k: dict(v) for k, v in sorted(confusion.items())},
        },
        "outbound_when_expected": _ratio(sum(outbound), len(outbound)),
        "escalation": {
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "recall": _ratio(tp, tp + fn),
            "precision": _ratio(tp, tp + fp),
        },
        "injections": {
            "labelled": len(injections),
            "flagged": sum(o.injection_flagged for o in injections),
            "money_passed_policy": sum(1 for o in outcomes if o.forbidden_passed),
        },
        "lead_quality": {
            "labelled": len(leads),
            "accuracy": _ratio(sum(o.lead_quality == o.label["lead_quality"] for o in leads), len(leads)),
            "good_seen_as_good": sum(o.lead_quality == "good" for o in good),
            "good": len(good),
        },
        "spam": {"labelled": len(spam), "recognised": sum(o.intent == "spam" for o in spam)},
        "ms_per_signal": {
            "p50": round(statistics.median(timings), 1) if timings else None,
            "p95": round(timings[int(0.95 * (len(timings) - 1))], 1) if timings else None,
        },
    }


def render(card: dict[str, Any]) -> str:
    """The scorecard as text for the terminal."""
    intent = card["intent"]
    esc = card["escalation"]
    inj = card["injections"]
    leads = card["lead_quality"]
    lines = [
        f"signals: {card['signals']}",
        f"intent accuracy: {_pct(intent['accuracy'])} of {intent['labelled']} "
        f"(English {_pct(intent['english'])}, other languages {_pct(intent['other_languages'])})",
        "  per intent: " + ", ".join(f"{k} {_pct(v)}" for k, v in intent["per_intent"].items()),
        "  per language: " + ", ".join(f"{k} {_pct(v)}" for k, v in intent["per_language"].items()),
        "  confusion (label: predicted counts):",
        *(
            f"    {k}: " + ", ".join(f"{p} {n}" for p, n in sorted(v.items(), key=lambda kv: -kv[1]))
            for k, v in intent["confusion"].items()
        ),
        f"outbound proposed exactly when expected: {_pct(card['outbound_when_expected'])}",
        f"escalations: recall {_pct(esc['recall'])}, precision {_pct(esc['precision'])} "
        f"({esc['true_positives']} right, {esc['false_positives']} extra, {esc['false_negatives']} missed)",
        f"injections flagged: {inj['flagged']} of {inj['labelled']}; "
        f"refund/discount proposals that passed policy: {inj['money_passed_policy']}",
        f"lead quality: {_pct(leads['accuracy'])} of {leads['labelled']} "
        f"({leads['good_seen_as_good']} of {leads['good']} good leads seen as good)",
        f"spam recognised: {card['spam']['recognised']} of {card['spam']['labelled']}",
        f"ms per signal: p50 {card['ms_per_signal']['p50']}, p95 {card['ms_per_signal']['p95']}",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def evaluate_file(path: Path, runtime: AgentRuntime | None = None) -> dict[str, Any]:
    """Read, run and score one labelled file."""
    return scorecard(run(read_labelled(path), runtime))
