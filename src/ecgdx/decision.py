"""How a diagnosis is decided from the model's logits, for a prior the model was not trained on.

Torch-free (numpy only): training writes a ``DecisionRule`` into the ONNX metadata and inference
applies it. Three quantities, for logits z (N, C):

- probabilities at the **data prior** (the class mix of the development pages, 60 % Normal):
  ``p = softmax(z / T + shift)``. ``T`` is a temperature and ``shift = log(data prior) -
  log(sampler prior)`` undoes the training sampler's re-weighting (zero when the model was trained
  on the data's own mix). ``T`` is fitted on out-of-fold predictions of a cross-validation, so these
  are calibrated on pages the model did not see.
- probabilities at a **balanced prior** (every class equally likely before the page is read):
  ``q = softmax(z / T - log(sampler prior))``.
- the **decision**: ``argmax(log q + class_log_weights)``. Zero weights decide at the balanced prior.
  Fitted weights move the per-class thresholds to maximise out-of-fold macro-F1 with a floor on MI
  sensitivity (``fit_class_log_weights``).

Why a balanced prior: the pages a clinic sends for reading are not 60 % normal, and a rule tuned to
that mix trades missed infarcts for fewer false alarms. Deciding at a balanced prior makes no
assumption about the mix; fitted weights are used only when cross-validation shows they help.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecgdx.errors import ModelError
from ecgdx.labels import CLASS_KEYS, NUM_CLASSES

__all__ = ["DecisionRule", "fit_class_log_weights", "log_softmax_rows", "macro_f1_and_recalls"]

RULE_NAMES = ("argmax", "balanced_prior", "fitted_thresholds")


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


@dataclass
class DecisionRule:
    """Calibration and decision for one model (see the module docstring for the formulas).

    name: "argmax" (old models: argmax of softmax(z / T)), "balanced_prior" or "fitted_thresholds".
    temperature: T > 0. data_prior, sampler_prior: class frequencies (sum 1, class order CLASS_KEYS).
    class_log_weights: added to log q before the argmax (zeros for "balanced_prior").
    reason: one plain sentence saying why this rule, for the model card and the web page.
    """

    name: str = "argmax"
    temperature: float = 1.0
    data_prior: list[float] = field(default_factory=lambda: [1.0 / NUM_CLASSES] * NUM_CLASSES)
    sampler_prior: list[float] = field(default_factory=lambda: [1.0 / NUM_CLASSES] * NUM_CLASSES)
    class_log_weights: list[float] = field(default_factory=lambda: [0.0] * NUM_CLASSES)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.name not in RULE_NAMES:
            raise ModelError(f"unknown decision rule {self.name!r}; known: {', '.join(RULE_NAMES)}")
        if not self.temperature > 0:
            raise ModelError(f"decision rule temperature must be > 0, got {self.temperature}")
        for label, values in (("data_prior", self.data_prior), ("sampler_prior", self.sampler_prior),
                              ("class_log_weights", self.class_log_weights)):
            if len(values) != NUM_CLASSES or not np.all(np.isfinite(values)):
                raise ModelError(f"decision rule {label} must hold {NUM_CLASSES} finite numbers, got {values}")
        for label, values in (("data_prior", self.data_prior), ("sampler_prior", self.sampler_prior)):
            if min(values) <= 0 or abs(sum(values) - 1.0) > 1e-3:
                raise ModelError(f"decision rule {label} must be positive and sum to 1, got {values}")

    # ------------------------------------------------------------------ the three quantities

    def _scaled(self, logits: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(np.asarray(logits, np.float64))
        if z.shape[1] != NUM_CLASSES:
            raise ModelError(f"expected logits with {NUM_CLASSES} columns, got shape {z.shape}")
        return z / self.temperature

    def data_prior_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) calibrated probabilities for pages drawn with the development set's class mix."""
        if self.name == "argmax":
            return np.exp(log_softmax_rows(self._scaled(logits)))
        shift = np.log(self.data_prior) - np.log(self.sampler_prior)
        return np.exp(log_softmax_rows(self._scaled(logits) + shift))

    def balanced_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) probabilities if every class were equally likely before reading the page."""
        return np.exp(log_softmax_rows(self._scaled(logits) - np.log(self.sampler_prior)))

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """(N,) class indices."""
        if self.name == "argmax":
            return np.argmax(self._scaled(logits), axis=1)
        scores = log_softmax_rows(self._scaled(logits) - np.log(self.sampler_prior))
        return np.argmax(scores + np.asarray(self.class_log_weights), axis=1)

    def decision_consistent_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) rows whose argmax is ``decide`` (for metric code that scores argmax): the decision's
        one-hot blended half and half with the balanced probabilities, so rankings (AUC) still
        follow the model's scores."""
        mixed = 0.5 * np.eye(NUM_CLASSES)[self.decide(logits)] + 0.5 * self.balanced_probabilities(logits)
        return mixed / mixed.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRule:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"decision rule has unknown field(s) {', '.join(unknown)}")
        return cls(**{k: (list(map(float, v)) if isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> DecisionRule:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"the model's decision rule is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelError("the model's decision rule must be a JSON object")
        return cls.from_dict(data)

    def describe(self) -> str:
        if self.name == "argmax":
            return "most probable class at the training data's class mix"
        if self.name == "balanced_prior":
            return "most probable class with all four classes equally likely beforehand (balanced prior)"
        weights = ", ".join(f"{k} {w:+.2f}" for k, w in zip(CLASS_KEYS, self.class_log_weights, strict=True))
        return f"balanced prior with per-class thresholds fitted on out-of-fold predictions (log-weights {weights})"


def macro_f1_and_recalls(y: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
    """Macro-F1 over classes present in y or pred, and per-class recall (NaN for absent classes)."""
    y = np.asarray(y)
    pred = np.asarray(pred)
    f1s, recalls = [], np.full(NUM_CLASSES, np.nan)
    for k in range(NUM_CLASSES):
        tp = np.sum((pred == k) & (y == k))
        fp = np.sum((pred == k) & (y != k))
        fn = np.sum((pred != k) & (y == k))
        if tp + fn > 0:
            recalls[k] = tp / (tp + fn)
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0, recalls


def fit_class_log_weights(balanced_log_probs: np.ndarray, y: np.ndarray, *, mi_floor: float = 0.85,
                          grid: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """Per-class log-weights that maximise macro-F1 of argmax(log q + w) with MI sensitivity >= mi_floor.

    Coordinate ascent over a grid, Normal's weight fixed at 0 (only differences matter). Among
    ties the smallest total |w| wins, so with no gain the answer is the balanced prior (all zeros).
    When no weights reach the floor, the one with the highest MI sensitivity is kept.
    """
    s = np.asarray(balanced_log_probs, np.float64)
    y = np.asarray(y)
    grid = np.linspace(-2.0, 2.0, 41) if grid is None else grid
    mi = CLASS_KEYS.index("mi")

    def score(w: np.ndarray) -> tuple[float, float, float]:
        f1, recalls = macro_f1_and_recalls(y, np.argmax(s + w, axis=1))
        mi_recall = 0.0 if np.isnan(recalls[mi]) else recalls[mi]
        meets = mi_recall >= mi_floor - 1e-12
        # Order: meet the floor, then macro-F1 (or MI recall below the floor), then small weights.
        return (1.0 if meets else 0.0, f1 if meets else mi_recall, -float(np.abs(w).sum()))

    w = np.zeros(NUM_CLASSES)
    best = score(w)
    for _ in range(rounds):
        changed = False
        for k in range(1, NUM_CLASSES):
            for value in grid:
                trial = w.copy()
                trial[k] = value
                result = score(trial)
                if result > best:
                    best, w, changed = result, trial, True
        if not changed:
            break
    return w
