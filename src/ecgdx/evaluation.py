"""Evaluation of 4-class ECG predictions: metrics, bootstrap CIs, calibration, reports, plots.

Everything here is a pure function over numpy arrays (no torch, no scikit-learn), so the same
code scores a training run, an ONNX export and a baseline.

Conventions
-----------
* ``y_true``: int array (N,) of class indices in ``0..C-1`` (order of ``ecgdx.labels.CLASS_KEYS``).
* ``probs``: float array (N, C), rows sum to 1. ``logits``: float array (N, C), unnormalised.
* ``groups``: optional string array (N,), e.g. the print template of each page.
* Predicted class = ``argmax(probs)`` (first index on ties).

Definitions chosen for undefined cases (documented once, used everywhere):
* precision is ``None`` when a class is never predicted; recall/sensitivity is ``None`` when the
  class has no true samples; specificity is ``None`` when every sample is of that class.
* F1 = 2TP / (2TP + FP + FN). It is ``None`` only when the class has neither true nor predicted
  samples (0/0); such classes are excluded from macro-F1. A class with true samples but no
  predictions (or predictions but no true samples) has F1 = 0 and counts in the macro average.
* balanced accuracy = mean recall over classes that have true samples.
* ROC-AUC is one-vs-rest, computed from average ranks (Mann-Whitney U, ties count 1/2); ``None``
  when the class has no positives or no negatives. Macro AUC averages the defined ones.
* ECE: top-label, 15 equal-width confidence bins ``(lo, hi]`` over [0, 1],
  ECE = sum_b n_b/N * |accuracy_b - mean confidence_b|.
* Brier: multi-class, mean over samples of sum_k (p_k - onehot_k)^2, range [0, 2].
* NLL: mean of -log p_true (probabilities clipped at 1e-15 so a confident miss is finite).

Every dict returned is JSON-serialisable: python ints/floats/None only, never NaN or inf.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES, TEMPLATES

__all__ = [
    "N_BINS",
    "bootstrap_ci",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_predictions",
    "expected_calibration_error",
    "fit_temperature",
    "log_softmax",
    "majority_baseline",
    "plot_confusion_matrix",
    "plot_reliability_diagram",
    "plot_roc_curves",
    "plot_training_curves",
    "reliability_bins",
    "roc_auc",
    "roc_curve",
    "softmax",
    "write_report",
]

N_BINS = 15
"""Number of equal-width confidence bins for ECE and reliability diagrams."""

MIN_GROUP_SIZE_FOR_CI = 10
"""Groups smaller than this get point metrics only: a bootstrap of 9 pages is noise."""

_PROB_EPS = 1e-15
_TEMPERATURE_BOUNDS = (0.05, 20.0)
_BOOT_CHUNK = 256  # resamples per vectorised block: bounds memory at ~chunk * N per array


# ----------------------------------------------------------------------------------------------
# Input validation and small helpers
# ----------------------------------------------------------------------------------------------


def _class_keys(num_classes: int) -> list[str]:
    """Class keys for C classes: the project's keys when C matches, generic names otherwise."""
    if num_classes == len(CLASS_KEYS):
        return list(CLASS_KEYS)
    return [f"class_{i}" for i in range(num_classes)]


def _display(key: str) -> str:
    """Display name of a class key, falling back to the key itself for generic classes."""
    return DISPLAY_NAMES.get(key, key)


def _as_labels(y: Any, num_classes: int, name: str = "y_true") -> np.ndarray:
    """Validate labels: returns int64 array (N,) with values in [0, num_classes)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Accept float arrays holding whole numbers (e.g. read back from JSON), nothing else.
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} values must be in [0, {num_classes}), got [{arr.min()}, {arr.max()}]")
    return arr


def _as_probs(probs: Any, atol: float = 1e-4) -> np.ndarray:
    """Validate probabilities: returns float64 (N, C), finite, >= 0, rows summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N, C) with C >= 2, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf")
    if np.any(p < -atol) or not np.allclose(p.sum(axis=1), 1.0, atol=atol):
        # The usual mistake is passing logits; say so instead of silently scoring garbage.
        raise ValueError("probs rows must be non-negative and sum to 1 (pass softmax(logits), not logits)")
    return np.clip(p, 0.0, 1.0)


def _as_logits(logits: Any) -> np.ndarray:
    """Validate logits: returns finite float64 (N, C) with C >= 2."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with C >= 2, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or inf")
    return z


def _check_same_length(n: int, **arrays: np.ndarray) -> None:
    """Raise ValueError unless every array has length n."""
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows, expected {n}")


def _safe_div(num: float, den: float) -> float | None:
    """num / den, or None when den == 0 (an undefined metric, not a zero one)."""
    return float(num) / float(den) if den else None


def _mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the non-None values, None when there are none."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _json_clean(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to python types and NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# Softmax and temperature scaling
# ----------------------------------------------------------------------------------------------


def log_softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable log-softmax of logits / temperature.

    logits: (N, C) -> (N, C) log-probabilities.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    # Subtracting the row max keeps exp() from overflowing; it cancels in the normalisation.
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of logits / temperature: (N, C) -> (N, C), rows sum to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _nll_at_temperature(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean NLL of labels y (N,) under softmax(logits (N, C) / temperature)."""
    logp = log_softmax(logits, temperature)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(
    logits_val: Any,
    y_val: Any,
    *,
    bounds: tuple[float, float] = _TEMPERATURE_BOUNDS,
    tol: float = 1e-5,
    offset: Any = None,
) -> float:
    """Temperature T minimising the validation NLL of softmax(logits_val / T).

    logits_val: (N, C); y_val: (N,). Returns T in ``bounds`` (default [0.05, 20]).

    NLL is convex in 1/T, hence unimodal in log T, so a coarse log-spaced grid to bracket the
    minimum followed by golden-section search on log T is robust (no derivatives, no divergence,
    no dependence on a starting point). Fit on validation data only; fitting on the test set
    would leak. Returns 1.0 when the NLL is flat (e.g. all-equal logits).

    offset: optional (C,) log-prior shift added after scaling, softmax(logits / T + offset), for a
    model trained with a re-weighting sampler and calibrated at the data's class mix
    (``ecgdx.decision``).
    """
    z = _as_logits(logits_val)
    y = _as_labels(y_val, z.shape[1], "y_val")
    _check_same_length(len(z), y_val=y)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one sample")
    lo, hi = (math.log(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")

    shift = np.zeros(z.shape[1]) if offset is None else np.asarray(offset, np.float64).reshape(1, -1)

    def f(u: float) -> float:
        return _nll_at_temperature(z + shift * math.exp(u), y, math.exp(u))

    grid = np.linspace(lo, hi, 41)
    values = np.array([f(u) for u in grid])
    if values.max() - values.min() < 1e-12:
        return 1.0
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]

    # Golden-section search on [a, b], which brackets the minimum of a unimodal function.
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    u_best = (a + b) / 2.0
    # The bracket's ends can beat its middle when the optimum sits on a bound.
    candidates = [(f(u_best), u_best), (values[i], grid[i])]
    return float(math.exp(min(candidates)[1]))


# ----------------------------------------------------------------------------------------------
# Core metrics
# ----------------------------------------------------------------------------------------------


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int = len(CLASS_KEYS)) -> np.ndarray:
    """Confusion matrix (C, C) int64: rows = true class, columns = predicted class."""
    t = _as_labels(y_true, num_classes, "y_true")
    p = _as_labels(y_pred, num_classes, "y_pred")
    _check_same_length(len(t), y_pred=p)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x (N,), ties sharing the average of their ranks (N,) float64."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(y_true_binary: Any, scores: Any) -> float | None:
    """ROC-AUC via Mann-Whitney U with average ranks for ties; None if a class is absent.

    y_true_binary: (N,) bool/0-1; scores: (N,) higher = more positive.
    AUC = P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg).
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    _check_same_length(len(y), scores=s)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true_binary: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score threshold.

    y_true_binary: (N,); scores: (N,). Returns (fpr, tpr, thresholds), each (K+1,) where K is the
    number of distinct scores; point i predicts positive when score >= thresholds[i]. The first
    point is (0, 0) with threshold +inf. Tied scores form one diagonal step, so the trapezoidal
    area equals ``roc_auc``. Raises ValueError when positives or negatives are missing.
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    _check_same_length(len(y), scores=s)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve needs at least one positive and one negative sample")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: the curve only moves between distinct thresholds.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin (N,) int in [0, n_bins) of each confidence for equal-width bins (lo, hi] over [0, 1]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def reliability_bins(y_true: Any, probs: Any, n_bins: int = N_BINS) -> dict[str, Any]:
    """Top-label reliability table over equal-width confidence bins.

    y_true: (N,); probs: (N, C). Returns lists of length n_bins: "lower", "upper", "count",
    "confidence" (mean max-prob), "accuracy" (fraction correct); the last two are None for
    empty bins. Also "ece" and "n_bins".
    """
    p = _as_probs(probs)
    y = _as_labels(y_true, p.shape[1])
    _check_same_length(len(p), y_true=y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    b = _bin_index(conf, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(b, weights=correct, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / count, np.nan)
        acc = np.where(count > 0, sum_correct / count, np.nan)
    # n_b/N * |acc_b - conf_b| == |sum_correct_b - sum_conf_b| / N, which also skips empty bins.
    ece = float(np.abs(sum_correct - sum_conf).sum() / len(y)) if len(y) else None
    return _json_clean(
        {
            "n_bins": n_bins,
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "confidence": mean_conf,
            "accuracy": acc,
            "ece": ece,
        }
    )


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = N_BINS) -> float:
    """Top-label ECE with n_bins equal-width bins. y_true: (N,); probs: (N, C) -> float."""
    return reliability_bins(y_true, probs, n_bins)["ece"]


def _per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """TP, FP, FN, TN arrays (..., C) from confusion matrices (..., C, C)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    fp = cm.sum(axis=-2) - tp  # column sums minus diagonal: predicted k, truly not k
    fn = cm.sum(axis=-1) - tp  # row sums minus diagonal: truly k, predicted not k
    n = cm.sum(axis=(-2, -1))[..., None]
    tn = n - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def classification_metrics(y_true: Any, probs: Any, *, n_bins: int = N_BINS) -> dict[str, Any]:
    """All point metrics for one set of predictions.

    y_true: (N,) int; probs: (N, C) probabilities (not logits). Returns a JSON-safe dict::

        {"n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "brier", "nll",
         "per_class": {key: {"support", "precision", "recall", "sensitivity", "specificity",
                             "f1", "auc"}},
         "confusion_matrix": [[int]] (rows true, cols predicted), "class_keys": [...]}

    Undefined values are None (see module docstring for the exact conventions).
    """
    p = _as_probs(probs)
    num_classes = p.shape[1]
    y = _as_labels(y_true, num_classes)
    _check_same_length(len(p), y_true=y)
    if len(y) == 0:
        raise ValueError("classification_metrics needs at least one sample")
    keys = _class_keys(num_classes)
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, num_classes)
    c = _per_class_from_confusion(cm)

    per_class: dict[str, dict[str, Any]] = {}
    for k, key in enumerate(keys):
        tp, fp, fn, tn = (float(c[name][k]) for name in ("tp", "fp", "fn", "tn"))
        recall = _safe_div(tp, tp + fn)
        per_class[key] = {
            "support": int(tp + fn),
            "precision": _safe_div(tp, tp + fp),
            "recall": recall,
            "sensitivity": recall,
            "specificity": _safe_div(tn, tn + fp),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
            "auc": roc_auc(y == k, p[:, k]),
        }

    onehot = np.eye(num_classes)[y]
    p_true = np.clip(p[np.arange(len(y)), y], _PROB_EPS, 1.0)
    metrics = {
        "n": len(y),
        "accuracy": float(np.trace(cm) / len(y)),
        "balanced_accuracy": _mean_defined([m["recall"] for m in per_class.values()]),
        "macro_f1": _mean_defined([m["f1"] for m in per_class.values()]),
        "macro_auc": _mean_defined([m["auc"] for m in per_class.values()]),
        "ece": expected_calibration_error(y, p, n_bins),
        "brier": float(((p - onehot) ** 2).sum(axis=1).mean()),
        "nll": float(-np.log(p_true).mean()),
        "per_class": per_class,
        "confusion_matrix": cm,
        "class_keys": keys,
    }
    return _json_clean(metrics)


def majority_baseline(y_train: Any, y_test: Any, num_classes: int = len(CLASS_KEYS)) -> dict[str, Any]:
    """Metrics of a model that ignores the image and predicts the training class prior.

    y_train: (M,); y_test: (N,). Probabilities are the add-one (Laplace) smoothed training
    class frequencies, so argmax is the majority training class (lowest index on ties) and
    NLL/Brier/ECE stay finite and meaningful. Returns classification_metrics plus
    "majority_class" (key) and "prior" (list of C floats).
    """
    tr = _as_labels(y_train, num_classes, "y_train")
    te = _as_labels(y_test, num_classes, "y_test")
    prior = (np.bincount(tr, minlength=num_classes) + 1.0) / (len(tr) + num_classes)
    probs = np.tile(prior, (len(te), 1))
    metrics = classification_metrics(te, probs)
    metrics["majority_class"] = _class_keys(num_classes)[int(np.argmax(prior))]
    metrics["prior"] = _json_clean(prior)
    return metrics


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


def _batched_bincount(codes: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row bincount: codes (B, N) ints in [0, size) -> counts (B, size) float64."""
    b = codes.shape[0]
    flat = (codes + size * np.arange(b)[:, None]).ravel()
    w = None if weights is None else weights.ravel()
    return np.bincount(flat, weights=w, minlength=b * size).reshape(b, size).astype(np.float64)


def _default_boot_metrics(y: np.ndarray, p: np.ndarray, n_bins: int) -> Callable[[np.ndarray], dict]:
    """Vectorised default metrics: returns f(idx (B, N)) -> {name: (B,) float, NaN = undefined}.

    Everything is precomputed per sample once, so one resample costs a few bincounts.
    """
    n, num_classes = p.shape
    keys = _class_keys(num_classes)
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    correct = (pred == y).astype(np.float64)
    bins = _bin_index(conf, n_bins)
    cm_code = y * num_classes + pred
    onehot = np.eye(num_classes)[y]
    brier = ((p - onehot) ** 2).sum(axis=1)
    nll = -np.log(np.clip(p[np.arange(n), y], _PROB_EPS, 1.0))
    # For AUC: each class's scores as dense tie-levels, so a resample's Mann-Whitney U needs only
    # weighted counts of positives/negatives per level (no re-sorting per resample).
    levels = []
    for k in range(num_classes):
        uniq, inv = np.unique(p[:, k], return_inverse=True)
        levels.append((inv.ravel(), len(uniq)))

    def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        nb = idx.shape[1]
        out["accuracy"] = correct[idx].mean(axis=1)
        cm = _batched_bincount(cm_code[idx], num_classes * num_classes).reshape(-1, num_classes, num_classes)
        c = _per_class_from_confusion(cm)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])
            sens = c["tp"] / (c["tp"] + c["fn"])
            spec = c["tn"] / (c["tn"] + c["fp"])
        out["macro_f1"] = _nanmean_rows(f1)
        out["balanced_accuracy"] = _nanmean_rows(sens)
        for k, key in enumerate(keys):
            out[f"sensitivity_{key}"] = sens[:, k]
            out[f"specificity_{key}"] = spec[:, k]
            out[f"f1_{key}"] = f1[:, k]
        aucs = np.stack([_boot_auc(y[idx] == k, *levels[k], idx) for k in range(num_classes)], axis=1)
        for k, key in enumerate(keys):
            out[f"auc_{key}"] = aucs[:, k]
        out["macro_auc"] = _nanmean_rows(aucs)
        b_idx = bins[idx]
        sum_conf = _batched_bincount(b_idx, n_bins, conf[idx])
        sum_correct = _batched_bincount(b_idx, n_bins, correct[idx])
        out["ece"] = np.abs(sum_correct - sum_conf).sum(axis=1) / nb
        out["brier"] = brier[idx].mean(axis=1)
        out["nll"] = nll[idx].mean(axis=1)
        return out

    return compute


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Row mean ignoring NaN: (B, C) -> (B,), NaN where a row is all NaN (no warning)."""
    valid = ~np.isnan(x)
    cnt = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(valid, x, 0.0).sum(axis=1) / cnt, np.nan)


def _boot_auc(pos: np.ndarray, inv: np.ndarray, n_levels: int, idx: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per resample: pos (B, N) bool, inv (N,) tie-level per sample -> (B,).

    U = sum over levels of  pos_at_level * (neg_below_level + 0.5 * neg_at_level).
    """
    lev = inv[idx]
    w_pos = _batched_bincount(lev, n_levels, pos.astype(np.float64))
    w_neg = _batched_bincount(lev, n_levels, (~pos).astype(np.float64))
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    u = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
    denom = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, u / denom, np.nan)


def _point_defaults(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Flatten classification_metrics output to the bootstrap's metric names."""
    flat: dict[str, float | None] = {
        name: metrics[name]
        for name in ("accuracy", "macro_f1", "balanced_accuracy", "macro_auc", "ece", "brier", "nll")
    }
    for key, m in metrics["per_class"].items():
        flat[f"sensitivity_{key}"] = m["sensitivity"]
        flat[f"specificity_{key}"] = m["specificity"]
        flat[f"f1_{key}"] = m["f1"]
        flat[f"auc_{key}"] = m["auc"]
    return flat


def bootstrap_ci(
    y_true: Any,
    probs: Any,
    metric_fns: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap confidence intervals (resampling samples with replacement).

    y_true: (N,); probs: (N, C). Returns {name: {"value", "low", "high"}}: "value" is the
    metric on the full data, low/high the alpha/2 and 1-alpha/2 percentiles over resamples.

    metric_fns=None uses fast vectorised defaults: accuracy, macro_f1, balanced_accuracy,
    macro_auc, ece, brier, nll and per class sensitivity_<key>, specificity_<key>, f1_<key>,
    auc_<key> (e.g. "sensitivity_mi"). Custom metric_fns map name -> f(y_true_b, probs_b) and are
    evaluated one resample at a time. A resample where a metric is undefined (e.g. no MI cases
    drawn) is dropped for that metric only; if none is defined, low/high are None.
    Deterministic for a given seed (numpy PCG64).

    Note: ECE is biased upward on small resamples, so its interval can sit above the point value.
    """
    p = _as_probs(probs)
    y = _as_labels(y_true, p.shape[1])
    _check_same_length(len(p), y_true=y)
    n = len(y)
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one sample")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)

    if metric_fns is None:
        point = _point_defaults(classification_metrics(y, p))
        compute = _default_boot_metrics(y, p, N_BINS)
    else:
        point = {name: _to_float(fn(y, p)) for name, fn in metric_fns.items()}

        def compute(idx: np.ndarray) -> dict[str, np.ndarray]:
            return {
                name: np.array([_to_float(fn(y[row], p[row])) for row in idx], dtype=np.float64)
                for name, fn in metric_fns.items()
            }

    samples: dict[str, list[np.ndarray]] = {name: [] for name in point}
    done = 0
    while done < n_boot:
        b = min(_BOOT_CHUNK, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        for name, vals in compute(idx).items():
            samples[name].append(vals)
        done += b

    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    result: dict[str, dict[str, float | None]] = {}
    for name, value in point.items():
        vals = np.concatenate(samples[name]) if samples[name] else np.empty(0)
        vals = vals[np.isfinite(vals)]
        low, high = (float(v) for v in np.percentile(vals, q)) if len(vals) else (None, None)
        result[name] = {"value": value, "low": low, "high": high}
    return _json_clean(result)


def _to_float(v: Any) -> float:
    """Metric value to float, None -> NaN (so undefined resamples can be dropped)."""
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------------------------------
# Full evaluation report
# ----------------------------------------------------------------------------------------------


def _group_order(groups: np.ndarray) -> list[str]:
    """Distinct group values: known templates first in their fixed order, then the rest sorted."""
    present = set(groups.tolist())
    return [t for t in TEMPLATES if t in present] + sorted(present - set(TEMPLATES))


def _metrics_block(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """{"n", "metrics", "ci"} for one subset; ci is None below MIN_GROUP_SIZE_FOR_CI or n_boot=0."""
    block: dict[str, Any] = {"n": len(y), "metrics": classification_metrics(y, p), "ci": None}
    if n_boot > 0 and len(y) >= MIN_GROUP_SIZE_FOR_CI:
        block["ci"] = bootstrap_ci(y, p, n_boot=n_boot, seed=seed)
    return block


def _roc_curves(y: np.ndarray, p: np.ndarray) -> dict[str, dict[str, Any] | None]:
    """Per-class one-vs-rest ROC points {key: {"fpr", "tpr", "auc"}} (None if undefined)."""
    out: dict[str, dict[str, Any] | None] = {}
    for k, key in enumerate(_class_keys(p.shape[1])):
        pos = y == k
        if pos.all() or not pos.any():
            out[key] = None
            continue
        fpr, tpr, _ = roc_curve(pos, p[:, k])
        out[key] = {"fpr": fpr, "tpr": tpr, "auc": roc_auc(pos, p[:, k])}
    return out


def evaluate_predictions(
    y_true: Any,
    logits: Any,
    *,
    groups: Any = None,
    temperature: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Full evaluation report of model logits on a labelled set.

    y_true: (N,); logits: (N, C); groups: optional (N,) strings (e.g. print template).
    temperature: a temperature fitted on *validation* data (``fit_temperature``); when given,
    all metrics use softmax(logits / T) and "calibration" reports ECE before and after. Argmax,
    hence accuracy/F1/AUC-ranking, does not change with T; ECE/Brier/NLL do.

    Returns a JSON-safe dict::

        {"n": N, "class_keys": [...], "display_names": {key: name},
         "overall": {"n", "metrics": classification_metrics, "ci": bootstrap_ci | None},
         "per_group": {group: {"n", "metrics", "ci" (None when n < 10)}},   # {} without groups
         "calibration": {"temperature": T | None, "ece_before", "ece_after" (None without T),
                         "reliability_before": reliability_bins,
                         "reliability_after": reliability_bins | None},
         "curves": {"roc": {key: {"fpr", "tpr", "auc"} | None}},
         "bootstrap": {"n_boot", "seed", "alpha", "method", "min_group_size"}}

    Add ``report["baseline"] = majority_baseline(y_train, y_test)`` to have write_report show it.
    """
    z = _as_logits(logits)
    num_classes = z.shape[1]
    y = _as_labels(y_true, num_classes)
    _check_same_length(len(z), y_true=y)
    if len(y) == 0:
        raise ValueError("evaluate_predictions needs at least one sample")

    p_raw = softmax(z)
    p = softmax(z, temperature) if temperature is not None else p_raw
    rel_before = reliability_bins(y, p_raw)
    rel_after = reliability_bins(y, p) if temperature is not None else None

    per_group: dict[str, Any] = {}
    if groups is not None:
        g = np.asarray(groups).astype(str)
        _check_same_length(len(y), groups=g)
        for name in _group_order(g):
            mask = g == name
            per_group[name] = _metrics_block(y[mask], p[mask], n_boot, seed)

    keys = _class_keys(num_classes)
    report = {
        "n": len(y),
        "class_keys": keys,
        "display_names": {k: _display(k) for k in keys},
        "overall": _metrics_block(y, p, n_boot, seed),
        "per_group": per_group,
        "calibration": {
            "temperature": None if temperature is None else float(temperature),
            "ece_before": rel_before["ece"],
            "ece_after": None if rel_after is None else rel_after["ece"],
            "reliability_before": rel_before,
            "reliability_after": rel_after,
        },
        "curves": {"roc": _roc_curves(y, p)},
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "alpha": 0.05,
            "method": "percentile",
            "min_group_size": MIN_GROUP_SIZE_FOR_CI,
        },
    }
    return _json_clean(report)


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 3) -> str:
    """Number to fixed decimals, 'n/a' for undefined."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_ci(value: float | None, ci: Mapping[str, Any] | None) -> str:
    """'0.812 (0.760–0.860)' when an interval exists, else just the value."""
    if ci is None or ci.get("low") is None or ci.get("high") is None:
        return _fmt(value)
    return f"{_fmt(value)} ({ci['low']:.3f}–{ci['high']:.3f})"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines; the first column is left-aligned, the rest right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


_OVERALL_ROWS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro-F1"),
    ("macro_auc", "Macro ROC-AUC"),
    ("ece", "ECE (15 bins)"),
    ("brier", "Brier score"),
    ("nll", "NLL"),
)


def _render_markdown(report: Mapping[str, Any], title: str, extra_md: str) -> str:
    """Readable report.md text from an evaluate_predictions report."""
    keys = report["class_keys"]
    names = report.get("display_names") or {k: _display(k) for k in keys}
    overall = report["overall"]
    m, ci = overall["metrics"], overall.get("ci") or {}
    boot = report.get("bootstrap", {})
    cal = report.get("calibration", {})
    level = round(100 * (1 - boot.get("alpha", 0.05)))

    out = [f"# {title}", ""]
    intro = f"Test samples: **{report['n']}**."
    if ci:
        intro += (
            f" Intervals: {level}% percentile bootstrap, {boot.get('n_boot')} resamples "
            f"(seed {boot.get('seed')}), shown as value (low–high)."
        )
    out.append(intro)
    out += ["", "## Overall", ""]
    rows = [[label, _fmt_ci(m[name], ci.get(name))] for name, label in _OVERALL_ROWS]
    out += _md_table(["Metric", f"Value ({level}% CI)" if ci else "Value"], rows)

    out += ["", "## Per class (one-vs-rest)", ""]
    rows = []
    for key in keys:
        pc = m["per_class"][key]
        rows.append(
            [
                names.get(key, key),
                str(pc["support"]),
                _fmt_ci(pc["sensitivity"], ci.get(f"sensitivity_{key}")),
                _fmt_ci(pc["specificity"], ci.get(f"specificity_{key}")),
                _fmt(pc["precision"]),
                _fmt_ci(pc["f1"], ci.get(f"f1_{key}")),
                _fmt_ci(pc["auc"], ci.get(f"auc_{key}")),
            ]
        )
    out += _md_table(["Class", "Support", "Sensitivity", "Specificity", "Precision", "F1", "ROC-AUC"], rows)

    per_group = report.get("per_group") or {}
    if per_group:
        mi_key = "mi" if "mi" in keys else None
        header = ["Template", "n", "Accuracy", "Macro-F1"]
        header += ["MI sensitivity"] if mi_key else []
        header += ["ECE"]
        rows = []
        for gname, block in per_group.items():
            gm, gci = block["metrics"], block.get("ci") or {}
            row = [
                f"`{gname}`",
                str(block["n"]),
                _fmt_ci(gm["accuracy"], gci.get("accuracy")),
                _fmt_ci(gm["macro_f1"], gci.get("macro_f1")),
            ]
            if mi_key:
                row.append(_fmt_ci(gm["per_class"][mi_key]["sensitivity"], gci.get(f"sensitivity_{mi_key}")))
            row.append(_fmt_ci(gm["ece"], gci.get("ece")))
            rows.append(row)
        out += ["", "## Per print template", ""]
        out += _md_table(header, rows)
        min_n = boot.get("min_group_size", MIN_GROUP_SIZE_FOR_CI)
        out += ["", f"Groups with fewer than {min_n} samples show point values only (no CI)."]

    out += ["", "## Calibration", ""]
    temp = cal.get("temperature")
    rows = [
        ["Temperature", "not applied" if temp is None else f"{temp:.3f}"],
        ["ECE before scaling", _fmt(cal.get("ece_before"))],
        ["ECE after scaling", _fmt(cal.get("ece_after"))],
    ]
    out += _md_table(["", "Value"], rows)

    cm = np.asarray(m["confusion_matrix"])
    row_tot = cm.sum(axis=1)
    out += ["", "## Confusion matrix", "", "Rows: true class; columns: predicted class; (row %).", ""]
    rows = []
    for i, key in enumerate(keys):
        cells = [
            f"{cm[i, j]} ({100 * cm[i, j] / row_tot[i]:.0f}%)" if row_tot[i] else str(cm[i, j])
            for j in range(len(keys))
        ]
        rows.append([f"**{names.get(key, key)}**", *cells, str(row_tot[i])])
    out += _md_table(["True \\ Predicted", *[names.get(k, k) for k in keys], "Total"], rows)

    baseline = report.get("baseline")
    if baseline:
        out += ["", "## Majority-class baseline", ""]
        maj = baseline.get("majority_class")
        out.append(f"Always predicts **{names.get(maj, maj)}** (training prior as probabilities).")
        out.append("")
        rows = [[label, _fmt(baseline.get(name))] for name, label in _OVERALL_ROWS]
        out += _md_table(["Metric", "Baseline"], rows)

    out += [
        "",
        "## Definitions",
        "",
        "- Sensitivity = recall = TP/(TP+FN); specificity = TN/(TN+FP); one-vs-rest per class.",
        "- Macro-F1 averages F1 over classes with any true or predicted samples; 'n/a' = undefined.",
        "- ROC-AUC: one-vs-rest, Mann-Whitney U with tied scores counted as 1/2.",
        "- ECE: top-label, 15 equal-width confidence bins. Brier: multi-class (0 = perfect, max 2).",
        "- Binned ECE is biased upward on bootstrap resamples, so its interval can lie above the point value.",
        "- Bootstrap resamples where a metric is undefined (e.g. no MI case drawn) are dropped for that metric.",
    ]
    if extra_md:
        out += ["", extra_md.rstrip()]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib imported lazily; Figure + Agg canvas, so no global pyplot state or GUI)
# ----------------------------------------------------------------------------------------------

_CLASS_COLORS = ("#2ca02c", "#d62728", "#1f77b4", "#ff7f0e")


def _new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure bound to the Agg canvas (headless, thread-safe, no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            "plots need matplotlib: install the training extras (pip install 'ecgdx[train]')"
        ) from exc
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out_path: Any) -> Path:
    """Write the figure as PNG at 150 dpi and return its path."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight" is a safety net for long class names the layout engine may clip.
    fig.savefig(path, format="png", dpi=150, bbox_inches="tight", pad_inches=0.15)
    return path


def _color(k: int) -> str:
    return _CLASS_COLORS[k % len(_CLASS_COLORS)]


def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str], out_path: Any, *, title: str = "Confusion matrix"
) -> Path:
    """Heat map of row-normalised percentages with counts. cm: (C, C) rows true, cols predicted."""
    cm = np.asarray(cm, dtype=np.int64)
    row_tot = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(row_tot > 0, 100.0 * cm / row_tot, 0.0)
    c = len(class_names)
    fig = _new_figure((2.0 + 1.5 * c, 1.6 + 1.3 * c))
    ax = fig.add_subplot()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("% of true class (row)", fontsize=10)
    for i in range(c):
        for j in range(c):
            # White text on dark cells keeps every number readable.
            color = "white" if pct[i, j] > 55 else "#1a1a1a"
            ax.text(j, i, f"{cm[i, j]}\n{pct[i, j]:.1f}%", ha="center", va="center", fontsize=10, color=color)
    wrapped = [n.replace(" ", "\n", 1) if len(n) > 12 else n for n in class_names]
    ax.set_xticks(range(c), wrapped, fontsize=9)
    ax.set_yticks(range(c), [f"{n}\n(n={row_tot[i, 0]})" for i, n in enumerate(wrapped)], fontsize=9)
    ax.set_xlabel("Predicted class", fontsize=11)
    ax.set_ylabel("True class", fontsize=11)
    ax.set_title(title, fontsize=12, fontweight="bold")
    return _save(fig, out_path)


def plot_roc_curves(
    roc: Mapping[str, Mapping[str, Any] | None],
    out_path: Any,
    *,
    display_names: Mapping[str, str] | None = None,
    title: str = "ROC curves (one-vs-rest)",
) -> Path:
    """One-vs-rest ROC curves. roc: {key: {"fpr", "tpr", "auc"} | None} as in report["curves"]."""
    names = display_names or {}
    fig = _new_figure((6.4, 6.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="Chance (AUC = 0.500)")
    for k, (key, curve) in enumerate(roc.items()):
        label = names.get(key, _display(key))
        if curve is None:
            ax.plot([], [], color=_color(k), label=f"{label} (AUC n/a: one class only)")
            continue
        ax.plot(
            curve["fpr"],
            curve["tpr"],
            color=_color(k),
            linewidth=2,
            label=f"{label} (AUC = {_fmt(curve['auc'])})",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_xlabel("False positive rate (1 − specificity)", fontsize=11)
    ax.set_ylabel("True positive rate (sensitivity)", fontsize=11)
    ax.set_title(title, fontsize=12, fontweight="bold")
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    return _save(fig, out_path)


def _reliability_panel(ax: Any, ax_hist: Any, bins: Mapping[str, Any], title: str, color: str) -> None:
    """Draw one reliability diagram (accuracy vs confidence bars) and its count histogram."""
    lower = np.asarray(bins["lower"], dtype=float)
    upper = np.asarray(bins["upper"], dtype=float)
    centers, width = (lower + upper) / 2, upper - lower
    acc = np.array([np.nan if a is None else a for a in bins["accuracy"]], dtype=float)
    conf = np.array([np.nan if c is None else c for c in bins["confidence"]], dtype=float)
    count = np.asarray(bins["count"], dtype=float)
    has = count > 0
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="Perfect calibration")
    ax.bar(
        centers[has], acc[has], width=width[has], color=color, edgecolor="white", alpha=0.85, label="Accuracy"
    )
    # The gap between mean confidence and accuracy is what ECE sums (weighted by bin size).
    ax.bar(
        centers[has],
        conf[has] - acc[has],
        bottom=acc[has],
        width=width[has],
        facecolor="none",  # hatch only: stays readable where it overlaps the accuracy bar
        edgecolor="#d62728",
        linewidth=1.0,
        hatch="//",
        label="Gap to confidence",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_ylabel("Accuracy", fontsize=11)
    ax.set_title(f"{title}\nECE = {_fmt(bins.get('ece'))}", fontsize=11, fontweight="bold")
    ax.legend(loc="upper left", fontsize=9)
    ax.tick_params(labelbottom=False)
    ax_hist.bar(centers, count, width=width, color=color, edgecolor="white")
    ax_hist.set_xlim(0, 1)
    ax_hist.set_xlabel("Confidence (max. probability)", fontsize=11)
    ax_hist.set_ylabel("Samples", fontsize=10)
    ax_hist.grid(alpha=0.3)


def plot_reliability_diagram(
    before: Mapping[str, Any],
    out_path: Any,
    *,
    after: Mapping[str, Any] | None = None,
    temperature: float | None = None,
) -> Path:
    """Reliability diagram(s) from reliability_bins dicts: before (and after) temperature scaling."""
    panels = [(before, "Before temperature scaling" if after is not None else "Reliability", "#1f77b4")]
    if after is not None:
        t = "" if temperature is None else f" (T = {temperature:.2f})"
        panels.append((after, f"After temperature scaling{t}", "#2ca02c"))
    fig = _new_figure((5.6 * len(panels), 6.2))
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1))
    for col, (bins, title, color) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax_hist = fig.add_subplot(grid[1, col], sharex=ax)
        _reliability_panel(ax, ax_hist, bins, title, color)
    return _save(fig, out_path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], out_path: Any) -> Path:
    """Training curves per epoch: loss (train/val), validation macro-F1 (and accuracy), LR.

    history: rows like {"epoch", "train_loss", "val_loss", "val_macro_f1", "lr", ...}; missing
    keys or None values are skipped, missing "epoch" falls back to 1-based row index.
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)

    def series(key: str) -> np.ndarray | None:
        vals = [row.get(key) for row in history]
        if all(v is None for v in vals):
            return None
        return np.array([np.nan if v is None else float(v) for v in vals])

    fig = _new_figure((15.0, 4.4))
    axes = fig.subplots(1, 3)
    panels = [
        (axes[0], "Loss", [("train_loss", "Train", "#1f77b4"), ("val_loss", "Validation", "#d62728")]),
        (
            axes[1],
            "Validation score",
            [("val_macro_f1", "Macro-F1", "#2ca02c"), ("val_accuracy", "Accuracy", "#9467bd")],
        ),
        (axes[2], "Learning rate", [("lr", "LR", "#ff7f0e")]),
    ]
    for ax, title, lines in panels:
        drawn = False
        for key, label, color in lines:
            y = series(key)
            if y is None:
                continue
            ax.plot(epochs, y, marker="o", markersize=3, linewidth=1.8, color=color, label=label)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_title(title, fontsize=12, fontweight="bold")
        ax.set_xlabel("Epoch", fontsize=11)
        ax.grid(alpha=0.3)
        if drawn and title != "Learning rate":
            ax.legend(fontsize=9)
    axes[0].set_ylabel("Cross-entropy", fontsize=11)
    axes[1].set_ylabel("Score", fontsize=11)
    axes[2].set_ylabel("Learning rate", fontsize=11)
    f1 = series("val_macro_f1")
    if f1 is not None and np.isfinite(f1).any():
        best = int(np.nanargmax(f1))
        axes[1].axvline(epochs[best], color="0.5", linestyle=":", linewidth=1)
        # Put the label on the inner side of the marker so it never leaves the axes.
        right_half = best >= len(epochs) / 2
        axes[1].annotate(
            f"best {f1[best]:.3f}\n(epoch {epochs[best]:g})",
            (epochs[best], f1[best]),
            textcoords="offset points",
            xytext=(-6 if right_half else 6, -30),
            ha="right" if right_half else "left",
            fontsize=9,
        )
    lr = series("lr")
    if lr is not None and np.nanmin(lr) > 0 and np.nanmax(lr) / np.nanmin(lr) > 20:
        axes[2].set_yscale("log")  # warm-up/decay spans decades; linear would flatten it
    return _save(fig, out_path)


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------


def write_report(
    report: Mapping[str, Any],
    out_dir: Any,
    *,
    title: str,
    extra_md: str = "",
    plots: bool = True,
) -> dict[str, Path]:
    """Write report.json, report.md and (plots=True) the three PNG plots into out_dir.

    report: an ``evaluate_predictions`` dict (optionally with "baseline"). Returns paths keyed
    "json", "markdown", "confusion_matrix", "roc_curves", "reliability_diagram". JSON is written
    with allow_nan=False, so a NaN anywhere is an error, not a silently invalid file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = _json_clean(report)
    paths: dict[str, Path] = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_render_markdown(clean, title, extra_md), encoding="utf-8")
    if not plots:
        return paths

    keys = clean["class_keys"]
    names = clean.get("display_names") or {k: _display(k) for k in keys}
    cal = clean.get("calibration", {})
    paths["confusion_matrix"] = plot_confusion_matrix(
        clean["overall"]["metrics"]["confusion_matrix"],
        [names.get(k, k) for k in keys],
        out / "confusion_matrix.png",
        title=f"Confusion matrix — {title} (n={clean['n']})",
    )
    paths["roc_curves"] = plot_roc_curves(
        clean["curves"]["roc"],
        out / "roc_curves.png",
        display_names=names,
        title=f"ROC curves (one-vs-rest) — {title}",
    )
    paths["reliability_diagram"] = plot_reliability_diagram(
        cal["reliability_before"],
        out / "reliability_diagram.png",
        after=cal.get("reliability_after"),
        temperature=cal.get("temperature"),
    )
    return paths
