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
- **measured evidence** (optional): when the digitised leads of the page were checked against the
  ST-elevation (STEMI) criteria (``ecgdx.signals.findings``), Bayes' rule adds ``log P(finding |
  class)`` to every log-probability above: ``q' = softmax(log q + e)``, ``p' = softmax(log p + e)``,
  with ``e_c = log s_c`` when the criteria are met and ``log(1 - s_c)`` when they are not, where
  ``s_c = P(criteria met | class)`` was counted on the training pages (``fit_st_elevation_rates``).
  No weight is fitted: the image model's probability and the finding's likelihood are combined as
  if independent given the class.

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
from ecgdx.labels import CLASS_KEYS, NUM_CLASSES, display_name

__all__ = ["DecisionRule", "fit_class_log_weights", "fit_st_elevation_rates", "log_softmax_rows",
           "macro_f1_and_recalls"]

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
    st_elevation_rates: P(the digitised leads meet the ST-elevation criteria | class), per class, or
        None: the rule then ignores measurements (``evidence`` below is all zeros).
    """

    name: str = "argmax"
    temperature: float = 1.0
    data_prior: list[float] = field(default_factory=lambda: [1.0 / NUM_CLASSES] * NUM_CLASSES)
    sampler_prior: list[float] = field(default_factory=lambda: [1.0 / NUM_CLASSES] * NUM_CLASSES)
    class_log_weights: list[float] = field(default_factory=lambda: [0.0] * NUM_CLASSES)
    reason: str = ""
    st_elevation_rates: list[float] | None = None

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
        rates = self.st_elevation_rates
        if rates is not None and (len(rates) != NUM_CLASSES or not all(0.0 < r < 1.0 for r in rates)):
            raise ModelError(f"decision rule st_elevation_rates must hold {NUM_CLASSES} rates strictly "
                             f"between 0 and 1, got {rates}")

    @property
    def uses_measurements(self) -> bool:
        """True when the rule can take the ST-elevation finding of the digitised leads into account."""
        return self.st_elevation_rates is not None and self.name != "argmax"

    def evidence(self, st_elevation: bool | None) -> np.ndarray:
        """(C,) log P(finding | class) to add to the log-probabilities; zeros when the criteria were
        not checked (None) or the rule has no rates."""
        if st_elevation is None or not self.uses_measurements:
            return np.zeros(NUM_CLASSES)
        rates = np.asarray(self.st_elevation_rates, np.float64)
        return np.log(rates if st_elevation else 1.0 - rates)

    # ------------------------------------------------------------------ the three quantities

    def _scaled(self, logits: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(np.asarray(logits, np.float64))
        if z.shape[1] != NUM_CLASSES:
            raise ModelError(f"expected logits with {NUM_CLASSES} columns, got shape {z.shape}")
        return z / self.temperature

    # ``st_elevation``: the ST-elevation finding of each page's digitised leads (True/False), one value
    # for all rows or an (N,) sequence with None where it was not checked; None: the image alone.

    def _evidence(self, st_elevation: Any, rows: int) -> np.ndarray:
        if st_elevation is None or isinstance(st_elevation, bool | np.bool_):
            return np.broadcast_to(self.evidence(None if st_elevation is None else bool(st_elevation)),
                                   (rows, NUM_CLASSES))
        values = list(st_elevation)
        if len(values) != rows:
            raise ValueError(f"st_elevation has {len(values)} values for {rows} rows of logits")
        return np.stack([self.evidence(None if v is None else bool(v)) for v in values]) if values else \
            np.zeros((0, NUM_CLASSES))

    def data_prior_probabilities(self, logits: np.ndarray, st_elevation: Any = None) -> np.ndarray:
        """(N, C) calibrated probabilities for pages drawn with the development set's class mix."""
        if self.name == "argmax":
            return np.exp(log_softmax_rows(self._scaled(logits)))
        z = self._scaled(logits)
        shift = np.log(self.data_prior) - np.log(self.sampler_prior)
        return np.exp(log_softmax_rows(z + shift + self._evidence(st_elevation, len(z))))

    def balanced_probabilities(self, logits: np.ndarray, st_elevation: Any = None) -> np.ndarray:
        """(N, C) probabilities if every class were equally likely before reading the page."""
        z = self._scaled(logits)
        return np.exp(log_softmax_rows(z - np.log(self.sampler_prior) + self._evidence(st_elevation, len(z))))

    def decide(self, logits: np.ndarray, st_elevation: Any = None) -> np.ndarray:
        """(N,) class indices."""
        if self.name == "argmax":
            return np.argmax(self._scaled(logits), axis=1)
        z = self._scaled(logits)
        scores = log_softmax_rows(z - np.log(self.sampler_prior) + self._evidence(st_elevation, len(z)))
        return np.argmax(scores + np.asarray(self.class_log_weights), axis=1)

    def decision_consistent_probabilities(self, logits: np.ndarray, st_elevation: Any = None) -> np.ndarray:
        """(N, C) rows whose argmax is ``decide`` (for metric code that scores argmax): the decision's
        one-hot blended half and half with the balanced probabilities, so rankings (AUC) still
        follow the model's scores."""
        mixed = (0.5 * np.eye(NUM_CLASSES)[self.decide(logits, st_elevation)]
                 + 0.5 * self.balanced_probabilities(logits, st_elevation))
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

    def with_st_elevation_rates(self, rates: Any) -> DecisionRule:
        """A copy that also weighs the ST-elevation finding (rates from ``fit_st_elevation_rates``)."""
        from dataclasses import replace

        return replace(self, st_elevation_rates=[float(r) for r in rates])

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

    def describe_measurements(self) -> str:
        """One sentence on how the ST-elevation finding enters the decision ('' when it does not)."""
        if not self.uses_measurements:
            return ""
        rates = dict(zip(CLASS_KEYS, self.st_elevation_rates, strict=True))
        others = ", ".join(f"{display_name(k)} {100 * r:.0f} %" for k, r in rates.items() if k != "mi")
        return (f"The ST-elevation (STEMI) criteria, checked on the digitised leads, were met on "
                f"{100 * rates['mi']:.0f} % of the development pages with a myocardial infarction and on {others} "
                "of the others: Bayes' rule weighs the finding, met or not, into the probabilities.")


def fit_st_elevation_rates(st_elevation: np.ndarray, labels: np.ndarray) -> list[float]:
    """P(ST-elevation criteria met | class) counted on training pages, with one pseudo-page of each
    outcome per class (Laplace), so no rate is 0 or 1. Pages whose leads could not be checked
    (NaN) are left out."""
    values = np.asarray(st_elevation, np.float64)
    labels = np.asarray(labels)
    checked = ~np.isnan(values)
    rates = []
    for k in range(NUM_CLASSES):
        mask = checked & (labels == k)
        rates.append(float((values[mask].sum() + 1.0) / (mask.sum() + 2.0)))
    return rates


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
