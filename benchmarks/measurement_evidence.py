"""Does the measured ST elevation help the image model decide? Out of fold, like for like.

    python benchmarks/measurement_evidence.py docs/cv/RUN [--jobs 2] [--n-boot 1000] [--markdown out.md]
        [--write-rule] [--against docs/cv/OTHER_RUN]

1. Every page of the run's out-of-fold file is digitised and checked against the ST-elevation (STEMI)
   criteria (``ecgdx.signals.findings.page_findings``: two contiguous leads >= 0.1 mV, >= 0.2 mV in
   V2-V3), as the web app checks an upload. Cached in ``RUN/st_elevation.npz`` (names, 1/0, NaN
   where the page could not be digitised); a rerun reads the cache.
2. For each held-out fold, on the other folds only: the image model's decision rule
   (``ecgdx.cv.fit_decision_rules``, temperature and balanced prior) and P(criteria met | class)
   (``ecgdx.decision.fit_st_elevation_rates``). The held-out pages are decided by the image alone and
   by the image plus the finding (Bayes' rule, ``ecgdx.decision``): nothing is tuned on the pages
   that are scored, and the combination has no free weight.
3. Macro-F1 and per-class sensitivity with bootstrap CIs, overall and per template, ECE at the data
   mix, and the paired bootstrap of the difference (the same resampled pages score both).

``--write-rule`` also writes ``RUN/decision_rule_st_without_test.json``: the run's rule fitted
without fold 0 plus the rates counted without fold 0 (the fold-0 model never saw the test split),
for ``ecgdx export --decision-rule``; with ``--base-model M.onnx`` the image part of the rule is that
model's own (e.g. the bundled model, trained on folds 1-4 by an earlier run of the same recipe),
for ``ecgdx model set-rule``.

``--against OTHER`` (a run over the same pages and folds, e.g. a single member of an ensemble that
``benchmarks/ensemble.py --save`` wrote): the paired gain of this run's decision with the finding over
the other run's decision with the finding, overall and per template, and the MIs each finds.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _st_elevation_of(path: str) -> float:
    import cv2

    from ecgdx.signals.findings import st_elevation_of

    cv2.setNumThreads(1)
    found = st_elevation_of(path)
    return float("nan") if found is None else float(found)  # NaN, not digitised: the image decides alone


def load_st_elevation(run: Path, names: np.ndarray, data_root: Path, jobs: int) -> np.ndarray:
    """(N,) 1.0 / 0.0 / NaN per page of ``names``, cached in RUN/st_elevation.npz."""
    cache = run / "st_elevation.npz"
    if cache.exists():
        saved = np.load(cache)
        if saved["names"].tolist() == names.tolist():
            return saved["st_elevation"]
    from tqdm import tqdm

    paths = [str(data_root / name) for name in names]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} pages are not under {data_root} (first: {missing[0]}); pass --data")
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        values = list(tqdm(pool.map(_st_elevation_of, paths, chunksize=8), total=len(paths),
                           desc="digitising pages", unit="page"))
    out = np.asarray(values, np.float64)
    np.savez_compressed(cache, names=names, st_elevation=out)
    return out


def cross_fitted_decisions(logits: np.ndarray, labels: np.ndarray, folds: np.ndarray, st: np.ndarray,
                           sampler_prior: np.ndarray, *, with_measurements: bool) -> tuple[np.ndarray, np.ndarray]:
    """(decision-consistent probabilities, data-prior probabilities) of every page, everything fitted
    on the other folds."""
    from ecgdx.cv import fit_decision_rules
    from ecgdx.decision import fit_st_elevation_rates

    decision, data = np.zeros_like(logits), np.zeros_like(logits)
    flags = [None if np.isnan(v) else bool(v) for v in st]
    for k in np.unique(folds):
        held = folds == k
        rule = fit_decision_rules(logits[~held], labels[~held], sampler_prior)["balanced_prior"]
        evidence = None
        if with_measurements:
            rule = rule.with_st_elevation_rates(fit_st_elevation_rates(st[~held], labels[~held]))
            evidence = [flags[i] for i in np.flatnonzero(held)]
        decision[held] = rule.decision_consistent_probabilities(logits[held], evidence)
        data[held] = rule.data_prior_probabilities(logits[held], evidence)
    return decision, data


def report(labels: np.ndarray, templates: np.ndarray, decision: np.ndarray, data: np.ndarray, n_boot: int) -> dict:
    from ecgdx.evaluation import bootstrap_ci, classification_metrics, expected_calibration_error
    from ecgdx.labels import CLASS_KEYS

    out = {}
    for group in ("all", "3x4_grid", "6x2_nogrid"):
        mask = np.ones(len(labels), bool) if group == "all" else templates == group
        metrics = classification_metrics(labels[mask], decision[mask])
        ci = bootstrap_ci(labels[mask], decision[mask], n_boot=n_boot, seed=0) if n_boot else {}
        out[group] = {"n": int(mask.sum()), "macro_f1": metrics["macro_f1"], "macro_f1_ci": ci.get("macro_f1"),
                      "sensitivity": {k: metrics["per_class"][k]["recall"] for k in CLASS_KEYS},
                      "mi_found": int(((decision[mask].argmax(1) == 1) & (labels[mask] == 1)).sum()),
                      "mi_pages": int((labels[mask] == 1).sum()),
                      "ece": float(expected_calibration_error(labels[mask], data[mask]))}
    return out


def _ci(block: dict) -> str:
    ci = block.get("macro_f1_ci") or {}
    low, high = ci.get("low"), ci.get("high")
    return f"{block['macro_f1']:.3f}" + (f" ({low:.2f}–{high:.2f})" if low is not None else "")


def markdown(rows: dict[str, dict], gains: dict[str, dict], run: Path, minutes: float, measured: float) -> str:
    lines = [f"Out of fold, {rows['image alone']['all']['n']} pages, folds of `{run}`; ST-elevation criteria "
             f"checked on {100 * measured:.1f} % of pages; digitising took {minutes:.1f} min.", "",
             "| decision | macro-F1 all (95% CI) | MI sens. | History-of-MI | Abnormal | Normal | macro-F1 3x4 (MI found) "
             "| macro-F1 6x2 (MI found) | ECE |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        s = r["all"]["sensitivity"]
        lines.append(f"| {name} | {_ci(r['all'])} | {s['mi']:.3f} | {s['history_of_mi']:.3f} | "
                     f"{s['abnormal_heartbeat']:.3f} | {s['normal']:.3f} | "
                     f"{r['3x4_grid']['macro_f1']:.3f} ({r['3x4_grid']['mi_found']}/{r['3x4_grid']['mi_pages']}) | "
                     f"{r['6x2_nogrid']['macro_f1']:.3f} ({r['6x2_nogrid']['mi_found']}/{r['6x2_nogrid']['mi_pages']}) | "
                     f"{r['all']['ece']:.3f} |")
    lines.append("")
    for group, g in gains.items():
        lines.append(f"Paired, {group}: macro-F1 {g['gain']:+.3f} (95% CI {g['low']:+.3f} to {g['high']:+.3f}; "
                     f"above zero in {100 * g['share_of_resamples_above_zero']:.1f} % of resamples).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `ecgdx cv` run (or its docs/cv copy) with oof.npz")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mendeley-v1-dev")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--write-rule", action="store_true")
    parser.add_argument("--base-model", type=Path, help="with --write-rule: take the image rule from this ONNX model")
    parser.add_argument("--against", type=Path, help="another run over the same pages and folds: the paired gain of "
                                                        "this run's decision with the finding over that run's")
    args = parser.parse_args(argv)

    from ensemble import load_oof, paired_gain

    from ecgdx.config import load_config
    from ecgdx.cv import _sampler_prior, fit_decision_rules
    from ecgdx.decision import fit_st_elevation_rates

    oof = load_oof(args.run)
    logits, labels, templates, folds, names = (oof[k] for k in ("logits", "labels", "templates", "folds", "names"))
    prior = _sampler_prior(load_config(args.run / "config.yaml", []), labels)
    started = time.perf_counter()
    st = load_st_elevation(args.run, names, args.data, args.jobs)
    minutes = (time.perf_counter() - started) / 60

    rows, predictions = {}, {}
    for name, use in (("image alone", False), ("image + ST-elevation finding", True)):
        decision, data = cross_fitted_decisions(logits, labels, folds, st, prior, with_measurements=use)
        rows[name] = report(labels, templates, decision, data, args.n_boot)
        predictions[name] = decision.argmax(axis=1)
    gains = {}
    for group in ("all", "3x4_grid", "6x2_nogrid"):
        mask = np.ones(len(labels), bool) if group == "all" else templates == group
        gains[group] = paired_gain(labels[mask], predictions["image + ST-elevation finding"][mask],
                                   predictions["image alone"][mask], n_boot=args.n_boot)
    if args.against:
        other = load_oof(args.against)
        if not all(np.array_equal(other[k], oof[k]) for k in ("names", "labels", "folds")):
            raise SystemExit(f"{args.against} holds other pages or folds than {args.run}")
        other_st = load_st_elevation(args.against, names, args.data, args.jobs)
        other_decision, _ = cross_fitted_decisions(other["logits"], labels, folds, other_st, prior,
                                                   with_measurements=True)
        for group in ("all", "3x4_grid", "6x2_nogrid"):
            mask = np.ones(len(labels), bool) if group == "all" else templates == group
            g = paired_gain(labels[mask], predictions["image + ST-elevation finding"][mask],
                            other_decision.argmax(axis=1)[mask], n_boot=args.n_boot)
            mi = labels[mask] == 1
            print(f"with the finding, {args.run.name} minus {args.against.name}, {group}: macro-F1 "
                  f"{g['gain']:+.3f} (95% CI {g['low']:+.3f} to {g['high']:+.3f}; above zero in "
                  f"{100 * g['share_of_resamples_above_zero']:.1f} % of resamples); MI found "
                  f"{int((predictions['image + ST-elevation finding'][mask][mi] == 1).sum())} against "
                  f"{int((other_decision.argmax(axis=1)[mask][mi] == 1).sum())} of {int(mi.sum())}")
    changed = predictions["image + ST-elevation finding"] != predictions["image alone"]
    text = markdown(rows, gains, args.run, minutes, float(np.mean(~np.isnan(st))))
    rates = fit_st_elevation_rates(st, labels)
    text += ("\nP(criteria met | class), all pages: " + ", ".join(f"{k} {r:.3f}" for k, r in
             zip(("normal", "mi", "abnormal_heartbeat", "history_of_mi"), rates, strict=True))
             + f". Decisions changed: {int(changed.sum())} of {len(labels)}.\n")
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.write_rule:
        outside = folds != 0
        if args.base_model:
            from ecgdx.inference import Predictor

            rule = Predictor(args.base_model).rule
        else:
            rule = fit_decision_rules(logits[outside], labels[outside], prior)["balanced_prior"]
        rule = rule.with_st_elevation_rates(fit_st_elevation_rates(st[outside], labels[outside]))
        target = args.run / "decision_rule_st_without_test.json"
        target.write_text(rule.to_json())
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
