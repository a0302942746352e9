"""Training speed on this CPU: seconds per epoch of 1,000 images, per model, with and without tcmalloc.

Runs each configuration in a fresh subprocess (LD_PRELOAD can only be set at process start),
alternating the allocators so machine noise hits both alike, and reports medians.

    python benchmarks/train_speed.py --models seed_cnn,ecg_pagenet --size 384 --batches 12 --repeats 3

The epoch time is extrapolated from timed batches (after warm-up) of the real training step:
augmentation in a DataLoader worker, channels_last, AdamW, cross-entropy, batch 16.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, torch
from ecgdx.augmentation import build_augmentation
from ecgdx.config import AugmentConfig
from ecgdx.models import create_model
from ecgdx.training import SplitData, make_torch_dataset
name, size, batches, batch_size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 16, int(sys.argv[4])
bf16 = sys.argv[5] == "bf16"
rng = np.random.default_rng(0)
n = batch_size * (batches + 3)
images = [np.where(rng.random((size, size)) < 0.03, 0, 255).astype(np.uint8) for _ in range(n)]
split = SplitData(images, rng.integers(0, 4, n), ["x"] * n, ["x"] * n)
loader = torch.utils.data.DataLoader(make_torch_dataset(split, build_augmentation(AugmentConfig())),
                                     batch_size=batch_size, num_workers=workers, drop_last=True)
model = create_model(name).to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(model.parameters(), 1e-3)
loss_fn = torch.nn.CrossEntropyLoss()
times = []
t = time.perf_counter()
for i, (x, y) in enumerate(loader):
    x = x.contiguous(memory_format=torch.channels_last)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss_fn(logits.float(), y).backward(); opt.step()
    now = time.perf_counter()
    if i >= 3:
        times.append(now - t)
    t = now
per_batch = float(np.median(times))
print(json.dumps({"seconds_per_1000_images": per_batch * 1000 / batch_size, "ms_per_batch": per_batch * 1000}))
"""


def run_child(model: str, size: int, batches: int, workers: int, tcmalloc: str | None, precision: str) -> float:
    env = dict(os.environ, ECGDX_NO_TCMALLOC="1")
    env.pop("LD_PRELOAD", None)
    if tcmalloc:
        env["LD_PRELOAD"] = tcmalloc
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(size), str(batches), str(workers), precision],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_1000_images"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="seed_cnn,ecg_pagenet")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per run (after 3 warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    libraries = sorted(glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4"))
    variants = {("glibc", p): None for p in args.precisions.split(",")}
    if libraries:
        variants.update({("tcmalloc", p): libraries[0] for p in args.precisions.split(",")})
    results = {}
    for model in args.models.split(","):
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
        for _ in range(args.repeats):
            for (alloc, precision), lib in variants.items():  # interleaved so drift affects all alike
                samples[(alloc, precision)].append(run_child(model, args.size, args.batches, args.workers, lib,
                                                             precision))
        results[model] = {f"{a}/{p}": statistics.median(v) for (a, p), v in samples.items()}
    print(f"| model | input | allocator/precision | s per 1,000 images (median of {args.repeats}) | "
          "speed vs glibc/fp32 |")
    print("|---|---|---|---|---|")
    for model, by_variant in results.items():
        base = by_variant.get("glibc/fp32") or next(iter(by_variant.values()))
        for name, seconds in by_variant.items():
            print(f"| {model} | {args.size}x{args.size} | {name} | {seconds:.1f} | {base / seconds:.2f}x |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"size": args.size, "workers": args.workers, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
