"""Quality gate: real ECG pages pass, synthetic non-ECGs fail, with reasons a user can act on."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from realdata import DEV_DIR, FULLRES_DIR
from synthetic import make_page

from ecgdx.page.gate import GATE_THRESHOLD, MIN_TRACE_WIDTH_PX, GateResult, assess_page
from ecgdx.page.layout import find_lead_panels
from ecgdx.page.preprocessing import decode_image

# PNGs checked by the default test run (every 10th of the sorted list: all classes and both templates).
PNG_SAMPLE_STEP = 10

SIZE = (786, 1106)  # (height, width) of the dataset's PNGs


# --------------------------------------------------------------------------------------------------
# Synthetic non-ECG pictures (also used by the threshold calibration in docs/performance.md)
# --------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Low-frequency random field in [0, 1]: noise drawn at 1/scale size and upsampled smoothly."""
    small = rng.random((max(2, shape[0] // scale), max(2, shape[1] // scale))).astype(np.float32)
    field = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.min()) / max(1e-6, float(field.max() - field.min()))


def natural_photo(seed: int = 0) -> np.ndarray:
    """Photo-like BGR picture: smooth colour blobs, a furry (cat-like) patch of short strokes, noise."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    image = np.stack([_smooth_noise(rng, SIZE, s) for s in (40, 60, 90)], axis=2) * 200 + 30
    fur = np.zeros(SIZE, np.float32)
    for _ in range(4000):  # fur: many short, roughly parallel dark strokes inside an ellipse
        cx, cy = rng.normal(w * 0.5, w * 0.12), rng.normal(h * 0.55, h * 0.12)
        angle = rng.normal(1.2, 0.3)
        dx, dy = 12 * np.cos(angle), 12 * np.sin(angle)
        cv2.line(fur, (int(cx), int(cy)), (int(cx + dx), int(cy + dy)), 1.0, 1, cv2.LINE_AA)
    image -= cv2.GaussianBlur(fur, (3, 3), 0)[:, :, None] * 90
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def blank_page(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(245, 2, SIZE), 0, 255).astype(np.uint8)


def black_image(seed: int = 0) -> np.ndarray:
    return np.zeros(SIZE, np.uint8)


def chest_xray(seed: int = 0) -> np.ndarray:
    """Dark background, a bright smooth elliptical thorax with two lungs and rib-like arcs."""
    rng = np.random.default_rng(seed)
    h, w = 900, 800  # portrait, like an X-ray film
    image = np.full((h, w), 15, np.float32)
    cv2.ellipse(image, (w // 2, h // 2), (300, 380), 0, 0, 360, 170, -1)
    for side in (-1, 1):
        cv2.ellipse(image, (w // 2 + side * 130, h // 2 - 20), (100, 250), 0, 0, 360, 80, -1)
        for k in range(9):  # ribs: bright arcs across each lung
            cv2.ellipse(image, (w // 2 + side * 130, 200 + 60 * k), (140, 50), 0, 200, 340, 200, 8)
    image = cv2.GaussianBlur(image, (0, 0), 6) + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def text_screenshot(seed: int = 0) -> np.ndarray:
    """A screen of text lines in several sizes (cv2.putText)."""
    rng = np.random.default_rng(seed)
    image = np.full(SIZE, 250, np.uint8)
    words = ["patient", "report", "the", "heart", "rate", "ECG", "normal", "lead", "II", "sinus", "rhythm",
             "QRS", "axis", "interval", "120", "ms", "findings", "summary", "and", "of"]
    y = 30
    while y < SIZE[0] - 10:
        line = " ".join(rng.choice(words, size=12))
        scale = float(rng.choice([0.5, 0.6, 0.8]))
        cv2.putText(image, line, (15, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 20, 1, cv2.LINE_AA)
        y += int(32 * scale + 8)
    return image


def spreadsheet(seed: int = 0) -> np.ndarray:
    """A table: ruled rows and columns with numbers in the cells, no traces."""
    rng = np.random.default_rng(seed)
    image = np.full(SIZE, 255, np.uint8)
    h, w = SIZE
    for y in range(40, h - 20, 28):
        cv2.line(image, (40, y), (w - 40, y), 120, 1)
    for x in np.linspace(40, w - 40, 9).astype(int):
        cv2.line(image, (int(x), 40), (int(x), h - 36), 120, 1)
    for y in range(40, h - 48, 28):
        for x in np.linspace(40, w - 40, 9).astype(int)[:-1]:
            cv2.putText(image, f"{rng.uniform(0, 999):.1f}", (int(x) + 6, y + 20), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, 30, 1, cv2.LINE_AA)
    return image


def random_noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, SIZE, dtype=np.uint8)


def sine_wave(seed: int = 0) -> np.ndarray:
    """One smooth sine line across a white page."""
    h, w = SIZE
    image = np.full(SIZE, 255, np.uint8)
    x = np.arange(40, w - 40)
    y = h / 2 + 120 * np.sin(2 * np.pi * x / 160.0)
    cv2.polylines(image, [np.stack([x, y], axis=1).astype(np.int32)], False, 20, 2, cv2.LINE_AA)
    return image


NON_ECGS = {
    "natural_photo": natural_photo,
    "blank_page": blank_page,
    "black_image": black_image,
    "chest_xray": chest_xray,
    "text_screenshot": text_screenshot,
    "spreadsheet": spreadsheet,
    "random_noise": random_noise,
    "sine_wave": sine_wave,
}


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NON_ECGS))
def test_non_ecg_fails_with_reasons(name):
    result = assess_page(decode_image(NON_ECGS[name](seed=1)))
    assert isinstance(result, GateResult)
    assert not result.ok, f"{name} passed the gate with score {result.score}: {result.checks}"
    assert 0.0 <= result.score < GATE_THRESHOLD
    assert result.reasons, "a refused picture must say why"


@pytest.mark.parametrize("template", ["3x4_grid", "6x2_nogrid"])
def test_synthetic_ecg_page_passes(template):
    result = assess_page(make_page(template, seed=3).image)
    assert result.ok, result.checks
    assert result.checks["qrs_rows"]["rows"] >= 3


def test_blurred_ecg_page_scores_lower_and_says_so():
    page = make_page("3x4_grid", seed=4).image
    sharp = assess_page(page)
    blurred = assess_page(cv2.GaussianBlur(page, (0, 0), 6))
    assert blurred.score < sharp.score
    assert not blurred.ok
    assert any("blur" in r or "trace" in r for r in blurred.reasons)


def test_result_is_json_serialisable():
    import json

    result = assess_page(make_page("6x2_nogrid", seed=5).image)
    json.dumps(result.to_dict())
    assert set(result.checks) >= {"qrs_rows", "long_traces", "pulses", "grid", "exposure", "ink", "sharpness",
                                  "aspect"}


def _dev_pngs() -> list[Path]:
    return sorted(DEV_DIR.rglob("*.png"))


@pytest.mark.skipif(not FULLRES_DIR.is_dir(), reason="real data not available (set ECGDX_DATA_DIR)")
def test_all_full_resolution_jpegs_pass():
    files = sorted(FULLRES_DIR.rglob("*.jpg"))
    assert len(files) == 11
    failed = {f.name: assess_page(decode_image(f)) for f in files}
    failed = {k: (r.score, r.reasons) for k, r in failed.items() if not r.ok}
    assert not failed


@pytest.mark.skipif(not DEV_DIR.is_dir(), reason="real data not available (set ECGDX_DATA_DIR)")
def test_sample_of_dev_pngs_pass():
    files = _dev_pngs()[::PNG_SAMPLE_STEP]
    assert len(files) >= 100
    results = {f.name: assess_page(decode_image(f)) for f in files}
    failed = {k: (r.score, r.reasons) for k, r in results.items() if not r.ok}
    assert not failed
    with (DEV_DIR / "labels.csv").open() as fh:  # both templates are in the sample
        templates = {row["template"] for row in csv.DictReader(fh)}
    assert {r.checks["pulses"]["template"] for r in results.values()} >= templates


# --------------------------------------------------------------------------------------------------
# Refusals say what to do
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quarters", "advice"), [(1, "quarter turn to the right"), (2, "upside down"),
                                                  (3, "quarter turn to the left")])
def test_a_turned_page_is_refused_with_advice_to_rotate_it(quarters, advice):
    page = make_page("3x4_grid", seed=6).image
    upright = assess_page(page)
    assert upright.ok and "orientation" not in upright.checks  # pulses found: no extra check
    turned = assess_page(np.ascontiguousarray(np.rot90(page, quarters)))
    assert not turned.ok
    assert turned.checks["orientation"]["turn_deg"] == (4 - quarters) * 90
    assert advice in turned.reasons[0] and "lead labels are at the left" in turned.reasons[0]


@pytest.mark.skipif(not DEV_DIR.is_dir(), reason="real data not available (set ECGDX_DATA_DIR)")
def test_an_upside_down_real_page_no_longer_passes():
    # Upside down, a real page keeps its trace rows and used to pass (score ~0.78) and be read wrongly.
    page = decode_image(_dev_pngs()[0])
    result = assess_page(np.ascontiguousarray(page[::-1, ::-1]))
    assert not result.ok
    assert result.reasons[0].startswith("the page seems to be upside down")


def test_each_weak_check_says_what_to_do():
    blurred = assess_page(cv2.GaussianBlur(make_page("3x4_grid", seed=4).image, (0, 0), 6))
    assert any("hold the camera still" in r or "photograph the whole page" in r for r in blurred.reasons)
    blank = assess_page(decode_image(blank_page(seed=2)))
    assert any("upload a picture of the printed ECG page" in r for r in blank.reasons)
    assert not any("rotate" in r for r in blank.reasons)  # nothing on it says which way is up


# --------------------------------------------------------------------------------------------------
# Pages the canonical-layout model cannot read: no lead layout, too few pixels
# --------------------------------------------------------------------------------------------------


def _canonical_details(page: np.ndarray):
    from ecgdx.page.preprocessing import PreprocessSpec, preprocess_with_details

    return preprocess_with_details(page, PreprocessSpec(height=256, width=512, layout="canonical"))[1]


def test_a_page_without_a_found_lead_layout_is_refused_with_the_layouts_reason():
    page = make_page("3x4_grid", seed=7).image
    details = _canonical_details(page)
    assert details.layout_method == "canonical" and details.layout_problem == ""
    assert assess_page(page, details=details).ok
    # The same page, as if its layout had not been found: it must not be read (the model would get
    # the raw crop, which it never saw), and the refusal says why in the layout's words.
    lost = dataclasses.replace(details, layout_method="fallback", layout_problem="5 trace rows were found")
    refused = assess_page(page, details=lost)
    assert not refused.ok
    assert refused.reasons[0].startswith("the 12 lead panels could not be located on this picture: "
                                         "5 trace rows were found. The model reads only pages")
    assert refused.checks["layout"] == {"method": "fallback", "problem": "5 trace rows were found"}


@pytest.mark.skipif(not DEV_DIR.is_dir(), reason="real data not available (set ECGDX_DATA_DIR)")
def test_the_rhythm_strip_printout_of_the_dev_set_is_refused_as_such():
    # The one development page printed as three 10 s rhythm strips, not as a 12-lead layout.
    page = decode_image(DEV_DIR / "ECG Images of Patient that have abnormal heart beats (548)" / "HB (497).png")
    details = _canonical_details(page)
    result = assess_page(page, details=details)
    assert details.layout_method == "fallback"
    assert not result.ok and "rhythm-strip printout" in result.reasons[0]


def test_a_thumbnail_is_refused_as_too_small_and_a_half_size_page_is_not():
    page = make_page("3x4_grid", seed=8).image
    verdicts = {}
    for scale in (0.5, 0.3):
        small = cv2.resize(page, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        details = _canonical_details(small)
        verdicts[scale] = (assess_page(small, details=details), details)
    half, _ = verdicts[0.5]
    assert half.ok, half.reasons
    thumb, details = verdicts[0.3]
    width = details.crop_box[2] - details.crop_box[0]
    assert details.crop_method == "pulses" and width < MIN_TRACE_WIDTH_PX <= verdicts[0.5][1].crop_box[2] - verdicts[0.5][1].crop_box[0]
    assert not thumb.ok
    assert thumb.reasons[0].startswith(f"the picture is too small to read the traces: the trace area is {width} pixels")
    assert "upload the original photo or scan" in thumb.reasons[0]


def test_the_layouts_own_words_reach_the_refusal():
    # Two of the four trace rows blanked out: the layout reader says what it found, and so does the gate.
    page = make_page("3x4_grid", seed=9).image.copy()
    details = _canonical_details(page)
    rows = [round(b) for b in find_lead_panels(page).baselines]
    gap = (rows[1] - rows[0]) // 2
    for baseline in rows[1:3]:
        page[baseline - gap : baseline + gap] = 255
    details = _canonical_details(page)
    assert details.layout_method == "fallback" and details.layout_problem
    result = assess_page(page, details=details)
    assert not result.ok
    problem = details.layout_problem.replace(";", ",").rstrip("?. ")
    assert result.reasons[0].startswith(f"the 12 lead panels could not be located on this picture: {problem}.")
    assert ";" not in result.reasons[0]  # tables join reasons with "; "


def test_a_large_upload_is_measured_in_its_own_pixels():
    """A 2x upload is analysed at working scale (load_page), but judged in the pixels it has; a
    small sheet in a large picture is still a small sheet."""
    page = make_page("3x4_grid", seed=10).image
    large = cv2.resize(page, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    details = _canonical_details(large)
    assert details.scale == 2 and details.crop_box[2] - details.crop_box[0] > 2 * MIN_TRACE_WIDTH_PX
    assert assess_page(large, details=details).ok
    canvas = np.full((2 * SIZE[0], 2 * SIZE[1]), 255, np.uint8)
    small = cv2.resize(page, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    canvas[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small
    details = _canonical_details(canvas)
    refused = assess_page(canvas, details=details)
    assert not refused.ok
    assert any(r.startswith("the picture is too small") or r.startswith("the 12 lead panels") for r in refused.reasons[:2])


def test_a_model_without_the_crop_still_has_its_lead_layout_judged():
    """crop != "auto": the gate re-analyses the page for its pulses, but the model's record says
    whether the layout was found."""
    from ecgdx.page.preprocessing import PreprocessSpec, preprocess_with_details

    page = make_page("3x4_grid", seed=7).image
    spec = PreprocessSpec(height=256, width=512, layout="canonical", crop="none")
    details = preprocess_with_details(page, spec)[1]
    assert details.crop_method == "none" and details.layout_method == "canonical"
    assert assess_page(page, details=details).ok
    lost = dataclasses.replace(details, layout_method="fallback", layout_problem="no rows")
    refused = assess_page(page, details=lost)
    assert not refused.ok and refused.checks["layout"]["method"] == "fallback"
    assert refused.checks["pulses"]["crop_method"] == "pulses"  # the evidence came from the re-analysis
