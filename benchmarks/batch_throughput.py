"""``Predictor(threads=2).predict_many`` throughput of this tree against another, side by side.

    python benchmarks/batch_throughput.py [--against OTHER/src] [--rounds 6] [--copies 8]

Each round is ``benchmarks/inference.py``'s batch measurement (``batch_throughput``: the 11
full-resolution JPEGs of $ECGDX_DATA_DIR, ``--copies`` times over, from memory, batches of 16, the
bundled model of this tree) in a fresh process per tree, with that tree's ``ecgdx`` imported, the
trees alternating round by round so both see the same machine. Prints pages per second per round, the medians, and the median of
the per-round ratios (this tree / the other). Not a test: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from side_by_side import round_order

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECGDX_DATA_DIR", REPO.parent / "shared" / "data"))

MODEL = REPO / "src" / "ecgdx" / "assets" / "default.onnx"  # one model for both trees: the code is compared

_ONE_ROUND = """
import glob, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from inference import batch_throughput
pages = [open(f, "rb").read() for f in sorted(glob.glob(sys.argv[3] + "/*/*.jpg"))]
print(batch_throughput(sys.argv[4], pages, len(pages) * int(sys.argv[5]))["batch_images_per_s_2_threads"])
"""


def one_round(src: Path, copies: int) -> float:
    out = subprocess.run([sys.executable, "-c", _ONE_ROUND, str(src), str(REPO / "benchmarks"),
                          str(DATA / "mendeley-v1-fullres-samples"), str(MODEL), str(copies)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another tree's src/ (e.g. a git worktree of an older commit)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--copies", type=int, default=8)
    args = parser.parse_args(argv)
    trees = {"this": REPO / "src"} | ({"other": args.against} if args.against else {})
    speeds: dict[str, list[float]] = {name: [] for name in trees}
    for k in range(args.rounds):
        # Each tree goes first in every other round (side_by_side.round_order).
        for name, src in round_order(trees, k):
            speeds[name].append(one_round(src, args.copies))
        print(f"round {k + 1}: " + ", ".join(f"{n} {s[-1]:.1f} pages/s" for n, s in speeds.items()), flush=True)
    for name, values in speeds.items():
        print(f"{name} ({trees[name]}): median {statistics.median(values):.1f} pages/s")
    if args.against:
        ratios = [a / b for a, b in zip(speeds["this"], speeds["other"], strict=True)]
        print(f"this / other: median of per-round ratios {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
