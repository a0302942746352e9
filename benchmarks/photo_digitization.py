"""Are photographed pages read fully? Digitisation of the robustness benchmark's simulated photos.

    python benchmarks/photo_digitization.py [--manifest data/manifest.csv] [--split test] [--every 9]
        [--json out.json]

Every ``--every``-th page of the split is "photographed" as ``benchmarks/robustness.py`` does it
(tilt up to 5 degrees, the sheet on a table in 2 % perspective, a 20 % shadow, JPEG 50; seeded per
page) and digitised (``ecgdx.signals.digitize``, which straightens the page first). Reported per
page and in total: whether the page was read at all, whether its rhythm strip was found (pages
whose clean scan has none, the 6x2 gridded ones, are counted apart), the median lead confidence,
and the rhythm lead read from the strip's label, against the same page's clean scan.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def read(gray: np.ndarray) -> dict:
    """What digitising one page gives: rhythm strip, its lead, median confidence (or the refusal)."""
    from ecgdx.errors import EcgdxError
    from ecgdx.signals.digitize import digitize

    try:
        ecg = digitize(gray)
    except EcgdxError as exc:
        return {"read": False, "reason": str(exc)}
    return {"read": True, "template": ecg.template, "rhythm": ecg.rhythm is not None,
            "rhythm_lead": getattr(ecg, "rhythm_lead", None),
            "median_confidence": round(float(np.median(list(ecg.confidence.values()))), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=9, help="use every N-th page of the split (default 9)")
    parser.add_argument("--json", help="write the per-page results here")
    args = parser.parse_args(argv)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest}; make one with `ecgdx data index DATA_DIR --out {manifest}`")
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == args.split][:: max(1, args.every)]
    from robustness import distort  # the sibling script (benchmarks/ is on sys.path when run)

    started = time.perf_counter()
    pages = []
    for index, row in enumerate(rows):
        gray = cv2.imread(row["path"], cv2.IMREAD_GRAYSCALE)
        photo = distort(gray, "photo", "moderate", np.random.default_rng([index, 7]))
        pages.append({"page": row["relpath"], "clean": read(gray), "photo": read(photo)})
    with_strip = [p for p in pages if p["clean"].get("rhythm")]
    summary = {
        "pages": len(pages),
        "photos_read": sum(p["photo"]["read"] for p in pages),
        "clean_pages_with_a_strip": len(with_strip),
        "photos_with_the_strip_found": sum(bool(p["photo"].get("rhythm")) for p in with_strip),
        "photos_with_the_same_rhythm_lead": sum(p["photo"].get("rhythm_lead") == p["clean"].get("rhythm_lead")
                                                for p in with_strip),
        "photos_median_lead_confidence_at_least_0.8": sum(p["photo"].get("median_confidence", 0) >= 0.8 for p in pages),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "pages": pages}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
