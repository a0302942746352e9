"""Orientation and page-line perspective: accuracy on real pages and cost per page.

    python benchmarks/orientation.py [--data ../shared/data/mendeley-v1-dev] [--step 1]
        [--distortion KIND:LEVEL] [--no-timing] [--json out.json]

Every ``--step``-th development PNG (labels.csv order) is turned counter-clockwise by 0, 90, 180 and
270 degrees and ``ecgdx.page.orientation.detect_orientation`` must find the turn that puts it upright
(0 for the upright page: a false turn there is the costly error). Reported per turn and template,
with the upright pages ``normalize_page`` changed at all (a clean scan must pass unchanged) and the
milliseconds of ``detect_orientation``, of ``ecgdx.page.normalize.page_perspective`` (run on
the upright pages, where it must find nothing to correct) and of the whole ``normalize_page``.
Timings are medians over the pages, one process, one thread. ``--distortion`` first distorts every
page as ``benchmarks/robustness.py`` does (seeded per page), for the accuracy under photo-like damage.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mendeley-v1-dev"))
    parser.add_argument("--step", type=int, default=1, help="use every STEP-th page (default: all)")
    parser.add_argument("--distortion", default="clean", metavar="KIND:LEVEL",
                        help="distort each page first, as benchmarks/robustness.py does (e.g. rotation:10)")
    parser.add_argument("--no-timing", action="store_true", help="orientation accuracy only")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    from ecgdx.page.normalize import normalize_page, page_perspective
    from ecgdx.page.orientation import detect_orientation

    data = Path(args.data)
    if not (data / "labels.csv").is_file():
        sys.exit(f"orientation: no labels.csv in {data}")
    with open(data / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:: max(1, args.step)]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness import distort

    kind, _, level = args.distortion.partition(":")
    level = level if kind == "photo" else float(level or 0)
    right, total, wrong = Counter(), Counter(), []
    timings: dict[str, list[float]] = {"detect_orientation": [], "page_perspective": [], "normalize_page": []}
    perspective_acted, normalized = 0, []
    for index, row in enumerate(rows):
        gray = cv2.imread(str(data / row["file"]), cv2.IMREAD_GRAYSCALE)
        gray = distort(gray, kind, level, np.random.default_rng(index))
        for quarters in range(4):
            picture = np.ascontiguousarray(np.rot90(gray, quarters))
            started = time.perf_counter()
            found = detect_orientation(picture).turn
            timings["detect_orientation"].append(time.perf_counter() - started)
            key = (90 * quarters, row["template"])
            total[key] += 1
            if found == (4 - quarters) % 4 * 90:
                right[key] += 1
            else:
                wrong.append({"file": row["file"], "turned_ccw": 90 * quarters, "found": found})
        if args.no_timing:
            continue
        started = time.perf_counter()
        matrix, _ = page_perspective(gray)
        timings["page_perspective"].append(time.perf_counter() - started)
        perspective_acted += matrix is not None
        started = time.perf_counter()
        _, record = normalize_page(gray)
        timings["normalize_page"].append(time.perf_counter() - started)
        if record.applied:
            normalized.append({"file": row["file"], "applied": record.applied})
    summary = {
        "pages": len(rows),
        "distortion": args.distortion,
        "accuracy": {f"{turn} {template}": f"{right[(turn, template)]}/{n}" for (turn, template), n in sorted(total.items())},
        "overall": f"{sum(right.values())}/{sum(total.values())}",
        "wrong": wrong,
        "page_perspective_acted_on_upright_pages": None if args.no_timing else perspective_acted,
        "normalize_page_acted_on_upright_pages": None if args.no_timing else normalized,
        "median_ms": {name: round(1000 * statistics.median(values), 2) for name, values in timings.items() if values},
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
