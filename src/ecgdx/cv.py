"""Cross-validation: ``ecgdx cv --config configs/NAME.yaml [--folds 5]``.

Models are chosen by k-fold cross-validation over all development pages, not by one small split.
Folds hold whole duplicate groups and are stratified by (class, template)
(``ecgdx.data.split.assign_group_folds``). Fold k trains on the other folds for a fixed number of
epochs and keeps the last epoch (``train.select=last``): the held-out fold is scored, never used to
pick a checkpoint. Its predictions are the fold's out-of-fold (OOF) predictions.

Run directory ``out_dir/name`` (resumable: a rerun skips finished folds and resumes a fold from its
``last.pt``):

- ``config.yaml``, ``folds.csv`` (page, label, template, fold; a rerun must agree with it)
- ``fold-K/`` a training run (``best.pt`` = the last epoch, history, curves) and ``oof.npz``
- ``oof.npz`` all OOF logits with labels, templates, names and folds
- ``report.json`` / ``report.md``: macro-F1, per-class sensitivity and ECE with bootstrap CIs,
  overall and per template, for three decision rules (``ecgdx.decision``); the calibration and the
  thresholds are themselves cross-fitted (fitted on the other folds' OOF predictions), so the
  numbers describe pages that neither trained nor calibrated the model
- ``decision_rule.json``: the rule fitted on all OOF predictions, for ``ecgdx export --decision``.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

import numpy as np

from ecgdx.config import ExperimentConfig, dump_config
from ecgdx.decision import DecisionRule, fit_class_log_weights, log_softmax_rows
from ecgdx.errors import ConfigError, DataError
from ecgdx.labels import CLASS_KEYS, NUM_CLASSES
from ecgdx.training import SplitData

__all__ = ["cross_validate", "cv_report", "fit_decision_rules"]

MI_SENSITIVITY_FLOOR = 0.85


def _all_pages(cfg: ExperimentConfig) -> tuple[SplitData, list[str], list[str], str]:
    """Every development page as one SplitData, its duplicate groups, its manifest split, and the
    data fingerprint."""
    spec = cfg.preprocess
    if cfg.data.synthetic > 0:
        from ecgdx.data.synthetic import make_synthetic_dataset

        images, labels, templates = make_synthetic_dataset(cfg.data.synthetic, (spec.height, spec.width),
                                                           seed=cfg.train.seed)
        names = [f"synthetic-{i}" for i in range(len(images))]
        splits = ["test" if i % 5 == 0 else "train" for i in range(len(images))]
        return SplitData(images, labels, templates, names), names, splits, f"synthetic-{cfg.data.synthetic}"
    from ecgdx.training import load_manifest_pages

    rows, pages, fingerprint = load_manifest_pages(cfg)
    return pages, [r.group for r in rows], [r.split for r in rows], fingerprint


def _fold_table(run_dir: Path, pages: SplitData, folds: list[int]) -> None:
    """Write folds.csv, or check that an earlier run of this directory used the same folds."""
    path = run_dir / "folds.csv"
    rows = [{"name": n, "label": CLASS_KEYS[y], "template": t, "fold": f}
            for n, y, t, f in zip(pages.names, pages.labels.tolist(), pages.templates, folds, strict=True)]
    if path.exists():
        with open(path, newline="") as handle:
            earlier = [(r["name"], int(r["fold"])) for r in csv.DictReader(handle)]
        if earlier != [(r["name"], r["fold"]) for r in rows]:
            raise ConfigError(f"{path} holds other folds than this run would use (data or seed changed); "
                              "use a new name=... for a new cross-validation")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "label", "template", "fold"])
        writer.writeheader()
        writer.writerows(rows)


def cross_validate(cfg: ExperimentConfig, *, folds: int = 5, fold_seed: int = 0, test_fold: bool = True,
                   progress: bool = True, n_boot: int = 1000) -> dict:
    """Run (or resume) a k-fold cross-validation; returns the report dict (also written to the run dir).

    ``test_fold=True``: fold 0 is the manifest's fixed test split (itself group-aware and stratified
    by class x template) and the other pages are dealt into folds 1..k-1. The fold-0 model is then
    the model trained on train + val, and its held-out predictions are the test split's last check,
    with the calibration and thresholds fitted on folds 1..k-1 only: no extra training run is
    needed to ship it (``fold-0/best.pt``, rule ``decision_rule_without_test.json``).
    """
    from ecgdx.data.split import assign_group_folds
    from ecgdx.training import load_checkpoint, predict_logits, train

    run_dir = Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    pages, groups, manifest_splits, fingerprint = _all_pages(cfg)
    rows = [{"group": g, "label": CLASS_KEYS[y], "template": t}
            for g, y, t in zip(groups, pages.labels.tolist(), pages.templates, strict=True)]
    if test_fold:
        is_test = np.asarray(manifest_splits) == "test"
        if not is_test.any():
            raise DataError("the manifest has no test split to use as fold 0; pass --no-test-fold")
        rest = [row for row, t in zip(rows, is_test, strict=True) if not t]
        rest_folds = iter(assign_group_folds(rest, folds - 1, seed=fold_seed))
        fold_of = [0 if t else next(rest_folds) + 1 for t in is_test]
    else:
        fold_of = assign_group_folds(rows, folds, seed=fold_seed)
    _fold_table(run_dir, pages, fold_of)
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.train.select = "last"
    dump_config(fold_cfg, run_dir / "config.yaml")
    fold_arr = np.asarray(fold_of)
    timings = {}
    started = time.perf_counter()
    for k in range(folds):
        fold_dir = run_dir / f"fold-{k}"
        held = np.flatnonzero(fold_arr == k)
        if (fold_dir / "oof.npz").exists():
            continue
        rest = np.flatnonzero(fold_arr != k)
        print(f"[cv {cfg.name}] fold {k + 1}/{folds}: train {len(rest)}, held out {len(held)} pages "
              f"({time.perf_counter() - started:.0f} s so far)", flush=True)
        held_pages = pages.subset(held)
        splits = {"train": pages.subset(rest), "val": held_pages, "test": held_pages}
        t0 = time.perf_counter()
        train(fold_cfg, splits=splits, fingerprint=f"{fingerprint}-fold{k}of{folds}", run_dir=fold_dir,
              resume=(fold_dir / "last.pt").exists(), progress=progress, final_evaluation=False)
        model, _ = load_checkpoint(fold_dir / "best.pt")
        logits = predict_logits(model, held_pages.images, channels_last=cfg.train.channels_last,
                                device=cfg.train.device)
        seconds = time.perf_counter() - t0
        np.savez(fold_dir / "oof.npz", logits=logits, index=held, seconds=seconds)
        timings[k] = seconds
    logits = np.zeros((len(pages.labels), NUM_CLASSES))
    fold_seconds = []
    for k in range(folds):
        saved = np.load(run_dir / f"fold-{k}" / "oof.npz")
        logits[saved["index"]] = saved["logits"]
        fold_seconds.append(float(saved["seconds"]))
    np.savez(run_dir / "oof.npz", logits=logits, labels=pages.labels, templates=np.asarray(pages.templates),
             names=np.asarray(pages.names), folds=fold_arr)
    sampler_prior = _sampler_prior(cfg, pages.labels)
    report = cv_report(logits, pages.labels, np.asarray(pages.templates), fold_arr, sampler_prior,
                       n_boot=n_boot)
    report["name"] = cfg.name
    report["model"] = cfg.model.name
    report["config"] = fold_cfg.to_dict()
    report["data_fingerprint"] = fingerprint
    report["cost"] = {"fold_train_seconds": fold_seconds, "total_train_seconds": float(sum(fold_seconds))}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(render_cv_markdown(report))
    rules = fit_decision_rules(logits, pages.labels, sampler_prior)
    (run_dir / "decision_rule.json").write_text(rules[report["chosen_rule"]].to_json())
    if test_fold:
        outside = fold_arr != 0
        rules = fit_decision_rules(logits[outside], pages.labels[outside], sampler_prior)
        (run_dir / "decision_rule_without_test.json").write_text(rules[report["chosen_rule"]].to_json())
        report["test_fold"] = _test_check(logits[~outside], pages.labels[~outside],
                                          np.asarray(pages.templates)[~outside], rules[report["chosen_rule"]])
        headline = test_headline(logits[~outside], pages.labels[~outside], rules[report["chosen_rule"]])
        report["test_fold_headline"] = headline
        (run_dir / "test_metrics.json").write_text(json.dumps(headline, indent=2))
        (run_dir / "report.json").write_text(json.dumps(report, indent=2))
        (run_dir / "report.md").write_text(render_cv_markdown(report))
    print(render_cv_markdown(report, short=True))
    print(f"report: {run_dir / 'report.md'}")
    return report


def _sampler_prior(cfg: ExperimentConfig, labels: np.ndarray) -> np.ndarray:
    """Class mix the training loop showed the model: uniform with the balancing sampler, else the data's."""
    if cfg.train.balance == "sampler":
        return np.full(NUM_CLASSES, 1.0 / NUM_CLASSES)
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    return counts / counts.sum()


def fit_decision_rules(logits: np.ndarray, labels: np.ndarray, sampler_prior: np.ndarray,
                       mi_floor: float = MI_SENSITIVITY_FLOOR) -> dict[str, DecisionRule]:
    """The three candidate rules, calibrated (T) and fitted (thresholds) on the given predictions."""
    from ecgdx.evaluation import fit_temperature

    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    data_prior = (counts + 0.5) / (counts + 0.5).sum()  # +0.5: a class absent from a fold stays possible
    shift = np.log(data_prior) - np.log(sampler_prior)
    temperature = fit_temperature(logits, labels, offset=shift)
    common = {"temperature": float(temperature), "data_prior": data_prior.tolist(),
              "sampler_prior": [float(v) for v in sampler_prior]}
    balanced = log_softmax_rows(logits / temperature - np.log(sampler_prior))
    weights = fit_class_log_weights(balanced, labels, mi_floor=mi_floor)
    return {
        "argmax": DecisionRule(name="argmax", temperature=float(fit_temperature(logits, labels)),
                               reason="the most probable class at the development data's class mix"),
        "balanced_prior": DecisionRule(name="balanced_prior", **common,
                                       reason="no assumption about the class mix of the pages sent for reading"),
        "fitted_thresholds": DecisionRule(
            name="fitted_thresholds", class_log_weights=weights.tolist(), **common,
            reason=f"per-class thresholds that maximise out-of-fold macro-F1 with MI sensitivity >= {mi_floor}"),
    }


def _cross_fitted(logits: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                  sampler_prior: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For every rule: (decision-consistent probabilities, data-prior probabilities) of each page,
    with the rule fitted on the other folds only."""
    out = {name: (np.zeros_like(logits), np.zeros_like(logits))
           for name in ("argmax", "balanced_prior", "fitted_thresholds")}
    for k in np.unique(folds):
        held = folds == k
        rules = fit_decision_rules(logits[~held], labels[~held], sampler_prior)
        for name, rule in rules.items():
            out[name][0][held] = rule.decision_consistent_probabilities(logits[held])
            out[name][1][held] = rule.data_prior_probabilities(logits[held])
    return out


def cv_report(logits: np.ndarray, labels: np.ndarray, templates: np.ndarray, folds: np.ndarray,
              sampler_prior: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics with bootstrap CIs for each decision rule, overall and per template (JSON-safe)."""
    from ecgdx.evaluation import bootstrap_ci, classification_metrics, expected_calibration_error
    from ecgdx.labels import TEMPLATES

    results = {}
    for name, (decision_probs, data_probs) in _cross_fitted(logits, labels, folds, sampler_prior).items():
        block = {}
        for group in ["all", *[t for t in TEMPLATES if t in set(templates.tolist())]]:
            mask = np.ones(len(labels), bool) if group == "all" else templates == group
            metrics = classification_metrics(labels[mask], decision_probs[mask])
            ci = bootstrap_ci(labels[mask], decision_probs[mask], n_boot=n_boot, seed=seed) if n_boot else {}
            block[group] = {
                "n": int(mask.sum()),
                "macro_f1": _with_ci(metrics["macro_f1"], ci.get("macro_f1")),
                "accuracy": _with_ci(metrics["accuracy"], ci.get("accuracy")),
                "sensitivity": {key: _with_ci(metrics["per_class"][key]["recall"], ci.get(f"sensitivity_{key}"))
                                for key in CLASS_KEYS},
                "confusion_matrix": metrics["confusion_matrix"],
                "ece": float(expected_calibration_error(labels[mask], data_probs[mask])),
            }
        results[name] = block
    chosen = _choose_rule(results)
    return {"n": int(len(labels)), "folds": int(len(np.unique(folds))), "rules": results, "chosen_rule": chosen,
            "mi_sensitivity_floor": MI_SENSITIVITY_FLOOR,
            "bootstrap": {"n_boot": n_boot, "seed": seed, "method": "percentile, pages resampled"}}


def _test_check(logits: np.ndarray, labels: np.ndarray, templates: np.ndarray, rule: DecisionRule) -> dict:
    """The fixed test split scored by the fold-0 model with the rule fitted without it."""
    from ecgdx.decision import macro_f1_and_recalls

    pred = rule.decide(logits)
    out = {}
    for group in ["all", *sorted(set(templates.tolist()))]:
        mask = np.ones(len(labels), bool) if group == "all" else templates == group
        f1, recalls = macro_f1_and_recalls(labels[mask], pred[mask])
        out[group] = {"n": int(mask.sum()), "macro_f1": f1,
                      "sensitivity": {k: (None if np.isnan(r) else float(r)) for k, r in zip(CLASS_KEYS, recalls,
                                                                                             strict=True)}}
    return out


def test_headline(logits: np.ndarray, labels: np.ndarray, rule: DecisionRule) -> dict:
    """The numbers a model card and the ONNX metadata carry, for the decision the model makes.

    accuracy, macro-F1, balanced accuracy and MI sensitivity score the rule's decisions; ECE scores
    the probabilities at the data's class mix (the calibrated ones)."""
    from ecgdx.evaluation import classification_metrics, expected_calibration_error

    metrics = classification_metrics(labels, rule.decision_consistent_probabilities(logits))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "ece": float(expected_calibration_error(labels, rule.data_prior_probabilities(logits))),
            "mi_sensitivity": metrics["per_class"]["mi"]["recall"], "n": int(len(labels)),
            "decision_rule": rule.name}


def _with_ci(value, ci) -> dict:
    return {"value": value, "low": (ci or {}).get("low"), "high": (ci or {}).get("high")}


def _choose_rule(results: dict) -> str:
    """Balanced prior unless fitted thresholds beat it out of fold (higher macro-F1, MI floor kept)."""
    balanced, fitted = results["balanced_prior"]["all"], results["fitted_thresholds"]["all"]
    mi_ok = (fitted["sensitivity"]["mi"]["value"] or 0.0) >= min(
        MI_SENSITIVITY_FLOOR, balanced["sensitivity"]["mi"]["value"] or 0.0)
    if mi_ok and (fitted["macro_f1"]["value"] or 0.0) > (balanced["macro_f1"]["value"] or 0.0):
        return "fitted_thresholds"
    return "balanced_prior"


def _fmt(block: dict) -> str:
    if block["value"] is None:
        return "–"
    if block["low"] is None:
        return f"{block['value']:.3f}"
    return f"{block['value']:.3f} ({block['low']:.2f}–{block['high']:.2f})"


def render_cv_markdown(report: dict, short: bool = False) -> str:
    lines = [] if short else [
        f"# Cross-validation: {report.get('name', '')} ({report.get('model', '')})", "",
        f"{report['n']} pages, {report['folds']} folds by duplicate group, stratified by class x template. "
        "Every number is out of fold: the page was not trained on, and the calibration and thresholds "
        "applied to it were fitted on the other folds only. 95% percentile bootstrap CIs over pages.", ""]
    lines += ["| rule | pages | n | macro-F1 (95% CI) | MI sens. | History-of-MI sens. | Abnormal sens. | "
              "Normal sens. | ECE (data prior) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, block in report["rules"].items():
        mark = " (chosen)" if name == report["chosen_rule"] else ""
        for group, row in block.items():
            s = row["sensitivity"]
            lines.append(f"| {name}{mark} | {group} | {row['n']} | {_fmt(row['macro_f1'])} | {_fmt(s['mi'])} | "
                         f"{_fmt(s['history_of_mi'])} | {_fmt(s['abnormal_heartbeat'])} | {_fmt(s['normal'])} | "
                         f"{row['ece']:.3f} |")
    if not short and "test_fold" in report:
        lines += ["", "Last check, the fixed test split (fold 0: trained on train + val, rule fitted on folds 1..k-1):",
                  "", "| pages | n | macro-F1 | MI sens. | History-of-MI sens. | Abnormal sens. | Normal sens. |",
                  "|---|---|---|---|---|---|---|"]
        for group, row in report["test_fold"].items():
            s = {k: ("–" if v is None else f"{v:.3f}") for k, v in row["sensitivity"].items()}
            lines.append(f"| {group} | {row['n']} | {row['macro_f1']:.3f} | {s['mi']} | {s['history_of_mi']} | "
                         f"{s['abnormal_heartbeat']} | {s['normal']} |")
    if not short and "cost" in report:
        cost = report["cost"]
        lines += ["", f"Training cost: {cost['total_train_seconds'] / 60:.1f} min for all folds "
                      f"({', '.join(f'{s / 60:.1f}' for s in cost['fold_train_seconds'])} min per fold)."]
    return "\n".join(lines) + "\n"
