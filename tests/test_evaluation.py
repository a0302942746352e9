"""Tests for ecgdx.evaluation: metrics against hand arithmetic, brute force and known truths."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from ecgdx import evaluation as ev
from ecgdx.labels import CLASS_KEYS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def probs_for(pred: list[int], num_classes: int = 4, top: float = 0.7) -> np.ndarray:
    """(N, C) probabilities whose argmax is pred: `top` on the predicted class, rest shared."""
    p = np.full((len(pred), num_classes), (1.0 - top) / (num_classes - 1))
    p[np.arange(len(pred)), pred] = top
    return p


# Hand example used by several tests (10 samples, 4 classes).
Y_TRUE = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
Y_PRED = [0, 0, 1, 1, 1, 0, 2, 3, 3, 3]


def test_confusion_matrix_hand_example():
    # true 0 -> predicted 0,0,1 ; true 1 -> 1,1,0 ; true 2 -> 2,3 ; true 3 -> 3,3
    expected = np.array(
        [
            [2, 1, 0, 0],
            [1, 2, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 0, 2],
        ]
    )
    np.testing.assert_array_equal(ev.confusion_matrix(Y_TRUE, Y_PRED), expected)
    m = ev.classification_metrics(Y_TRUE, probs_for(Y_PRED))
    assert m["confusion_matrix"] == expected.tolist()


def test_per_class_metrics_hand_example():
    m = ev.classification_metrics(Y_TRUE, probs_for(Y_PRED))
    pc = m["per_class"]
    # class 0 (normal): TP=2, FP=1 (col 0 sum 3 - 2), FN=1, TN=10-2-1-1=6
    #   precision 2/3, recall 2/3, specificity 6/7, F1 = 2*2/(2*2+1+1) = 4/6
    # class 1 (mi): TP=2, FP=1, FN=1, TN=6 -> same numbers as class 0
    # class 2 (abnormal_heartbeat): TP=1, FP=0, FN=1, TN=8
    #   precision 1/1, recall 1/2, specificity 8/8, F1 = 2/(2+0+1) = 2/3
    # class 3 (history_of_mi): TP=2, FP=1, FN=0, TN=7
    #   precision 2/3, recall 2/2, specificity 7/8, F1 = 4/(4+1+0) = 4/5
    expected = {
        "normal": (2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
        "mi": (2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
        "abnormal_heartbeat": (1.0, 1 / 2, 1.0, 2 / 3, 2),
        "history_of_mi": (2 / 3, 1.0, 7 / 8, 4 / 5, 2),
    }
    for key, (prec, rec, spec, f1, support) in expected.items():
        assert pc[key]["precision"] == pytest.approx(prec)
        assert pc[key]["recall"] == pytest.approx(rec)
        assert pc[key]["sensitivity"] == pytest.approx(rec)
        assert pc[key]["specificity"] == pytest.approx(spec)
        assert pc[key]["f1"] == pytest.approx(f1)
        assert pc[key]["support"] == support
    # accuracy = diagonal 2+2+1+2 = 7 of 10
    assert m["accuracy"] == pytest.approx(0.7)
    # macro-F1 = (2/3 + 2/3 + 2/3 + 4/5) / 4 = (2 + 0.8) / 4 = 0.7
    assert m["macro_f1"] == pytest.approx(0.7)
    # balanced accuracy = mean recall = (2/3 + 2/3 + 1/2 + 1) / 4 = 2.8333.../4
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 0.5 + 1.0) / 4)


def test_macro_f1_undefined_class_excluded_but_unpredicted_class_counts():
    # Class 2 never occurs and is never predicted -> F1 undefined (None), excluded from macro.
    # Class 3 has 2 true samples but is never predicted -> F1 = 0, included.
    y_true = [0, 0, 1, 1, 3, 3]
    y_pred = [0, 0, 1, 0, 1, 0]
    m = ev.classification_metrics(y_true, probs_for(y_pred))
    pc = m["per_class"]
    # class 0: TP=2, FP=2 (predicted 0 at idx 3, true 1, and idx 5, true 3), FN=0
    #   F1 = 4/(4+2+0) = 2/3
    # class 1: TP=1, FP=1 (idx 4, true 3), FN=1 -> F1 = 2/(2+1+1) = 1/2
    # class 3: TP=0, FP=0, FN=2 -> F1 = 0/(0+0+2) = 0
    assert pc["abnormal_heartbeat"]["f1"] is None
    assert pc["abnormal_heartbeat"]["recall"] is None
    assert pc["abnormal_heartbeat"]["precision"] is None
    assert pc["history_of_mi"]["f1"] == 0.0
    assert pc["history_of_mi"]["precision"] is None  # never predicted
    assert pc["normal"]["f1"] == pytest.approx(2 / 3)
    assert pc["mi"]["f1"] == pytest.approx(1 / 2)
    # macro over the 3 defined classes: (2/3 + 1/2 + 0) / 3 = 7/18
    assert m["macro_f1"] == pytest.approx(7 / 18)
    # balanced accuracy over classes with support: (1 + 1/2 + 0) / 3 = 1/2
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # no samples of class 2 -> its AUC is undefined
    assert pc["abnormal_heartbeat"]["auc"] is None


def test_brier_and_nll_hand_values():
    # Two samples, both true class 0.
    # p1 = [0.7, 0.1, 0.1, 0.1]: brier = 0.3^2 + 3*0.1^2 = 0.09 + 0.03 = 0.12 ; nll = -ln 0.7
    # p2 = [0.1, 0.7, 0.1, 0.1]: brier = 0.9^2 + 0.7^2 + 2*0.1^2 = 0.81+0.49+0.02 = 1.32 ; nll = -ln 0.1
    m = ev.classification_metrics([0, 0], probs_for([0, 1], top=0.7))
    assert m["brier"] == pytest.approx((0.12 + 1.32) / 2)
    assert m["nll"] == pytest.approx((-math.log(0.7) - math.log(0.1)) / 2)


def brute_force_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Count pairs: positive above negative = 1, tie = 1/2."""
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_matches_bruteforce_pairs_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    s = rng.integers(0, 8, 150).astype(float) + 0.7 * y  # few distinct values -> many ties
    assert ev.roc_auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)


def test_auc_perfect_constant_and_undefined():
    y = np.array([0, 0, 0, 1, 1])
    assert ev.roc_auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert ev.roc_auc(y, [0.9, 0.8, 0.7, 0.1, 0.2]) == 0.0
    assert ev.roc_auc(y, np.full(5, 0.4)) == 0.5
    assert ev.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None


def test_roc_curve_area_equals_auc_and_endpoints():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.5 * y, 1)  # rounded -> ties
    fpr, tpr, thr = ev.roc_curve(y, s)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.isinf(thr[0]) and np.all(np.diff(thr[1:]) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids
    assert area == pytest.approx(ev.roc_auc(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        ev.roc_curve([0, 0], [0.1, 0.2])


def calibration_probs(confidences: list[float]) -> np.ndarray:
    """Rows with max prob = confidence on class 0, rest shared equally (max stays on class 0)."""
    return np.array([[c] + [(1 - c) / 3] * 3 for c in confidences])


def test_ece_zero_for_perfectly_calibrated_bins():
    # 10 samples at confidence 0.7 (bin (0.667, 0.733]) with 7 correct -> accuracy 0.7 = confidence
    # 5 samples at confidence 0.4 (bin (0.333, 0.4]) with 2 correct -> accuracy 0.4 = confidence
    conf = [0.7] * 10 + [0.4] * 5
    y = [0] * 7 + [1] * 3 + [0] * 2 + [1] * 3  # prediction is always class 0
    p = calibration_probs(conf)
    assert ev.expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_known_value():
    # 4 samples at conf 0.9, 3 correct: |0.75 - 0.9| = 0.15, weight 4/10
    # 6 samples at conf 0.55, 3 correct: |0.5 - 0.55| = 0.05, weight 6/10
    # ECE = 0.4*0.15 + 0.6*0.05 = 0.06 + 0.03 = 0.09
    conf = [0.9] * 4 + [0.55] * 6
    y = [0, 0, 0, 1] + [0, 0, 0, 1, 1, 1]
    p = calibration_probs(conf)
    assert ev.expected_calibration_error(y, p) == pytest.approx(0.09)
    bins = ev.reliability_bins(y, p)
    assert len(bins["count"]) == ev.N_BINS == 15
    assert sum(bins["count"]) == 10
    assert bins["count"][13] == 4 and bins["count"][8] == 6  # 0.9 in (13/15, 14/15], 0.55 in (8/15, 9/15]
    assert bins["accuracy"][13] == pytest.approx(0.75)
    assert bins["accuracy"][0] is None  # empty bin -> None, never NaN
    assert ev.classification_metrics(y, p)["ece"] == pytest.approx(0.09)


def test_softmax_stable_and_temperature():
    z = np.array([[1000.0, 1000.0, -1000.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    p = ev.softmax(z)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(0.5)
    e = np.exp(np.array([1.0, 2.0, 3.0, 4.0]) / 2.0)
    np.testing.assert_allclose(ev.softmax(z[1:], temperature=2.0)[0], e / e.sum())
    np.testing.assert_allclose(np.exp(ev.log_softmax(z)), p)
    with pytest.raises(ValueError):
        ev.softmax(z, temperature=0.0)


@pytest.mark.parametrize("t_true", [2.5, 0.5])
def test_fit_temperature_recovers_known_temperature(t_true):
    rng = np.random.default_rng(123)
    n = 20000
    logits = rng.normal(scale=3.0, size=(n, 4))
    p_true = ev.softmax(logits, temperature=t_true)
    # Sample each label from its true distribution via inverse CDF.
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(p_true, axis=1)).sum(axis=1).clip(0, 3)
    t_fit = ev.fit_temperature(logits, y)
    assert t_fit == pytest.approx(t_true, rel=0.10)
    # And the fitted temperature really lowers NLL versus T = 1.
    nll = lambda t: -ev.log_softmax(logits, t)[np.arange(n), y].mean()  # noqa: E731
    assert nll(t_fit) < nll(1.0)


def test_fit_temperature_flat_logits_returns_one():
    assert ev.fit_temperature(np.zeros((20, 4)), np.arange(20) % 4) == 1.0


def synthetic(n: int, seed: int, strength: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and logits (n, 4) of a moderately good, overconfident classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    logits = rng.normal(scale=1.5, size=(n, 4))
    logits[np.arange(n), y] += strength
    return y, logits


def test_bootstrap_ci_contains_point_and_is_deterministic():
    # Speed is a benchmark's business, not a test's (a loaded machine would make it flaky).
    y, logits = synthetic(200, seed=0)
    p = ev.softmax(logits)
    ci = ev.bootstrap_ci(y, p, n_boot=1000, seed=7)
    for name in ("accuracy", "macro_f1", "sensitivity_mi", "auc_mi", "macro_auc", "balanced_accuracy"):
        assert set(ci[name]) == {"value", "low", "high"}
        assert ci[name]["low"] <= ci[name]["value"] <= ci[name]["high"], name
        assert ci[name]["low"] < ci[name]["high"]
    # Binned ECE is biased upward on resamples (documented), so its percentile interval may sit
    # above the point value; it must still be a proper, non-negative interval.
    assert 0.0 <= ci["ece"]["low"] < ci["ece"]["high"]
    for key in CLASS_KEYS:
        assert f"sensitivity_{key}" in ci and f"auc_{key}" in ci
    assert ci["accuracy"]["value"] == ev.classification_metrics(y, p)["accuracy"]
    assert ev.bootstrap_ci(y, p, n_boot=1000, seed=7) == ci
    assert ev.bootstrap_ci(y, p, n_boot=1000, seed=8) != ci


def test_bootstrap_vectorised_defaults_match_per_resample_loop():
    # Same seed -> same resamples, so the fast path must equal a slow per-resample recompute.
    y, logits = synthetic(60, seed=3)
    p = ev.softmax(logits)

    cache: dict[bytes, dict] = {}

    def metrics(yy, pp):  # every slow fn of one resample shares one metrics computation
        key = yy.tobytes() + pp.tobytes()
        if key not in cache:
            cache[key] = ev.classification_metrics(yy, pp)
        return cache[key]

    def per_class(field: str, key: str):
        return lambda yy, pp: metrics(yy, pp)["per_class"][key][field]

    def overall(field: str):
        return lambda yy, pp: metrics(yy, pp)[field]

    slow_fns = {
        name: overall(name) for name in ("accuracy", "macro_f1", "balanced_accuracy", "ece", "macro_auc")
    }
    slow_fns |= {name: overall(name) for name in ("brier", "nll")}
    slow_fns["sensitivity_mi"] = per_class("sensitivity", "mi")
    slow_fns["auc_history_of_mi"] = per_class("auc", "history_of_mi")
    slow_fns["f1_abnormal_heartbeat"] = per_class("f1", "abnormal_heartbeat")
    slow = ev.bootstrap_ci(y, p, metric_fns=slow_fns, n_boot=300, seed=11)
    fast = ev.bootstrap_ci(y, p, n_boot=300, seed=11)
    for name in slow_fns:
        for field in ("value", "low", "high"):
            assert fast[name][field] == pytest.approx(slow[name][field], abs=1e-12), (name, field)


def test_bootstrap_ci_narrows_with_more_data():
    widths = []
    for n in (100, 2000):
        y, logits = synthetic(n, seed=1)
        ci = ev.bootstrap_ci(y, ev.softmax(logits), n_boot=500, seed=0)
        widths.append(ci["accuracy"]["high"] - ci["accuracy"]["low"])
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(20) = 0.22x expected


def test_bootstrap_drops_resamples_where_metric_undefined():
    # Only one MI sample: many resamples contain none, sensitivity_mi must still be finite.
    y = np.array([0] * 30 + [1] + [2] * 10 + [3] * 10)
    ci = ev.bootstrap_ci(y, probs_for(y.tolist()), n_boot=200, seed=0)
    assert ci["sensitivity_mi"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    # A class with no samples at all: everything undefined -> None, not NaN.
    y2 = np.array([0, 0, 1, 1, 3, 3] * 3)
    ci2 = ev.bootstrap_ci(y2, probs_for(y2.tolist()), n_boot=50, seed=0)
    assert ci2["sensitivity_abnormal_heartbeat"] == {"value": None, "low": None, "high": None}


def test_probs_that_look_like_logits_are_rejected():
    _, logits = synthetic(10, seed=0)
    with pytest.raises(ValueError, match="logits"):
        ev.classification_metrics(np.zeros(10, int), logits)
    with pytest.raises(ValueError):
        ev.confusion_matrix([0, 4], [0, 1])


def make_report(n: int = 120, small_group: int = 6) -> dict:
    # Logits x3 make the model clearly overconfident (fitted T ~ 3.3), as deep nets tend to be.
    y, logits = synthetic(n, seed=3)
    groups = np.array(["3x4_grid"] * (n - small_group - 20) + ["6x2_nogrid"] * 20 + ["unknown"] * small_group)
    y_val, logits_val = synthetic(400, seed=9)
    t = ev.fit_temperature(3 * logits_val, y_val)
    return ev.evaluate_predictions(y, 3 * logits, groups=groups, temperature=t, n_boot=200, seed=0)


def test_evaluate_predictions_layout():
    report = make_report()
    assert report["n"] == 120
    assert list(report["per_group"]) == ["3x4_grid", "6x2_nogrid", "unknown"]
    assert report["per_group"]["3x4_grid"]["n"] == 94
    assert report["per_group"]["6x2_nogrid"]["ci"]["accuracy"]["low"] is not None
    small = report["per_group"]["unknown"]
    assert small["n"] == 6 and small["ci"] is None and small["metrics"]["accuracy"] is not None
    cal = report["calibration"]
    assert cal["temperature"] > 1.0  # synthetic logits are overconfident
    assert cal["ece_after"] < cal["ece_before"]
    assert report["overall"]["metrics"]["ece"] == pytest.approx(cal["ece_after"])
    assert set(report["curves"]["roc"]) == set(CLASS_KEYS)
    json.dumps(report, allow_nan=False)  # JSON-safe: raises on NaN/inf or numpy types


def test_evaluate_predictions_without_groups_or_temperature():
    y, logits = synthetic(30, seed=4)
    report = ev.evaluate_predictions(y, logits, n_boot=0)
    assert report["per_group"] == {}
    assert report["overall"]["ci"] is None
    assert report["calibration"]["temperature"] is None and report["calibration"]["ece_after"] is None
    # Temperature does not change the argmax, hence not accuracy.
    scaled = ev.evaluate_predictions(y, logits, temperature=3.0, n_boot=0)
    assert scaled["overall"]["metrics"]["accuracy"] == report["overall"]["metrics"]["accuracy"]


def test_majority_baseline():
    y_train = [0, 0, 0, 1, 2]
    y_test = [0, 1, 2, 3]
    m = ev.majority_baseline(y_train, y_test)
    assert m["majority_class"] == "normal"
    # prior = (counts + 1) / (5 + 4) = [4, 2, 2, 1] / 9
    assert m["prior"] == pytest.approx([4 / 9, 2 / 9, 2 / 9, 1 / 9])
    assert m["accuracy"] == pytest.approx(0.25)
    assert m["per_class"]["mi"]["auc"] == 0.5  # constant scores
    # F1: normal TP=1 FP=3 FN=0 -> 2/5 ; other classes TP=0 -> 0 -> macro = 0.4/4 = 0.1
    assert m["macro_f1"] == pytest.approx(0.1)


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def test_write_report_outputs(tmp_path):
    pytest.importorskip("matplotlib")
    report = make_report()
    y_train = np.arange(200) % 4
    report["baseline"] = ev.majority_baseline(y_train, np.arange(120) % 4)
    paths = ev.write_report(report, tmp_path / "eval", title="Test run", extra_md="## Notes\n\nhello")
    expected = {"json", "markdown", "confusion_matrix", "roc_curves", "reliability_diagram"}
    assert set(paths) == expected
    for key in ("confusion_matrix", "roc_curves", "reliability_diagram"):
        assert paths[key].name == f"{key}.png"
        _assert_png(paths[key])
    md = paths["markdown"].read_text(encoding="utf-8")
    assert re.search(r"\| Accuracy \| \d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\) \|", md)
    for heading in (
        "## Overall",
        "## Per class",
        "## Per print template",
        "## Calibration",
        "## Confusion matrix",
    ):
        assert heading in md
    assert "Myocardial Infarction" in md and "`6x2_nogrid`" in md and "hello" in md
    assert "Majority-class baseline" in md

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    loaded = json.loads(paths["json"].read_text(encoding="utf-8"), parse_constant=no_nan)
    assert loaded["per_group"]["unknown"]["ci"] is None


def test_plot_training_curves(tmp_path):
    pytest.importorskip("matplotlib")
    history = [
        {
            "epoch": e,
            "train_loss": 1.4 * 0.9**e,
            "val_loss": 1.5 * 0.93**e + 0.01 * e,
            "val_macro_f1": 0.3 + 0.5 * (1 - 0.85**e),
            "lr": 1e-3 * 0.5 * (1 + math.cos(math.pi * e / 20)) + 1e-6,
        }
        for e in range(1, 21)
    ]
    history[3]["val_macro_f1"] = None  # missing values are skipped, not plotted as 0
    path = ev.plot_training_curves(history, tmp_path / "curves.png")
    _assert_png(path)
    with pytest.raises(ValueError):
        ev.plot_training_curves([], tmp_path / "empty.png")
