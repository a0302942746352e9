"""Is the digitiser's narrow residual-tilt search (``digitize._RESIDUAL_RANGE``) safe on real pages?

    python benchmarks/deskew_range.py [--every 10] [--tilts 0,2.5,-6,11,-14.5]

After ``normalize_page`` (its coarse rotation, 0.1 deg steps) the digitiser measures what tilt is
left with ``estimate_skew``. This script tilts every N-th development page and the full-resolution
JPEGs by each angle, normalises them, and compares the fine search over the narrow range with the
search over +/-15 deg (the range used before). It prints every page where they differ, the count,
and the largest residual found; exit status 1 when any page differs.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import cv2

from ecgdx.page.analysis import PageAnalysis
from ecgdx.page.normalize import normalize_page, rotate_page
from ecgdx.page.preprocessing import decode_image
from ecgdx.page.primitives import estimate_skew
from ecgdx.signals.digitize import _RESIDUAL_RANGE

DEFAULT_DATA = Path(os.environ.get("ECGDX_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def pages(data: Path, every: int) -> list[Path]:
    """Every ``every``-th development page (labels.csv order) and all full-resolution samples."""
    dev = data / "mendeley-v1-dev"
    with open(dev / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [dev / row["file"] for row in rows[::every]] + sorted((data / "mendeley-v1-fullres-samples").glob("*/*.jpg"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--tilts", default="0,2.5,-6,11,-14.5", help="degrees, comma-separated")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    tilts = [float(t) for t in args.tilts.split(",")]
    checked = differ = 0
    largest = 0.0
    for path in pages(args.data, args.every):
        gray = decode_image(path.read_bytes())
        for tilt in tilts:
            page, _ = normalize_page(rotate_page(gray, tilt) if tilt else gray)
            flat = PageAnalysis(page).flat
            wide = estimate_skew(page, max_angle=15.0, working_flat=flat)
            narrow = estimate_skew(page, max_angle=_RESIDUAL_RANGE, working_flat=flat)
            checked += 1
            largest = max(largest, abs(wide))
            if narrow != wide:
                differ += 1
                print(f"differs: {path.name} tilted {tilt:+.1f} deg: +/-15 deg {wide:+.2f}, "
                      f"+/-{_RESIDUAL_RANGE:g} deg {narrow:+.2f}", flush=True)
    print(f"{checked} page tilts, {differ} differ; largest residual over +/-15 deg: {largest:.2f} deg")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
