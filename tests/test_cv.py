"""`ecgdx cv`: folds by duplicate group, resumable runs, out-of-fold report with cross-fitted rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgdx.cli import main
from ecgdx.cv import cv_report, fit_decision_rules
from ecgdx.data.split import assign_group_folds
from ecgdx.decision import DecisionRule
from ecgdx.errors import DataError


def _rows(n_groups_per_stratum: dict[tuple[str, str], int], copies: int = 1) -> list[dict]:
    rows = []
    for (label, template), n in n_groups_per_stratum.items():
        for g in range(n):
            rows += [{"group": f"{label}-{template}-{g}", "label": label, "template": template}] * copies
    return rows


def test_folds_keep_groups_together_and_spread_small_strata():
    rows = _rows({("normal", "3x4_grid"): 40, ("mi", "3x4_grid"): 3, ("mi", "6x2_nogrid"): 4,
                  ("history_of_mi", "6x2_nogrid"): 11}, copies=2)
    folds = assign_group_folds(rows, 5, seed=0)
    by_group: dict[str, set[int]] = {}
    for row, fold in zip(rows, folds, strict=True):
        by_group.setdefault(row["group"], set()).add(fold)
    assert all(len(f) == 1 for f in by_group.values())  # duplicates never straddle folds
    mi_folds = [f for row, f in zip(rows[::2], folds[::2], strict=True) if row["label"] == "mi"]
    assert len(set(mi_folds)) == 5  # 7 MI groups over 5 folds: every fold gets at least one
    counts = np.bincount(folds[::2], minlength=5)
    assert counts.max() - counts.min() <= 2
    assert folds == assign_group_folds(list(reversed(rows)), 5, seed=0)[::-1]  # row order does not matter
    assert folds != assign_group_folds(rows, 5, seed=1)
    with pytest.raises(DataError):
        assign_group_folds(rows, 1)


def test_cross_fitted_report_on_synthetic_scores():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [200, 20, 80, 40])
    logits = rng.normal(0, 1, (len(y), 4))
    logits[np.arange(len(y)), y] += 2.5
    folds = rng.integers(0, 5, len(y))
    templates = np.where(rng.random(len(y)) < 0.8, "3x4_grid", "6x2_nogrid")
    report = cv_report(logits, y, templates, folds, np.full(4, 0.25), n_boot=50)
    assert set(report["rules"]) == {"argmax", "balanced_prior", "fitted_thresholds"}
    balanced = report["rules"]["balanced_prior"]
    assert set(balanced) == {"all", "3x4_grid", "6x2_nogrid"}
    f1 = balanced["all"]["macro_f1"]
    assert 0.5 < f1["value"] < 1.0 and f1["low"] <= f1["value"] <= f1["high"]
    assert report["chosen_rule"] in ("balanced_prior", "fitted_thresholds")
    rules = fit_decision_rules(logits, y, np.full(4, 0.25))
    assert isinstance(rules["balanced_prior"], DecisionRule)
    # Calibration at the data prior: the mean probability of each class tracks its frequency.
    p = rules["balanced_prior"].data_prior_probabilities(logits)
    assert np.allclose(p.mean(axis=0), np.bincount(y) / len(y), atol=0.05)


def test_cv_command_runs_resumes_and_writes_its_report(tmp_path):
    args = ["cv", "--config", "configs/smoke.yaml", "--folds", "3", "--n-boot", "20",
            "--set", f"out_dir={tmp_path}", "--set", "train.epochs=1", "--set", "train.max_batches_per_epoch=2"]
    assert main(args) == 0
    run = tmp_path / "smoke"
    report = json.loads((run / "report.json").read_text())
    oof = np.load(run / "oof.npz")
    assert report["n"] == len(oof["labels"]) == 48 and report["folds"] == 3
    assert sorted(set(oof["folds"].tolist())) == [0, 1, 2]
    assert "test_fold" in report and report["test_fold"]["all"]["n"] == int((oof["folds"] == 0).sum())
    DecisionRule.from_json((run / "decision_rule_without_test.json").read_text())
    stamp = (run / "fold-1" / "oof.npz").stat().st_mtime
    assert main(args) == 0  # a rerun skips the finished folds
    assert (run / "fold-1" / "oof.npz").stat().st_mtime == stamp
    (run / "folds.csv").write_text((run / "folds.csv").read_text().replace(",0\n", ",2\n", 1))
    assert main(args) == 2  # other folds than the run's: refused, not mixed
