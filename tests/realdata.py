"""Where the real data lives for tests, and small helpers to read it.

Tests that need the real dataset read ``ECGDX_DATA_DIR`` (default ``<repo>/../shared/data``) and are
skipped only when the folder they need is absent.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

DATA_DIR = Path(os.environ.get("ECGDX_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DEV_DIR = DATA_DIR / "mendeley-v1-dev"
FULLRES_DIR = DATA_DIR / "mendeley-v1-fullres-samples"
CINC_DIR = DATA_DIR / "ecg-signal-samples" / "cinc2021"


def require(folder: Path) -> None:
    """Skip the calling test when ``folder`` is not there."""
    if not folder.is_dir():
        pytest.skip(f"data folder {folder} not found (set ECGDX_DATA_DIR)")


def label_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/labels.csv``."""
    with open(folder / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def sample_dev_rows(per_group: int, exclude: frozenset[str] | set[str] = frozenset()) -> list[dict[str, str]]:
    """Deterministic sample: up to per_group files, evenly spread, per (class, template) group."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in sorted(label_rows(DEV_DIR), key=lambda r: r["file"]):
        if row["file"] not in exclude:
            groups[(row["label"], row["template"])].append(row)
    sample = []
    for key in sorted(groups):
        rows = groups[key]
        idx = np.unique(np.linspace(0, len(rows) - 1, min(per_group, len(rows))).round().astype(int))
        sample.extend(rows[i] for i in idx)
    return sample
