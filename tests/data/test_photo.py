"""Simulated photos for training (ecgdx.data.photo) and their cache (ecgdx.data.cache.load_photo_variants)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from realdata import DEV_DIR, require, sample_dev_rows

from ecgdx.data.cache import load_photo_variants, load_preprocessed
from ecgdx.data.photo import photograph
from ecgdx.page.preprocessing import PreprocessSpec


def _page() -> np.ndarray:
    """A page-like picture whose left and top differ from its right and bottom (to see flips)."""
    page = np.full((300, 420), 255, np.uint8)
    for y in range(20, 300, 20):
        page[y, :] = 225  # grid rows
    x = np.arange(40, 400)
    trace = (150 - 60 * np.exp(-(((x - 120) / 6.0) ** 2)) + 0.1 * (x - 40)).astype(int)
    page[trace, x] = 0
    page[trace + 1, x] = 0
    cv2.putText(page, "I", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    return page


def test_photograph_is_seeded_and_changes_the_page():
    page = _page()
    first = photograph(page, np.random.default_rng(3))
    again = photograph(page, np.random.default_rng(3))
    other = photograph(page, np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.uint8 and first.ndim == 2
    assert first.shape != other.shape or np.abs(first.astype(int) - other.astype(int)).mean() > 1.0
    same_size = [photograph(page, np.random.default_rng(s)) for s in range(12)]
    assert any(p.shape == page.shape and np.abs(p.astype(int) - page.astype(int)).mean() > 1.0 for p in same_size)


def test_photograph_never_flips_the_page():
    # A black square in the top-left quarter must stay in the top-left quarter of every photo
    # (a flip would move it to another quarter; tilt and perspective move it by a few percent).
    page = _page()
    page[40:90, 40:100] = 0
    for seed in range(24):
        photo = photograph(page, np.random.default_rng(seed))
        darkest = np.unravel_index(np.argmin(cv2.GaussianBlur(photo, (0, 0), 6.0)), photo.shape)
        assert darkest[0] < photo.shape[0] / 2 and darkest[1] < photo.shape[1] / 2, (seed, darkest, photo.shape)


def test_photograph_says_what_it_needs():
    with pytest.raises(ValueError, match="uint8"):
        photograph(np.zeros((10, 10, 3), np.uint8), np.random.default_rng(0))


def test_photo_variants_are_cached_preprocessed_photos_of_real_pages(tmp_path):
    require(DEV_DIR)
    rows = sample_dev_rows(1)[:2]
    paths = [str(DEV_DIR / r["file"]) for r in rows]
    hashes = [f"{i:064x}" for i in range(1, len(rows) + 1)]
    spec = PreprocessSpec(height=128, width=256, layout="canonical")
    clean = load_preprocessed(paths, hashes, spec, tmp_path, workers=1, progress=False)
    variants = load_photo_variants(paths, hashes, spec, tmp_path, 2, seed=0, workers=1, progress=False)
    assert [len(v) for v in variants] == [2, 2]
    for page, photos in zip(clean, variants, strict=True):
        for photo in photos:
            assert photo.shape == page.shape == (128, 256)
            # A photo of the same page, read back through normalisation: close to the clean input,
            # but not the same picture.
            assert 0.0 < np.abs(photo.astype(int) - page.astype(int)).mean() < 40.0
        assert not np.array_equal(photos[0], photos[1])
    again = load_photo_variants(paths, hashes, spec, tmp_path, 2, seed=0, workers=1, progress=False)
    for first, second in zip(variants, again, strict=True):
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
    assert load_photo_variants(paths, hashes, spec, tmp_path, 0) == [[], []]
