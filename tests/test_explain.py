"""Occlusion explanations: the heatmap finds what a constructed model depends on; leads are located."""

from __future__ import annotations

import sys
import warnings

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthetic import make_page  # noqa: E402
from test_export import export_tiny_model  # noqa: E402

from ecgdx.explain import (  # noqa: E402
    Explanation,
    Regions,
    canonical_lead_boxes,
    explain_input,
    grid_boxes,
    lead_regions,
    occlusion_drops,
    render_overlay,
    write_overlay,
)
from ecgdx.export import open_session  # noqa: E402
from ecgdx.inference import Predictor, softmax  # noqa: E402
from ecgdx.labels import LEADS, RHYTHM_STRIP  # noqa: E402
from ecgdx.page.preprocessing import PreprocessSpec, preprocess_with_details  # noqa: E402

SIZE = 64


class LeftHalfModel(torch.nn.Module):
    """Class 0's logit falls as the left half of the input gets whiter; the other logits are 0."""

    def forward(self, x):
        left = x[:, :, :, : SIZE // 2].mean(dim=(1, 2, 3))
        zero = torch.zeros_like(left)
        return torch.stack([64.0 * (1.0 / 16.0 - left), zero, zero, zero], dim=1)


@pytest.fixture(scope="module")
def left_half_probabilities(tmp_path_factory):
    """(N, 1, 64, 64) -> (N, 4) probabilities of LeftHalfModel, run by onnxruntime."""
    path = tmp_path_factory.mktemp("explain") / "left.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(LeftHalfModel(), (torch.zeros(1, 1, SIZE, SIZE),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}})
    session = open_session(path)
    return lambda batch: softmax(session.run(["logits"], {"image": batch.astype(np.float32)})[0])


def test_occlusion_finds_the_region_the_model_depends_on(left_half_probabilities):
    image = np.zeros((1, SIZE, SIZE), np.float32)  # all ink: class 0 wins clearly
    explanation = explain_input(left_half_probabilities, image, 0, grid=(8, 8))
    drops = explanation.cell_drops
    assert drops.shape == (8, 8)
    assert explanation.heatmap.shape == (SIZE, SIZE)
    assert drops[:, :4].min() > 0.05  # every left cell matters ...
    assert np.abs(drops[:, 4:]).max() < 1e-6  # ... no right cell does
    assert explanation.heatmap[:, : SIZE // 2].mean() > 10 * max(explanation.heatmap[:, SIZE // 2 :].mean(), 1e-6)
    assert explanation.region_method == "grid" and "grid" in explanation.note
    left_cells = {f"cell r{r}c{c}" for r in range(1, 9) for c in range(1, 5)}
    assert {name for name, _, _ in explanation.regions[:32]} == left_cells


def test_region_ranking(left_half_probabilities):
    image = np.zeros((1, SIZE, SIZE), np.float32)
    regions = Regions({"right": (32, 0, 64, 64), "left": (0, 0, 32, 64)}, "canonical", "test")
    explanation = explain_input(left_half_probabilities, image, 0, regions=regions)
    assert [name for name, _, _ in explanation.regions] == ["left", "right"]
    assert explanation.regions[0][1] > 0.5 and explanation.regions[1][1] == pytest.approx(0.0, abs=1e-6)
    base, drops = occlusion_drops(left_half_probabilities, image, 0, [(0, 0, 32, 64)])
    assert drops[0] == pytest.approx(explanation.regions[0][1])
    assert base == pytest.approx(explanation.base_probability)


def test_grid_boxes_tile_the_input():
    boxes = grid_boxes(50, 70, (8, 8))
    mask = np.zeros((50, 70), int)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] += 1
    assert len(boxes) == 64 and (mask == 1).all()
    with pytest.raises(ValueError):
        grid_boxes(4, 4, (8, 8))


def test_canonical_lead_boxes():
    boxes = canonical_lead_boxes(384, 768)
    assert set(boxes) == {*LEADS, RHYTHM_STRIP}
    assert boxes["I"] == (0, 0, 192, 96) and boxes["V6"] == (576, 192, 768, 288)
    assert boxes[RHYTHM_STRIP] == (0, 288, 768, 384)


def test_lead_regions_from_the_page_layout():
    pytest.importorskip("ecgdx.page.layout")
    gray = make_page("3x4_grid", seed=11).image
    spec = PreprocessSpec(height=96, width=128)
    _, details = preprocess_with_details(gray, spec)
    regions = lead_regions(spec, details, gray)
    assert regions.method == "page_layout", regions.note
    assert set(regions.boxes) == {*LEADS, RHYTHM_STRIP}
    for x0, y0, x1, y1 in regions.boxes.values():
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
    # Lead I is printed top left, V6 right of it lower down, the rhythm strip at the bottom.
    assert regions.boxes["I"][0] < regions.boxes["V6"][0] and regions.boxes["I"][1] < regions.boxes["V6"][1]
    assert regions.boxes[RHYTHM_STRIP][1] > regions.boxes["III"][1]


def test_lead_regions_fall_back_to_the_grid_and_say_so(monkeypatch):
    gray = make_page("3x4_grid", seed=11).image
    spec = PreprocessSpec(height=96, width=96)
    _, details = preprocess_with_details(gray, spec)
    monkeypatch.setitem(sys.modules, "ecgdx.page.layout", None)  # layout.py missing: import fails
    regions = lead_regions(spec, details, gray)
    assert regions.method == "grid" and not regions.boxes and "grid" in regions.note
    blank = np.full((786, 1106), 250, np.uint8)
    monkeypatch.delitem(sys.modules, "ecgdx.page.layout")
    _, details = preprocess_with_details(blank, spec)
    regions = lead_regions(spec, details, blank)
    assert regions.method == "grid" and "not recognised" in regions.note


def test_predictor_explanation_and_overlay(tmp_path):
    model = export_tiny_model(tmp_path)
    page = make_page("6x2_nogrid", seed=12).image
    prediction = Predictor(model).predict(page, explain=True, grid=(4, 6))
    explanation = prediction.explanation
    assert explanation.target == prediction.label
    assert explanation.cell_drops.shape == (4, 6)
    assert explanation.heatmap.shape == (96, 96)
    assert explanation.background.shape == tuple(
        np.subtract(prediction.preprocess["crop_box"][2:], prediction.preprocess["crop_box"][:2])[::-1]
    )
    summary = prediction.to_dict()["explanation"]
    assert summary["method"] == "occlusion" and len(summary["regions"]) in (13, 24)
    picture = render_overlay(explanation, prediction.probabilities)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] > explanation.background.shape[1] // 2
    path = write_overlay(tmp_path / "out" / "page.png", explanation, prediction.probabilities)
    assert cv2.imread(str(path)).shape == picture.shape


def test_overlay_text_is_never_clipped_at_the_right_edge():
    """The title lines shrink to fit: the last columns of the title band stay white, even with long
    region names (the subtitle used to run off the picture)."""
    title_height = 58  # ecgdx.explain's title band (px)
    rng = np.random.default_rng(0)
    heat = rng.random((64, 128)).astype(np.float32)
    long_names = [(f"a very long region name number {i}", 0.3 - 0.05 * i, (0, 0, 32, 16)) for i in range(5)]
    base = Explanation(target="mi", base_probability=0.5, cell_drops=rng.random((4, 4)) * 0.2, heatmap=heat * 0.2,
                       regions=long_names, region_method="grid", note="", content_box=(0, 0, 128, 64))
    picture = render_overlay(base, {"mi": 0.5})
    band = picture[:title_height, -8:]
    assert band.min() == 255, "title text reaches the right edge"
    # The region labels, wider than this 128 px picture even at their smallest size, are cut with an
    # ellipsis: no black ink in the picture's last columns (the heatmap is never that dark).
    last_columns = picture[title_height:, 128 - 4 : 128]
    assert (last_columns.max(axis=2) >= 40).all(), "a region label runs off the picture"


def test_region_labels_at_the_right_edge_are_moved_in_not_cut_off():
    """A top region near the right edge (V4-V6 on a 3x4 page) keeps its whole label inside the picture:
    the label, wider than the room right of the box's left side, is moved left."""
    from ecgdx import explain

    rng = np.random.default_rng(1)
    heat = rng.random((512, 1024)).astype(np.float32)
    near_edge = [("V6", 0.4, (900, 100, 1000, 200))]
    base = Explanation(target="mi", base_probability=0.5, cell_drops=rng.random((4, 4)) * 0.2, heatmap=heat * 0.2,
                       regions=near_edge, region_method="canonical", note="", content_box=(0, 0, 1024, 512))
    picture = render_overlay(base, {"mi": 0.5})
    width = picture.shape[1] - explain._BAR_WIDTH
    scale = width / 1024
    top = explain._TITLE_HEIGHT + round(100 * scale)
    dark = (picture[top : top + 30, :width].max(axis=2) < 40).any(axis=0)
    assert not dark[width - 3 :].any(), "the label runs into the picture's right edge"
    assert dark[: round(900 * scale)].any(), "the label was moved left of its box to fit"
