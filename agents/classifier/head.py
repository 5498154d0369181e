"""A softmax-regression head over sentence embeddings, with temperature scaling, in plain numpy.

Trained by `agents.classifier.train`; shipped as a versioned .npz beside this module. Small enough that
fitting it takes a second, so retraining on the operator's corrections is cheap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# L2 penalty on the weights: the corpus has a few hundred examples for 384 dimensions.
L2 = 1e-3
STEPS = 600
LEARNING_RATE = 0.5


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Head:
    """Weights (dim x classes), bias, class names and the temperature that calibrates them."""

    weights: np.ndarray
    bias: np.ndarray
    classes: tuple[str, ...]
    temperature: float = 1.0

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, one row per embedding."""
        return softmax((x @ self.weights + self.bias) / self.temperature)

    def with_temperature(self, temperature: float) -> Head:
        return Head(self.weights, self.bias, self.classes, temperature)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The head as named arrays for an .npz file."""
        return {
            f"{prefix}_weights": self.weights.astype(np.float32),
            f"{prefix}_bias": self.bias.astype(np.float32),
            f"{prefix}_classes": np.array(self.classes),
            f"{prefix}_temperature": np.array(self.temperature, dtype=np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str) -> Head:
        return cls(
            weights=np.asarray(arrays[f"{prefix}_weights"], dtype=np.float32),
            bias=np.asarray(arrays[f"{prefix}_bias"], dtype=np.float32),
            classes=tuple(str(c) for c in arrays[f"{prefix}_classes"]),
            temperature=float(arrays[f"{prefix}_temperature"]),
        )


def fit(
    x: np.ndarray,
    labels: list[str],
    classes: tuple[str, ...],
    *,
    weights: np.ndarray | None = None,
    l2: float = L2,
    steps: int = STEPS,
) -> Head:
    """Multinomial logistic regression by full-batch gradient descent (Adam), class-balanced.

    `weights` are per-example weights (e.g. the operator's corrections count more); default 1.
    """
    n, dim = x.shape
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((n, len(classes)))
    y[np.arange(n), [index[label] for label in labels]] = 1.0
    counts = y.sum(axis=0)
    balance = (n / (len(classes) * np.maximum(counts, 1)))[[index[label] for label in labels]]
    sample = balance * (weights if weights is not None else 1.0)
    sample = sample / sample.sum()
    w = np.zeros((dim, len(classes)))
    b = np.zeros(len(classes))
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    scale = 10.0  # embeddings are unit vectors: a fixed scale lets small weights reach confident logits
    for step in range(1, steps + 1):
        p = softmax(scale * (x @ w) + b)
        error = (p - y) * sample[:, None]
        grad_w = scale * (x.T @ error) + l2 * w
        grad_b = error.sum(axis=0)
        for param, grad, m, v in ((w, grad_w, m_w, v_w), (b, grad_b, m_b, v_b)):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= LEARNING_RATE * 0.02 * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
    return Head(weights=(scale * w).astype(np.float32), bias=b.astype(np.float32), classes=classes)


def fit_temperature(head: Head, x: np.ndarray, labels: list[str]) -> float:
    """The temperature minimising negative log-likelihood on held-out examples (grid search)."""
    index = {c: i for i, c in enumerate(head.classes)}
    target = np.array([index[label] for label in labels])
    logits = x @ head.weights + head.bias
    best, best_nll = 1.0, float("inf")
    for temperature in np.exp(np.linspace(np.log(0.25), np.log(10.0), 200)):
        p = softmax(logits / temperature)
        nll = -float(np.mean(np.log(p[np.arange(len(target)), target] + 1e-12)))
        if nll < best_nll:
            best, best_nll = float(temperature), nll
    return best


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def save(path: Path, heads: dict[str, Head], meta: dict[str, str]) -> None:
    """Write heads and metadata (embedder id, version) to one .npz."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, head in heads.items():
        arrays.update(head.arrays(prefix))
    arrays.update({f"meta_{k}": np.array(v) for k, v in meta.items()})
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
