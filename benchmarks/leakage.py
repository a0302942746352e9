"""What a leaky test set measures: a trained model on augmented copies of its own training pages.

    python benchmarks/leakage.py --run runs/honest-seed_cnn --config configs/honest.yaml

Under the seed protocol (augment first, split copies at random) most test images are augmented copies
of ECGs in the training set. This scores the run's model, with its calibration temperature, on one
fresh augmented copy of every training page and on the held-out test pages, side by side.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/honest-seed_cnn")
    parser.add_argument("--config", default="configs/honest.yaml")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)

    import torch

    from ecgdx.augmentation import build_augmentation
    from ecgdx.config import load_config
    from ecgdx.evaluation import classification_metrics, softmax
    from ecgdx.training import load_checkpoint, load_splits, predict_logits

    torch.set_num_threads(1)
    model, ckpt = load_checkpoint(args.run)
    cfg = load_config(args.config)
    splits, _ = load_splits(cfg)
    augment = build_augmentation(cfg.augment)
    rng = np.random.default_rng(args.seed)
    train = splits["train"]
    copies = [augment(image, rng) for image in train.images]
    rows = [("augmented copies of training pages", copies, train.labels),
            ("held-out test pages", splits["test"].images, splits["test"].labels)]
    print("| scored on | n | accuracy | macro-F1 | MI sensitivity |\n|---|---|---|---|---|")
    for name, images, labels in rows:
        m = classification_metrics(labels, softmax(predict_logits(model, images), ckpt.get("temperature") or 1.0))
        print(f"| {name} | {len(labels)} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
              f"{m['per_class']['mi']['recall']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
