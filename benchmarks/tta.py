"""Does test-time augmentation help? Out-of-fold, with the cross-validation's own fold models.

    python benchmarks/tta.py --run runs/cv-efficientnet_lite0 [--out docs/tta.json]

Each fold's model (``fold-K/best.pt``, the last epoch) reads its held-out pages as they are and
under small geometric views chosen beforehand, within the training augmentation's ranges (shift
3 %, scale 5 %): shifts of 1.5 % left/right/up/down and scales of 0.975 and 1.025. The logits of
the views are averaged. Both the plain and the averaged logits then go through the same
cross-validation report (``ecgdx.cv.cv_report``: cross-fitted temperature and decision rules,
bootstrap CIs, per template), so the two rows are compared like for like. The decision is made on
folds 1..4 (the test split, fold 0, is reported separately and not used to decide). Needs the
``train`` extra and the run's page cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

VIEWS = {  # name -> (dx, dy, scale) as fractions of the width/height
    "shift_left": (-0.015, 0.0, 1.0), "shift_right": (0.015, 0.0, 1.0),
    "shift_up": (0.0, -0.015, 1.0), "shift_down": (0.0, 0.015, 1.0),
    "zoom_out": (0.0, 0.0, 0.975), "zoom_in": (0.0, 0.0, 1.025),
}


def view(image: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """(H, W) uint8 page moved by (dx, dy) x its size and scaled about its centre; white fills the edge."""
    h, w = image.shape
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 0.0, scale)
    matrix[0, 2] += dx * w
    matrix[1, 2] += dy * h
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/cv-efficientnet_lite0", help="a finished `ecgdx cv` run directory")
    parser.add_argument("--out", default="docs/tta.json")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)

    from ecgdx.config import load_config
    from ecgdx.cv import _all_pages, _sampler_prior, cv_report
    from ecgdx.training import load_checkpoint, predict_logits

    run = Path(args.run)
    cfg = load_config(run / "config.yaml", [])
    pages, _, _, _ = _all_pages(cfg)
    saved = np.load(run / "oof.npz")
    folds, labels, templates = saved["folds"], saved["labels"], saved["templates"]
    assert (labels == pages.labels).all(), "the run's pages differ from the manifest's now"
    plain = np.zeros_like(saved["logits"])
    averaged = np.zeros_like(saved["logits"])
    started = time.perf_counter()
    for k in np.unique(folds):
        held = np.flatnonzero(folds == k)
        model, _ = load_checkpoint(run / f"fold-{k}" / "best.pt")
        images = [pages.images[i] for i in held]
        base = predict_logits(model, images, channels_last=cfg.train.channels_last)
        views = [predict_logits(model, [view(im, *spec) for im in images], channels_last=cfg.train.channels_last)
                 for spec in VIEWS.values()]
        plain[held] = base
        averaged[held] = np.mean([base, *views], axis=0)
        print(f"fold {k}: {len(held)} pages, {time.perf_counter() - started:.0f} s", flush=True)
    drift = float(np.abs(plain - saved["logits"]).max())
    prior = _sampler_prior(cfg, labels)
    outside = folds != 0
    result = {"run": str(run), "views": VIEWS, "max_logit_difference_to_stored_oof": drift, "rows": {}}
    for name, logits in (("plain", plain), ("tta_7_views", averaged)):
        report = cv_report(logits[outside], labels[outside], templates[outside], folds[outside], prior,
                           n_boot=args.n_boot)
        rule = report["rules"][report["chosen_rule"]]
        test = cv_report(logits, labels, templates, folds, prior, n_boot=0)["rules"][report["chosen_rule"]]
        result["rows"][name] = {"chosen_rule": report["chosen_rule"], "folds_1_4": rule,
                                "all_folds_including_test": test["all"]}
        block = rule["all"]
        print(f"{name:12s} folds 1-4: macro-F1 {block['macro_f1']}, MI sensitivity {block['sensitivity']['mi']}, "
              f"rule {report['chosen_rule']}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
