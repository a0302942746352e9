"""Speed of digitise + measure on full-resolution JPEG pages, optionally side by side with another tree.

    python benchmarks/digitize_speed.py [--rounds 5] [--against OTHER/src] [--json out.json]

Each round digitises (``ecgdx.signals.digitize.digitize``) and measures (``ecgdx.signals.measure``)
the 11 full-resolution colour JPEGs of shared/data from in-memory bytes, in a fresh worker process
per source tree, one thread (OpenCV, OpenMP). With ``--against`` the two trees' workers alternate
round by round, so background load hits both alike; the report gives per-page medians over all
rounds, the per-stage medians from ``DigitizedECG.timings_ms`` and the ratio of the two medians.
The target of issue 13 is a median <= 150 ms per page.
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

DEFAULT_DATA = Path(os.environ.get("ECGDX_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
SRC = Path(__file__).resolve().parents[1] / "src"

WORKER = r"""
import glob, json, os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, sys.argv[1])
import cv2
cv2.setNumThreads(1)
from ecgdx.labels import LEADS
from ecgdx.signals.digitize import digitize
from ecgdx.signals.measure import measure

pages = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(sys.argv[2], "**", "*.jpg"), recursive=True))]
digitize(pages[0])  # warm-up: imports, caches
rows = []
for data in pages:
    t0 = time.perf_counter()
    ecg = digitize(data)
    t1 = time.perf_counter()
    measure({lead: ecg.signals[i] for i, lead in enumerate(LEADS)}, ecg.fs, rhythm=ecg.rhythm)
    t2 = time.perf_counter()
    rows.append({"total": 1000 * (t2 - t0), "measure": 1000 * (t2 - t1), **ecg.timings_ms})
print(json.dumps(rows))
"""


def run_round(src: Path, pages: Path) -> list[dict]:
    """One worker process over every page; returns its per-page timing rows (ms)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(src), str(pages)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(rows: list[dict]) -> dict:
    """Medians (ms) of every timed stage over all pages and rounds."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: round(statistics.median(r[k] for r in rows), 1) for k in keys} | {"pages_timed": len(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, default=None, help="another tree's src/ to time side by side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    pages = args.data / "mendeley-v1-fullres-samples"
    if not pages.is_dir():
        print(f"no full-resolution samples at {pages}", file=sys.stderr)
        return 2
    trees = {"this tree": SRC} | ({"against": args.against.resolve()} if args.against else {})
    rows: dict[str, list[dict]] = {name: [] for name in trees}
    for k in range(args.rounds):
        # Each tree goes first in every other round (side_by_side.round_order).
        for name, src in round_order(trees, k):
            rows[name] += run_round(src, pages)
        print(f"round {k + 1}/{args.rounds}: " + ", ".join(
            f"{name} {statistics.median(r['total'] for r in rows[name]):.0f} ms" for name in trees), flush=True)
    report = {name: summary(r) for name, r in rows.items()}
    if args.against:
        report["ratio_this_over_against"] = round(report["this tree"]["total"] / report["against"]["total"], 3)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
