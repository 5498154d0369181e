"""Retrain the triage heads: `python -m agents.classifier.train [--corpus FILE.jsonl] [--out FILE.npz]`.

Reads the train split only (tests/fixtures/corpus/train.jsonl by default; the dev split is never read
here). 20% of it, stratified by intent, is held out to fit the temperature and to report held-out
accuracy; the heads are then refitted on all of it with that temperature and written to the versioned
.npz that ships in the package.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.classifier import embedder
from agents.classifier.head import Head, expected_calibration_error, fit, fit_temperature, save
from agents.classifier.model import (
    ESCALATION_CLASSES,
    HEAD_PATH,
    INJECTION_CLASSES,
    MODEL_VERSION,
    message_text,
)
from agents.injection import normalise
from agents.intents import INTENTS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = ROOT / "tests" / "fixtures" / "corpus" / "train.jsonl"
HOLD_OUT = 0.2


def examples(path: Path) -> list[dict[str, Any]]:
    """Labelled messages of a corpus file: text, intent, injection flag, language."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        signal, label = item["signal"], item["label"]
        if signal.get("type") != "message.received" or not label.get("intent"):
            continue
        data = signal.get("data") or {}
        out.append(
            {
                "text": message_text(
                    normalise(signal.get("text") or ""), normalise(data.get("subject") or "")
                ),
                "intent": label["intent"],
                "injection": "yes" if label.get("injection") else "no",
                "escalation": "yes" if label.get("escalate") else "no",
                "language": label.get("language"),
            }
        )
    return out


def split(items: list[dict[str, Any]], share: float, seed: int = 15) -> tuple[list[int], list[int]]:
    """Indices of (fit, held-out), stratified by intent."""
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_intent[item["intent"]].append(i)
    rng = random.Random(seed)
    fit_idx, held_idx = [], []
    for indices in by_intent.values():
        rng.shuffle(indices)
        cut = max(1, round(len(indices) * share))
        held_idx += indices[:cut]
        fit_idx += indices[cut:]
    return sorted(fit_idx), sorted(held_idx)


def train_heads(
    x: np.ndarray, items: list[dict[str, Any]], weights: np.ndarray | None = None
) -> dict[str, Head]:
    """Fit intent, injection and escalation heads; temperatures from a held-out fifth; refit on all."""
    fit_idx, held_idx = split(items, HOLD_OUT)
    heads: dict[str, Head] = {}
    for name, key, classes in (
        ("intent", "intent", INTENTS),
        ("injection", "injection", INJECTION_CLASSES),
        ("escalation", "escalation", ESCALATION_CLASSES),
    ):
        labels = [item[key] for item in items]
        w = weights[fit_idx] if weights is not None else None
        partial = fit(x[fit_idx], [labels[i] for i in fit_idx], classes, weights=w)
        temperature = fit_temperature(partial, x[held_idx], [labels[i] for i in held_idx])
        calibrated = partial.with_temperature(temperature)
        probs = calibrated.probabilities(x[held_idx])
        predicted = [classes[i] for i in probs.argmax(axis=1)]
        correct = np.array([p == labels[i] for p, i in zip(predicted, held_idx, strict=True)])
        ece = expected_calibration_error(probs.max(axis=1), correct)
        print(f"{name}: held-out accuracy {correct.mean():.3f}, temperature {temperature:.2f}, ECE {ece:.3f}")
        heads[name] = fit(x, labels, classes, weights=weights).with_temperature(temperature)
    return heads


def main(argv: list[str] | None = None) -> None:
    """Train on the corpus and write the heads."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=HEAD_PATH)
    args = parser.parse_args(argv)
    items = examples(args.corpus)
    x = embedder.embed([item["text"] for item in items])
    heads = train_heads(x, items)
    meta = {"version": MODEL_VERSION, "embedder": embedder.EMBEDDER_ID, "examples": str(len(items))}
    save(args.out, heads, meta)
    print(f"wrote {args.out} ({len(items)} examples, {MODEL_VERSION})")


if __name__ == "__main__":
    main()
