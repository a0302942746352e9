"""Per-stage time of ``Predictor.predict`` on one thread, this tree against another, side by side.

    python benchmarks/prepare_speed.py [--against OTHER/src] [--rounds 3] [--repeats 4]
    python benchmarks/prepare_speed.py --against-model OTHER.onnx [--model M.onnx]   # two models, this tree
    python benchmarks/prepare_speed.py --model NEW.onnx --against OLD/src --against-model OLD.onnx  # both

Each round runs, in a fresh process per tree (the trees alternating, so background load hits both
alike), ``Predictor(threads=1).predict(bytes)`` on the 11 full-resolution JPEGs of $ECGDX_DATA_DIR
``--repeats`` times after one warm-up pass, with the bundled model of this tree for both (the code
is compared, not the model). Prints per round the median "preparation" (decode + normalise +
preprocess + gate, from ``Prediction.timings_ms``), then per tree the per-stage medians over all
rounds and the per-round ratios this / other, of the preparation and of the whole page ("end to end":
every stage, the network included). With ``--against-model`` the code is the same and the models
differ (e.g. a two-network model against the bundled one); with both, a new tree and model against an
old tree and model. Not a test: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from side_by_side import round_order

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECGDX_DATA_DIR", REPO.parent / "shared" / "data"))
MODEL = REPO / "src" / "ecgdx" / "assets" / "default.onnx"
PREPARATION = ("decode", "normalize", "preprocess", "gate")

_ONE_ROUND = r"""
import glob, json, os, statistics, sys
os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, sys.argv[1])
import cv2
cv2.setNumThreads(1)
from ecgdx.inference import Predictor
pages = [open(f, "rb").read() for f in sorted(glob.glob(sys.argv[2] + "/*/*.jpg"))]
predictor = Predictor(sys.argv[3], threads=1)
for page in pages:
    predictor.predict(page)
stages = {}
for _ in range(int(sys.argv[4])):
    for page in pages:
        timings = predictor.predict(page).timings_ms
        for key, value in timings.items():
            stages.setdefault(key, []).append(value)
        stages.setdefault("preparation", []).append(sum(timings[k] for k in sys.argv[5].split(",")))
        stages.setdefault("end_to_end", []).append(timings.get("total", sum(timings.values())))
print(json.dumps({key: statistics.median(values) for key, values in stages.items()}))
"""


def one_round(src: Path, repeats: int, model: Path = MODEL) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _ONE_ROUND, str(src), str(DATA / "mendeley-v1-fullres-samples"),
                          str(model), str(repeats), ",".join(PREPARATION)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another tree's src/ (e.g. a git worktree of an older commit)")
    parser.add_argument("--model", type=Path, default=MODEL, help="ONNX model (default: this tree's bundled one)")
    parser.add_argument("--against-model", type=Path, help="another model, run by this tree's code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4, help="passes over the 11 pages per round")
    args = parser.parse_args(argv)
    runs = {"this": (REPO / "src", args.model)}
    if args.against or args.against_model:
        runs["other"] = (args.against or REPO / "src", args.against_model or args.model)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for k in range(args.rounds):
        # Each tree goes first in every other round (side_by_side.round_order).
        for name, (src, model) in round_order(runs, k):
            rounds[name].append(one_round(src, args.repeats, model))
        print(f"round {k + 1}: " + ", ".join(f"{n} preparation {r[-1]['preparation']:.1f} ms, end to end "
                                             f"{r[-1]['end_to_end']:.1f} ms" for n, r in rounds.items()), flush=True)
    for name, results in rounds.items():
        medians = {stage: round(statistics.median(r[stage] for r in results), 1) for stage in results[0]}
        print(f"{name} ({runs[name][0]}, {runs[name][1].name}): " + ", ".join(f"{s} {v}" for s, v in medians.items()))
    if "other" in runs:
        for key in ("preparation", "end_to_end"):
            ratios = [t[key] / o[key] for t, o in zip(rounds["this"], rounds["other"], strict=True)]
            print(f"this / other, {key} per round: " + ", ".join(f"{r:.3f}" for r in ratios)
                  + f" (median {statistics.median(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
