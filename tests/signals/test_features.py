"""Measured features are resolution-independent: a full-resolution colour JPEG (what users upload)
and its 50 % gray PNG twin (what the models train on) give the same features within stated
tolerances. Without this, a model on these features would learn the scan resolution."""

from __future__ import annotations

import numpy as np
import pytest
from realdata import DATA_DIR, FULLRES_DIR, label_rows, require

from ecgdx.signals.features import FEATURE_NAMES

pytest.importorskip("neurokit2")

# Tolerance per feature family, on the median over the 11 page pairs of each feature's absolute
# difference (and the share of features that may be measurable on one twin only).
TOLERANCES = {"mv": 0.03, "ms": 12.0, "bpm": 2.0, "deg": 10.0, "ratio": 0.03}
MAX_MISSING_MISMATCH = 0.05


def _family(name: str) -> str:
    if name.endswith("_bpm"):
        return "bpm"
    if name.startswith(("pr_", "qrs_", "qt_", "qtc_", "q_ms_")):
        return "ms"
    if name.startswith("axis"):
        return "deg"
    if name == "rr_irregularity":
        return "ratio"
    return "mv"


def test_feature_names_are_units_not_counts():
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 7 + 12 * 6
    assert not any("beats" in name or "samples" in name for name in FEATURE_NAMES)


@pytest.mark.slow
def test_full_resolution_jpeg_and_png_twin_give_the_same_features():
    require(FULLRES_DIR)
    from ecgdx.signals.digitize import digitize
    from ecgdx.signals.features import page_features

    pairs = [(page_features(digitize(FULLRES_DIR / row["file"])), page_features(digitize(DATA_DIR / row["same_ecg_as"])))
             for row in label_rows(FULLRES_DIR)]
    assert len(pairs) == 11
    mismatch = np.mean([np.isfinite(a[k]) != np.isfinite(b[k]) for a, b in pairs for k in FEATURE_NAMES])
    assert mismatch <= MAX_MISSING_MISMATCH, mismatch
    worst = {}
    for name in FEATURE_NAMES:
        diffs = [abs(a[name] - b[name]) for a, b in pairs if np.isfinite(a[name]) and np.isfinite(b[name])]
        if len(diffs) >= 6:
            worst[name] = float(np.median(diffs))
    assert len(worst) >= 0.8 * len(FEATURE_NAMES)
    over = {name: d for name, d in worst.items() if d > TOLERANCES[_family(name)]}
    assert not over, over
