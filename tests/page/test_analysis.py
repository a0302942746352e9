"""ecgdx.page.analysis: one working-scale analysis of a page, shared by the crop and the layout."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_page

import ecgdx.page.analysis as analysis_module
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
