"""ecgdx.page.analysis: one working-scale analysis of a page, shared by the crop and the layout."""

from __future__ import annotations

import numpy as np
import pytest
from realdata import DEV_DIR, sample_dev_rows
from synthetic import make_page

import ecgdx.page.analysis as analysis_module
from ecgdx.errors import NotAnEcgError
from ecgdx.page.analysis import PageAnalysis
from ecgdx.page.layout import canonical_page, find_lead_panels
from ecgdx.page.preprocessing import PreprocessSpec, _analyse, preprocess_with_details


@pytest.fixture(scope="module")
def gray():
    page = make_page("3x4_grid", width=2212, height=1572, seed=2)
    return page.image if page.image.ndim == 2 else page.image[..., 0]


def test_each_fact_is_computed_once_and_kept(gray):
    analysis = PageAnalysis(gray)
    assert analysis.factor == 2  # 2212 px wide -> the ~1106 px working scale
    assert analysis.flat.shape == (786, 1106) and analysis.ink.dtype == np.uint8
    assert set(np.unique(analysis.ink)) <= {0, 1}
    assert analysis.boxes is analysis.boxes and analysis.pulses is analysis.pulses
    assert analysis.pulses[1] == 4  # four trace rows, each with its calibration pulse
    assert PageAnalysis.of(analysis) is analysis and PageAnalysis.of(gray) is not analysis


def test_shared_analysis_gives_what_separate_calls_give(gray):
    shared = PageAnalysis(gray)
    assert _analyse(shared) == _analyse(gray)  # the crop: box, method, pulse rows, grid strength
    assert np.array_equal(canonical_page(shared, 256, 512), canonical_page(gray, 256, 512))
    assert find_lead_panels(shared) == find_lead_panels(gray)


def test_the_canonical_model_input_segments_the_page_once(gray, monkeypatch):
    calls = []
    real = analysis_module.component_boxes
    monkeypatch.setattr(analysis_module, "component_boxes", lambda ink: calls.append(ink.shape) or real(ink))
    _, details = preprocess_with_details(gray, PreprocessSpec(layout="canonical", height=256, width=512))
    assert details.layout_method == "canonical"
    assert calls == [(786, 1106)]  # the crop and the canonical layout read the same components


def test_the_ink_level_stays_fixed_on_a_sharp_page_and_rises_on_a_blurred_one(gray):
    import cv2

    from ecgdx.page.primitives import INK_LEVEL, MAX_INK_LEVEL

    sharp = PageAnalysis(gray)
    assert sharp.ink_level == INK_LEVEL
    blurred = PageAnalysis(cv2.GaussianBlur(gray, (0, 0), 4.0))
    assert INK_LEVEL < blurred.ink_level <= MAX_INK_LEVEL


@pytest.mark.skipif(not DEV_DIR.is_dir(), reason="real data not available (set ECGDX_DATA_DIR)")
def test_blurred_real_pages_keep_their_lead_layout():
    """A blur of sigma 2 px on a 50 % page greys its thin pulses and traces; at the fixed ink level
    all 14 of these pages lost their pulses, and so their layout."""
    import cv2

    from ecgdx.page.layout import analyse_layout

    rows = sample_dev_rows(2)
    found = 0
    for row in rows:
        page = cv2.GaussianBlur(cv2.imread(str(DEV_DIR / row["file"]), cv2.IMREAD_GRAYSCALE), (0, 0), 2.0)
        try:
            analyse_layout(page)
            found += 1
        except NotAnEcgError:
            pass
    assert len(rows) >= 8 and found >= 0.8 * len(rows), (found, len(rows))
