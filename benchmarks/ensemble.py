"""Does averaging cross-validated models help? Out of fold, like for like.

    python benchmarks/ensemble.py runs/cv-efficientnet_lite0 runs/cv-efficientnet_lite0-page \
        [--out docs/ensemble.json] [--n-boot 1000] [--save docs/cv/PAIR]

Each run is a finished ``ecgdx cv`` directory; all must hold the same pages in the same folds
(checked). The ensemble's logits are the mean of the members' log-softmax of their out-of-fold
logits, with equal weights fixed before looking at any result (a weight tuned on these predictions
would be scored on the pages that chose it). Every member and the ensemble then go through the same
report (``ecgdx.cv.cv_report``: temperature and decision rules cross-fitted over the folds,
bootstrap CIs, per template), so the rows compare like for like. Every member must have trained
with the same class mix (sampler prior), since the balanced-prior rule undoes it.

The gain is also given as a paired bootstrap: the same resampled pages score the ensemble's and a
member's balanced-prior decisions, and the interval is that of the difference in macro-F1 (intervals
of two rows overlap far more than the interval of their paired difference does).

``--save DIR`` writes the ensemble as a run folder of its own (``oof.npz`` with the averaged logits,
the first member's ``config.yaml`` and ``st_elevation.npz``, and ``members.txt``), so that
``benchmarks/measurement_evidence.py DIR`` weighs the ST-elevation finding on it and writes its rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_oof(run: Path) -> dict[str, np.ndarray]:
    """The out-of-fold arrays of one cv run (logits, labels, templates, names, folds)."""
    path = run / "oof.npz"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: is {run} a finished `ecgdx cv` run?")
    saved = np.load(path, allow_pickle=False)
    return {key: saved[key] for key in saved.files}


def ensemble_logits(members: list[np.ndarray]) -> np.ndarray:
    """Mean of the members' log-softmax, (N, C): equal weights, so that no weight is fitted."""
    from ecgdx.decision import log_softmax_rows

    return np.mean([log_softmax_rows(logits) for logits in members], axis=0)


def paired_gain(labels: np.ndarray, ensemble_pred: np.ndarray, member_pred: np.ndarray, *, n_boot: int,
                seed: int = 0) -> dict[str, float]:
    """Macro-F1 of ensemble_pred minus that of member_pred, with a paired 95% percentile bootstrap
    interval (pages resampled with replacement, both scored on the same resample)."""
    from ecgdx.decision import macro_f1_and_recalls

    rng = np.random.default_rng(seed)
    gain = macro_f1_and_recalls(labels, ensemble_pred)[0] - macro_f1_and_recalls(labels, member_pred)[0]
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        draws.append(macro_f1_and_recalls(labels[idx], ensemble_pred[idx])[0]
                     - macro_f1_and_recalls(labels[idx], member_pred[idx])[0])
    low, high = (np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan))
    return {"gain": float(gain), "low": float(low), "high": float(high),
            "share_of_resamples_above_zero": float(np.mean(np.asarray(draws) > 0)) if draws else float("nan")}


def summary_row(name: str, report: dict) -> str:
    """One markdown row: the chosen rule's macro-F1 (CI) and sensitivities, overall and per template."""
    from ecgdx.cv import _fmt as fmt  # the cv report's own cell format: value (low–high)

    rule = report["chosen_rule"]
    block = report["rules"][rule]
    overall = block["all"]
    cells = [name, rule, fmt(overall["macro_f1"])]
    cells += [fmt(overall["sensitivity"][key]) for key in ("mi", "history_of_mi", "abnormal_heartbeat", "normal")]
    cells += [fmt(block[t]["macro_f1"]) for t in ("3x4_grid", "6x2_nogrid") if t in block]
    cells += [f"{overall['ece']:.3f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="two or more finished `ecgdx cv` run directories")
    parser.add_argument("--out", type=Path, default=None, help="write every report here (JSON)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--save", type=Path, default=None, help="write the ensemble's out-of-fold logits as a run folder")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two cv runs to average")

    from ecgdx.config import load_config
    from ecgdx.cv import _sampler_prior, cv_report

    oofs = [load_oof(run) for run in args.runs]
    first = oofs[0]
    for run, oof in zip(args.runs[1:], oofs[1:], strict=True):
        for key in ("names", "labels", "folds"):
            if not np.array_equal(oof[key], first[key]):
                raise SystemExit(f"{run} holds other pages or folds ({key}) than {args.runs[0]}: "
                                 "only runs over the same folds can be averaged")
    labels, templates, folds = first["labels"], first["templates"], first["folds"]
    priors = [_sampler_prior(load_config(run / "config.yaml", []), labels) for run in args.runs]
    if any(not np.allclose(prior, priors[0]) for prior in priors):
        raise SystemExit("the runs trained with different class mixes; their balanced priors differ")

    rows: dict[str, dict] = {}
    for run, oof in zip(args.runs, oofs, strict=True):
        rows[run.name] = cv_report(oof["logits"], labels, templates, folds, priors[0], n_boot=args.n_boot)
    averaged = ensemble_logits([oof["logits"] for oof in oofs])
    ensemble_name = "mean of " + " + ".join(run.name for run in args.runs)
    rows[ensemble_name] = cv_report(averaged, labels, templates, folds, priors[0], n_boot=args.n_boot)

    from ecgdx.cv import _cross_fitted

    def balanced_decisions(logits: np.ndarray) -> np.ndarray:
        return _cross_fitted(logits, labels, folds, priors[0])["balanced_prior"][0].argmax(axis=1)

    ensemble_pred = balanced_decisions(averaged)
    gains = {run.name: paired_gain(labels, ensemble_pred, balanced_decisions(oof["logits"]), n_boot=args.n_boot)
             for run, oof in zip(args.runs, oofs, strict=True)}

    print(f"{len(labels)} pages, {len(np.unique(folds))} folds, out of fold, 95% bootstrap CIs ({args.n_boot})")
    print("| model | rule | macro-F1 all | MI sens. | History-of-MI sens. | Abnormal sens. | Normal sens. "
          "| macro-F1 3x4_grid | macro-F1 6x2_nogrid | ECE (data prior) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, report in rows.items():
        print(summary_row(name, report))
    for name, gain in gains.items():
        print(f"ensemble minus {name}: macro-F1 {gain['gain']:+.3f} (paired 95% CI {gain['low']:+.3f} to "
              f"{gain['high']:+.3f}; above zero in {100 * gain['share_of_resamples_above_zero']:.1f} % of resamples)")
    if args.out:
        args.out.write_text(json.dumps({"runs": [str(r) for r in args.runs], "weights": "equal, fixed beforehand",
                                        "paired_gain_balanced_prior": gains, "reports": rows}, indent=2))
        print(f"wrote {args.out}")
    if args.save:
        save_run(args.save, args.runs, first, averaged)
        print(f"wrote {args.save}")
    return 0


def save_run(folder: Path, runs: list[Path], first: dict[str, np.ndarray], averaged: np.ndarray) -> None:
    """The ensemble's out-of-fold logits as a run folder (see the module docstring)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "oof.npz", **{**first, "logits": averaged.astype(np.float32)})
    shutil.copyfile(runs[0] / "config.yaml", folder / "config.yaml")
    if (runs[0] / "st_elevation.npz").exists():
        shutil.copyfile(runs[0] / "st_elevation.npz", folder / "st_elevation.npz")
    (folder / "members.txt").write_text(
        "Mean of the members' log-softmax, equal weights (benchmarks/ensemble.py --save):\n"
        + "".join(f"{run}\n" for run in runs))


if __name__ == "__main__":
    raise SystemExit(main())
