"""Measurement model: a gradient-boosted classifier on measured features of the digitised leads,
cross-validated on the folds of an `ecgdx cv` run, alone and stacked with that run's image model.

    python benchmarks/measurement_model.py --cv-run runs/cv-efficientnet_lite0 --jobs 2

1. Digitise every page of the run's folds.csv (``ecgdx.signals.digitize``) and compute ``ecgdx.signals.features``
   (cached in RUN/features.npz; a rerun reads the cache).
2. Out-of-fold predictions on the same folds: scikit-learn's HistGradientBoostingClassifier
   (balanced class weights, NaN handled natively) on the features; and a stack, the same booster on
   the features plus the image model's out-of-fold logits. Both decide at a balanced prior (argmax
   of class-balanced probabilities), like the bundled model.
3. Macro-F1 and per-class sensitivity with bootstrap CIs, overall and per template, beside the
   image model alone; written to RUN/measurement_model.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ecgdx.labels import CLASS_KEYS, TEMPLATES


def _features_of(path: str) -> list[float]:
    from ecgdx.signals.digitize import digitize
    from ecgdx.signals.features import FEATURE_NAMES, page_features

    try:
        values = page_features(digitize(path))
    except Exception:  # an unreadable page: every feature missing, the booster still sees it
        return [float("nan")] * len(FEATURE_NAMES)
    return [values[name] for name in FEATURE_NAMES]


def load_features(run: Path, data_root: Path, jobs: int) -> np.ndarray:
    cache = run / "features.npz"
    with open(run / "folds.csv", newline="") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    if cache.exists():
        saved = np.load(cache)
        if saved["names"].tolist() == names:
            return saved["features"]
    from tqdm import tqdm

    paths = [str(data_root / name) for name in names]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        rows = list(tqdm(pool.map(_features_of, paths, chunksize=4), total=len(paths), desc="digitising"))
    features = np.asarray(rows, np.float64)
    np.savez(cache, features=features, names=np.asarray(names), seconds=time.perf_counter() - t0)
    return features


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier

    probs = np.zeros((len(y), len(CLASS_KEYS)))
    for k in np.unique(folds):
        held = folds == k
        model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                               l2_regularization=1.0, class_weight="balanced", random_state=seed)
        model.fit(x[~held], y[~held])
        probs[held] = model.predict_proba(x[held])
    return probs


def _row(name: str, y: np.ndarray, probs: np.ndarray, templates: np.ndarray) -> list[str]:
    from ecgdx.evaluation import bootstrap_ci

    cells = [name]
    for group in ["all", *TEMPLATES]:
        mask = np.ones(len(y), bool) if group == "all" else templates == group
        ci = bootstrap_ci(y[mask], probs[mask], n_boot=1000, seed=0)
        f1 = ci["macro_f1"]
        cells.append(f"{f1['value']:.3f} ({f1['low']:.2f}–{f1['high']:.2f})")
        if group == "all":
            for key in CLASS_KEYS:
                s = ci[f"sensitivity_{key}"]
                cells.append("–" if s["value"] is None else f"{s['value']:.3f}")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-run", type=Path, required=True, help="an `ecgdx cv` run directory")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/mendeley-v1-dev"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    from ecgdx.decision import DecisionRule

    oof = np.load(args.cv_run / "oof.npz")
    y, folds, templates = oof["labels"], oof["folds"], oof["templates"]
    features = load_features(args.cv_run, args.data_root, args.jobs)
    image = DecisionRule(name="balanced_prior").balanced_probabilities(oof["logits"])
    alone = out_of_fold(features, y, folds)
    stacked = out_of_fold(np.hstack([features, oof["logits"]]), y, folds)
    header = ["model", "macro-F1 all (95% CI)", *(f"sens. {k}" for k in CLASS_KEYS),
              *(f"macro-F1 {t}" for t in TEMPLATES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, probs in (("image model (the cv run)", image), ("measurements, boosted trees", alone),
                        ("stack: measurements + image logits", stacked)):
        lines.append("| " + " | ".join(_row(name, y, probs, templates)) + " |")
    table = "\n".join(lines)
    measurable = np.isfinite(features).mean(axis=0)
    note = (f"\n\n{len(y)} pages, {len(np.unique(folds))} folds of {args.cv_run}; features measurable on "
            f"{100 * np.median(measurable):.0f} % of pages (median over features); digitising took "
            f"{float(np.load(args.cv_run / 'features.npz')['seconds']) / 60:.1f} min with {args.jobs} processes.\n")
    (args.cv_run / "measurement_model.md").write_text(table + note)
    print(table + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
