"""Page normalisation: clean scans pass unchanged; photographed sheets are straightened."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ecgdx.inference import Predictor
from ecgdx.normalize import find_sheet, normalize_page, rotate_page
from ecgdx.preprocessing import load_page

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.png"))


def _photo(gray: np.ndarray, *, shadow: float = 0.35, background: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """The page as if photographed on a dark table: perspective, a margin, a shadow from one side."""
    h, w = gray.shape
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    placed = np.float32([[200, 150], [w + 230, 120], [w + 260, h + 190], [170, h + 150]])
    size = (int(w * 1.45), int(h * 1.5))
    photo = cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, placed), size,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    xx = np.arange(size[0], dtype=np.float32)[None, :] / size[0]
    photo = np.clip(photo * (1.0 - shadow * xx), 0, 255).astype(np.uint8)
    return photo, placed


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_a_clean_scan_passes_unchanged(path):
    gray = load_page(path).gray
    out, info = normalize_page(gray)
    assert info.applied == [] and info.sheet is None
    assert out is gray or np.array_equal(out, gray)


def test_a_photographed_sheet_is_found_flattened_and_evened_out():
    gray = load_page(EXAMPLES[0]).gray
    photo, placed = _photo(gray)
    quad = find_sheet(photo)
    assert quad is not None
    assert np.abs(quad - placed).max() < 12  # corners within ~1 % of the sheet size
    out, info = normalize_page(photo)
    assert any(step.startswith("perspective") for step in info.applied)
    assert any(step.startswith("lighting") for step in info.applied)
    h, w = gray.shape
    assert abs(out.shape[1] / out.shape[0] - w / h) < 0.05
    # The paper is white again on both sides of the page, not dark where the shadow was.
    right, left = np.percentile(out[:, -60:-10], 90), np.percentile(out[:, 10:60], 90)
    assert abs(float(right) - float(left)) < 20


@pytest.mark.parametrize("angle", [-8.0, -3.0, 2.0, 6.5])
def test_rotation_is_measured_and_undone(angle):
    gray = load_page(EXAMPLES[1]).gray
    tilted = rotate_page(gray, -angle)  # tilt counter-clockwise by `angle`
    out, info = normalize_page(tilted)
    assert info.rotation_deg == pytest.approx(angle, abs=0.15)
    assert any(step.startswith("rotation") for step in info.applied)
    inner = (slice(120, -120), slice(160, -160))  # away from the white corners the rotation adds
    assert np.abs(out[inner].astype(int) - gray[inner].astype(int)).mean() < 12


def test_the_predictor_reads_a_photo_like_its_scan():
    predictor = Predictor()
    for path in EXAMPLES:
        gray = load_page(path).gray
        clean = predictor.predict(gray)
        photo, _ = _photo(rotate_page(gray, -3.0))
        straightened = predictor.predict(photo)
        assert straightened.gate.ok, straightened.gate.reasons
        assert straightened.label == clean.label, path.name
        assert straightened.preprocess["normalization"]["applied"]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        normalize_page(np.zeros((10, 10), np.float32))
