"""The shipped triage classifier: embeddings + trained heads, loaded once per process on first use.

`predict(text, subject)` gives the intent with a calibrated confidence and the probability that the
message tries to instruct the agent. The heads are `triage-v3.npz` beside this module, written by
`python -m agents.classifier.train`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from agents.classifier import embedder
from agents.classifier.head import Head

MODEL_VERSION = "triage-v3"
HEAD_PATH = Path(__file__).with_name(f"{MODEL_VERSION}.npz")
INJECTION_CLASSES = ("no", "yes")
ESCALATION_CLASSES = ("no", "yes")
# At or above this probability the injection head flags a message on its own (rules can add to it).
INJECTION_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    """What the classifier says about one message."""

    intent: str
    confidence: float
    probabilities: dict[str, float]
    injection: float  # probability that the message addresses the agent with instructions
    escalation: float  # probability that a careful operator would want to be alerted at once
    version: str = MODEL_VERSION


class TriageClassifier:
    """Intent and injection heads over one embedder."""

    def __init__(self, intent: Head, injection: Head, escalation: Head, version: str = MODEL_VERSION) -> None:
        self.intent, self.injection, self.escalation, self.version = intent, injection, escalation, version

    @classmethod
    def load(cls, path: Path = HEAD_PATH) -> TriageClassifier:
        """Read the heads from an .npz written by the training script."""
        with np.load(path, allow_pickle=False) as arrays:
            version = str(arrays["meta_version"]) if "meta_version" in arrays else MODEL_VERSION
            return cls(
                Head.from_arrays(arrays, "intent"),
                Head.from_arrays(arrays, "injection"),
                Head.from_arrays(arrays, "escalation"),
                version,
            )

    def predict_vectors(self, vectors: np.ndarray) -> list[Prediction]:
        """Predictions for precomputed embeddings (one row each)."""
        intents = self.intent.probabilities(vectors)
        injected = self.injection.probabilities(vectors)[:, self.injection.classes.index("yes")]
        alert = self.escalation.probabilities(vectors)[:, self.escalation.classes.index("yes")]
        out = []
        for row, inj, esc in zip(intents, injected, alert, strict=True):
            best = int(row.argmax())
            out.append(
                Prediction(
                    intent=self.intent.classes[best],
                    confidence=round(float(row[best]), 3),
                    probabilities={
                        c: round(float(p), 4) for c, p in zip(self.intent.classes, row, strict=True)
                    },
                    injection=round(float(inj), 3),
                    escalation=round(float(esc), 3),
                    version=self.version,
                )
            )
        return out

    def predict_many(self, texts: list[str]) -> list[Prediction]:
        """Predictions for several messages (already joined with `message_text`)."""
        return self.predict_vectors(embedder.embed(texts))


def message_text(text: str | None, subject: str | None = None) -> str:
    """What is embedded for a message: its subject line, then its body."""
    subject = (subject or "").strip()
    body = (text or "").strip()
    return f"{subject}\n{body}" if subject else body


_lock = threading.Lock()
# How many of the operator's corrections a model sees as examples when it classifies a message.
FEW_SHOT_CORRECTIONS = 8

_loaded: TriageClassifier | None = None
_corrected: Any = None  # CorrectedClassifier once this deployment's corrections are installed


def classifier() -> Any:
    """The process-wide classifier (with this deployment's corrections, once installed)."""
    global _loaded
    if _corrected is not None:
        return _corrected
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = TriageClassifier.load()
    return _loaded


def learn_from(examples: Iterable[Any]) -> None:
    """Use the operator's corrected examples (agents.classifier.corrections) from now on, in this
    process: call with the examples replayed from the log at start, then with each new correction."""
    global _corrected
    from agents.classifier.corrections import CorrectedClassifier

    examples = list(examples)
    with _lock:
        if _corrected is None:
            _corrected = CorrectedClassifier(_loaded or TriageClassifier.load(), examples)
        else:
            _corrected.add(examples)
    _predict_joined.cache_clear()


def corrected_examples(limit: int = FEW_SHOT_CORRECTIONS) -> list[Any]:
    """The operator's latest corrected examples (newest last), for a model's few-shot prompt."""
    corrected = _corrected
    if corrected is None:
        return []
    return list(corrected.examples[-limit:])


def forget_corrections() -> None:
    """Back to the shipped classifier alone (tests, or an operator resetting the deployment)."""
    global _corrected
    with _lock:
        _corrected = None
    _predict_joined.cache_clear()


@lru_cache(maxsize=512)
def _predict_joined(joined: str) -> Prediction:
    return classifier().predict_many([joined])[0]


def predict(text: str | None, subject: str | None = None) -> Prediction:
    """The intent, injection and escalation probabilities of one message (cached per text)."""
    return _predict_joined(message_text(text, subject))
