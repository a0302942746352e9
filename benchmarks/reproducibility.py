"""Reproducibility check: retrain a config with the same seed and compare with a reference run.

    python benchmarks/reproducibility.py --config configs/default.yaml --reference runs/honest-ecg_pagenet

Trains ``--config`` into ``runs/<name>-repro`` (or compares two existing runs with ``--candidate``),
then compares the per-epoch training history and the test metrics of the two runs. Exit code 0 when
every headline test metric agrees within ``--tolerance`` (absolute), 1 otherwise.

Same machine, same thread count and same seed give bit-identical runs with ecgdx's seeding (the
sampler, the augmentation stream per (seed, epoch, image) and torch are all seeded); the tolerance
exists for other machines, where oneDNN may pick different kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEADLINE = ("accuracy", "macro_f1", "balanced_accuracy", "ece")


def _metrics(run: Path) -> dict:
    report = json.loads((run / "eval-test" / "report.json").read_text())
    metrics = report["overall"]["metrics"]
    out = {key: metrics[key] for key in HEADLINE}
    out["mi_sensitivity"] = metrics["per_class"]["mi"]["recall"]
    for template, group in report.get("per_group", {}).items():
        out[f"macro_f1[{template}]"] = group["metrics"]["macro_f1"]
    return out


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config to retrain (omit with --candidate)")
    parser.add_argument("--reference", required=True, help="finished run directory to compare with")
    parser.add_argument("--candidate", help="an existing second run instead of training one")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args(argv)

    reference = Path(args.reference)
    if args.candidate:
        candidate = Path(args.candidate)
    else:
        if not args.config:
            parser.error("give --config to retrain, or --candidate")
        from ecgdx.config import load_config
        from ecgdx.training import train

        cfg = load_config(args.config)
        cfg.name = f"{cfg.name}-repro"
        candidate = Path(train(cfg)["run_dir"])

    ref_hist, cand_hist = _history(reference), _history(candidate)
    same_epochs = sum(
        1 for a, b in zip(ref_hist, cand_hist, strict=False)
        if abs(a["train_loss"] - b["train_loss"]) < 1e-6 and abs(a["val_macro_f1"] - b["val_macro_f1"]) < 1e-9
    )
    print(f"epochs with identical train loss and val macro-F1: {same_epochs} of "
          f"{len(ref_hist)} (reference) / {len(cand_hist)} (candidate)")
    ref, cand = _metrics(reference), _metrics(candidate)
    worst = 0.0
    print("| metric | reference | candidate | abs. difference |\n|---|---|---|---|")
    for key in ref:
        a, b = ref[key], cand.get(key)
        if a is None or b is None:
            print(f"| {key} | {a} | {b} | n/a |")
            continue
        worst = max(worst, abs(a - b))
        print(f"| {key} | {a:.4f} | {b:.4f} | {abs(a - b):.4f} |")
    ok = worst <= args.tolerance
    print(f"largest difference {worst:.4f}: {'within' if ok else 'OUTSIDE'} the tolerance {args.tolerance}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
