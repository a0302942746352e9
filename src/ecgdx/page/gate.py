"""Quality gate: does a picture look like a readable 12-lead ECG page? (numpy + OpenCV, ~5-10 ms)

The classifier gives one of four heart diagnoses for ANY image, a cat included. ``assess_page`` runs
first and refuses pictures that do not look like a paper ECG printout of acceptable quality, so that
no diagnosis is ever printed for them.

Score::

    score    = evidence * quality                      in [0, 1]; ok = score >= GATE_THRESHOLD (0.45)
    evidence = 0.45 * qrs_rows + 0.25 * long_traces + 0.3 * pulses     "is it an ECG page?"
    quality  = geometric mean of exposure, ink, sharpness, aspect      "can it be read?"

Checks (each a sub-score in [0, 1] that ramps linearly between two limits), measured on a copy
resized to ``_WORK_WIDTH`` px wide whose paper background is divided out (ink = darker than
``INK_LEVEL`` / 255 of the local paper brightness, up to ``MAX_INK_LEVEL`` for faint prints):

- ``long_traces``: rows of long thin ink running across the page. Straight rules (table lines,
  separators) and specks are removed first; the page is cut into 4 vertical strips and a row counts
  when >= 3 strips hold, at the same height, a thin band of ink spanning >= 50 % of the strip.
  3 or more rows = 1.
- ``qrs_rows``: of those rows, the ones whose own trace (the ink connected to the row's baseline)
  shows QRS-like spikes: narrow columns towering over the trace (>= 2 % of the page height and
  >= 3x the row's median height, or >= 6 % of the page height). Tables, smooth curves and text fail.
- ``pulses``: the 1 mV calibration pulses at the left of the trace rows, found by
  ``ecgdx.page.preprocessing`` while it crops the page (``PreprocessDetails.crop_method == "pulses"``), and
  a recognised print template (``PreprocessDetails.template``): 1; pulses only: 0.75; no pulses but
  long trace components: 0.25; none: 0.
- ``exposure``: paper brightness (90th percentile, 60..130) and contrast (90th - 1st percentile, 30..80).
- ``ink``: share of ink pixels (0.2..0.6 % ramps up, 20..35 % ramps down): blank pages, black or
  solid pictures fail.
- ``sharpness``: variance of the Laplacian of the resized page (20..80): focus blur, heavy smoothing.
- ``aspect``: width / height of the picture (a landscape page is ~1.41; 1.1..2.2 = 1, portrait
  photos get a lower sub-score, never below 0.05).
- ``grid``: reported, never required: gridless printouts exist (the 6x2 template of the dataset).

Calibration of ``GATE_THRESHOLD`` (details and the command in docs/performance.md): all 11
full-resolution JPEGs score 1.0; of the 1,190 development PNGs 1,178 score 1.0 and the lowest 0.55
(a ventricular tachycardia, whose wide complexes are not counted as QRS spikes); synthetic
non-ECGs (photo with fur texture, blank page, black image, chest X-ray, text screenshot, spreadsheet,
random noise, a sine wave; 5 seeds each) score at most 0.30 (noise, in which preprocessing "finds"
calibration pulses). 0.45 lies between, with a margin of 0.1 on both sides.

Each weak check's sentence says what to do about it ("photograph the whole page", "hold the camera
still"). A refused picture, and any page without calibration pulses at the left, is also checked for its
orientation (``ecgdx.page.orientation``): a page on its side or upside down is refused (an upside-down
page keeps its trace rows and would otherwise pass, to be read wrongly) and told, first of its
reasons, to rotate the picture. (``ecgdx.page.normalize`` turns such pages upright before the gate sees
them in ``Predictor``; this catches pages that reach the gate unturned.)

Two refusals no score outweighs, put before the score's reasons (only the advice to turn the
picture comes before them):

- ``layout``: the model reads the redrawn lead layout (``PreprocessDetails.layout_method``) but no
  layout was found on this page ('fallback'). It would otherwise be given the cropped page, which it
  never saw in training, and its answer would mean nothing. The reason quotes the layout's own words
  (``layout_problem``), e.g. a rhythm-strip printout with 6 rows of 10 s.
- ``resolution``: the trace area found from the calibration pulses is narrower than
  ``MIN_TRACE_WIDTH_PX`` (420) pixels of the picture as uploaded: a thumbnail. (It counts pixels, not
  detail: a thumbnail enlarged before upload passes it and is left to the sharpness check. A page
  whose pulses were not found is not measured; for the canonical-layout models it has no layout
  either and is refused for that.)

Limits: the checks know what a printed ECG looks like, not whether its content is plausible: an ECG
printed without calibration pulses scores ~0.7-0.78 and passes; a photo of an ECG on a monitor,
or a hand-drawn one, may pass. Pages tilted by more than a few degrees lose their rows and fail
(``ecgdx.page.normalize`` straightens tilts up to 15 degrees before the gate runs). Synthetic look-alikes such as slanted tables with
spike-like marks are not covered by the calibration.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ecgdx.page.orientation import detect_orientation
from ecgdx.page.preprocessing import PreprocessDetails, PreprocessSpec, decode_image, preprocess_with_details
from ecgdx.page.primitives import ink_level

__all__ = ["GATE_THRESHOLD", "MIN_TRACE_WIDTH_PX", "GateResult", "assess_page"]

# ok = score >= GATE_THRESHOLD. Real pages score >= 0.55, synthetic non-ECGs <= 0.30 (module docstring).
GATE_THRESHOLD = 0.45

# Pages are measured at this width (a 2213 px scan shrinks by an exact factor 4, OpenCV's fast path):
# every limit below then means the same at any resolution, and blur is judged at about the detail
# the model sees (its input is ~384 px wide).
_WORK_WIDTH = 550
# Evidence weights (sum 1) and the rows of traces that count as "a full page" (3x4 pages have 4 rows).
_EVIDENCE_WEIGHTS = {"qrs_rows": 0.45, "long_traces": 0.25, "pulses": 0.3}
_FULL_ROWS = 3
# Traces narrower than this (original pixels, 10 s of trace ~250 mm: ~1.7 px/mm) are refused. On the
# test split, the bundled model read pages shrunk to 50 % of the development scale (trace area ~520
# px) within 0.03 macro-F1 of clean; at 35 % (~360 px) macro-F1 fell by 0.18 (docs/robustness.md).
MIN_TRACE_WIDTH_PX = 420
# A tiny spec: used only to run preprocessing's page analysis when no PreprocessDetails are given.
_ANALYSIS_SPEC = PreprocessSpec(height=16, width=16, clahe_clip=0.0, median_ksize=0)


@dataclass(frozen=True)
class GateResult:
    """Verdict of ``assess_page``.

    ok: score >= GATE_THRESHOLD. score: 0..1 (see module docstring). reasons: one sentence per weak
    check (sub-score < 0.5), worst first; may be non-empty even when ok. checks: every measurement
    and sub-score, JSON-serialisable.
    """

    ok: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_page(gray: Any, *, details: PreprocessDetails | None = None) -> GateResult:
    """Judge whether ``gray`` looks like a 12-lead ECG page of acceptable quality.

    Args:
        gray: (H, W) uint8 page (``decode_image`` output); other inputs are decoded first.
        details: ``preprocess_with_details``'s record for this page, if already computed (saves the
            page analysis, ~10 ms); it must come from a spec with crop == "auto" to carry the
            calibration-pulse evidence, else the analysis runs again (its layout record, the model's
            lead layout found or not, is still the one judged).

    Returns:
        GateResult; never raises for a readable image.
    """
    if not (isinstance(gray, np.ndarray) and gray.ndim == 2 and gray.dtype == np.uint8):
        gray = decode_image(gray)
    model_record = details
    if details is None or details.crop_method == "none":
        details = preprocess_with_details(gray, _ANALYSIS_SPEC)[1]
        if model_record is not None:  # the analysis ran on ``gray``, a working-scale copy
            box = tuple(v * model_record.scale for v in details.crop_box)
            details = dataclasses.replace(details, crop_box=box, layout_method=model_record.layout_method,
                                          layout_problem=model_record.layout_problem)
    work = _resize_to_width(gray, _WORK_WIDTH)
    ink = _ink_mask(work)
    checks: dict[str, Any] = {}
    reasons: list[tuple[float, str]] = []

    rows = _trace_rows(ink)
    checks["long_traces"] = {"rows": rows["long_rows"], "score": _ramp(rows["long_rows"], 0, _FULL_ROWS)}
    checks["qrs_rows"] = {"rows": rows["qrs_rows"], "qrs_complexes": rows["qrs_complexes"],
                          "score": _ramp(rows["qrs_rows"], 0, _FULL_ROWS)}
    checks["pulses"] = {"crop_method": details.crop_method, "template": details.template,
                        "score": _pulse_score(details)}
    checks["grid"] = {"present": details.template.endswith("_grid"), "template": details.template}
    _add_quality_checks(checks, gray, work, ink)

    evidence = sum(w * checks[name]["score"] for name, w in _EVIDENCE_WEIGHTS.items())
    quality_scores = [checks[name]["score"] for name in ("exposure", "ink", "sharpness", "aspect")]
    quality = math.prod(quality_scores) ** (1.0 / len(quality_scores))
    score = float(np.clip(evidence * quality, 0.0, 1.0))
    checks["evidence"], checks["quality"] = round(evidence, 4), round(quality, 4)

    for name, message in _messages(checks).items():
        if checks[name]["score"] < 0.5:
            reasons.append((checks[name]["score"], message))
    reasons.sort(key=lambda r: r[0])
    ok = score >= GATE_THRESHOLD
    # Two things no score can outweigh: a model that reads the redrawn lead layout cannot read a
    # page whose layout was not found (it would be given the raw crop, which it never saw in
    # training), and traces drawn with too few pixels are not there to be read.
    trace_width = details.crop_box[2] - details.crop_box[0]
    if details.crop_method == "pulses":
        checks["resolution"] = {"trace_width_px": int(trace_width), "min_px": MIN_TRACE_WIDTH_PX}
        if trace_width < MIN_TRACE_WIDTH_PX:
            ok = False
            reasons.insert(0, (-1.0, _SMALL_ADVICE.format(width=int(trace_width), min_px=MIN_TRACE_WIDTH_PX)))
    checks["layout"] = {"method": details.layout_method, "problem": details.layout_problem}
    if details.layout_method == "fallback":
        ok = False
        # Reasons are joined with "; " in tables: the layout's words must not add a separator.
        problem = details.layout_problem.replace(";", ",").rstrip("?. ")
        found = f": {problem}." if problem else "."
        reasons.insert(0, (-1.0, _LAYOUT_ADVICE.format(found=found)))
    if not ok or checks["pulses"]["score"] < 1.0:
        # Only pages without pulses at the left pay for this (~4 ms). A page on its side fails the
        # row checks, and its user needs to hear that turning it is the fix; an upside-down page
        # keeps its rows and would pass, but would be read wrongly (its pulses are at the right).
        turn = detect_orientation(gray).turn
        checks["orientation"] = {"turn_deg": turn}
        if turn:
            ok = False
            reasons.insert(0, (-1.0, _TURN_ADVICE[turn]))
    return GateResult(ok, round(score, 4), [m for _, m in reasons], checks)


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def _resize_to_width(gray: np.ndarray, width: int) -> np.ndarray:
    """(H, W) uint8 -> (round(H * width / W), width); area averaging, integer pre-shrink for speed."""
    h, w = gray.shape
    factor = w // width
    if factor >= 2:  # OpenCV's integer INTER_AREA path is ~20x faster than a fractional one
        h, w = h // factor, w // factor
        gray = cv2.resize(gray[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)
    height = max(1, round(h * width / w))
    # Below 1.25x (e.g. 553 -> 550 px after the pre-shrink) area averaging and bilinear weights
    # barely differ, and the bilinear path is ~5x faster (1.46 against 0.29 ms a page).
    interp = cv2.INTER_AREA if w >= 1.25 * width else cv2.INTER_LINEAR
    return cv2.resize(gray, (width, height), interpolation=interp)


def _ink_mask(work: np.ndarray) -> np.ndarray:
    """0/1 uint8 mask of ink: pixels darker than ~INK_LEVEL/255 of the local paper brightness.

    Paper brightness = the brightest 8x8-pixel cell in a 5x5 neighbourhood of cells (lines are thin,
    so that cell is paper); dividing by it removes shadows and uneven lighting of photos.
    """
    h, w = work.shape
    small = cv2.resize(work, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    paper = cv2.resize(cv2.dilate(small, np.ones((5, 5), np.uint8)), (w, h), interpolation=cv2.INTER_LINEAR)
    flat = cv2.divide(work, np.maximum(paper, 1), scale=255)
    # Blurred or faded prints have grey traces: the level moves half-way from the darkest ink
    # (0.5th percentile) to the paper, between INK_LEVEL and MAX_INK_LEVEL (grid dots stay lighter):
    # the page analysis's own rule (ecgdx.page.primitives.ink_level).
    return (flat < ink_level(flat)).view(np.uint8)


def _trace_rows(ink: np.ndarray) -> dict[str, int]:
    """Rows of long thin traces across the page, and how many of them show QRS complexes.

    Straight rules longer than 25 % of the width or 20 % of the height (table lines, the header
    rule, lead separators) are removed first: they are printed lines, not signals; so are specks. The page is then
    split into 4 vertical strips (one 2.5 s lead column each on a 3x4 page; a strip tolerates a few
    degrees of rotation, the whole width would not). In each strip a trace row is a band of
    +/- 2.5 % of the height that holds ink in >= 50 % of the strip's columns, is thin (median ink per
    column <= 1.5 % of the height) and counts as showing QRS complexes if it holds at least one spike
    (``_count_spikes``). A row is counted when it is found in at least 3 of the 4 strips.
    """
    h, w = ink.shape
    rules = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, max(3, round(0.25 * w))), np.uint8))
    rules |= cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((max(3, round(0.2 * h)), 1), np.uint8))
    traces = ink & (1 - rules)
    # Drop specks (noise, dust, JPEG artefacts): keep pieces at least 2 % of the width long or tall.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(traces, connectivity=8)
    keep = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= 0.02 * w
    keep[0] = False  # background
    traces = keep.view(np.uint8)[labels]
    band = max(1, round(0.025 * h))
    near = cv2.dilate(traces, np.ones((2 * band + 1, 1), np.uint8))  # ink within +/- band rows
    # Widened by 3 columns (~1.6 mm) so a QRS stroke slanting across 2 columns is one vertical run.
    widened = cv2.dilate(traces, np.ones((1, 3), np.uint8))
    long_per_strip, qrs_per_strip, complexes = [], [], 0
    for x0, x1 in _strips(w, 4):
        coverage = near[:, x0:x1].mean(axis=1)
        long_rows = qrs_rows = 0
        for y0, y1 in _runs(coverage >= 0.5):
            # The row's baseline: the pixel row holding the most ink (coverage is flat over +/- band).
            centre = y0 + int(np.argmax(traces[y0:y1, x0:x1].sum(axis=1)))
            top, bottom = max(0, centre - 2 * band), min(h, centre + 2 * band + 1)
            counts = traces[top:bottom, x0:x1].sum(axis=0)
            inked = counts[counts > 0]
            if len(inked) == 0 or float(np.median(inked)) > 0.015 * h:
                continue  # a filled area (photo, dark blob), not a line
            long_rows += 1
            attached = _attached_to_row(widened[top:bottom, x0:x1], centre - top)
            spikes = _count_spikes(_column_extent(attached), h, w)
            qrs_rows += spikes > 0
            complexes += spikes
        long_per_strip.append(long_rows)
        qrs_per_strip.append(qrs_rows)
    # Second smallest of four = found in at least 3 strips.
    return {"long_rows": sorted(long_per_strip)[1], "qrs_rows": sorted(qrs_per_strip)[1],
            "qrs_complexes": int(complexes)}


def _strips(width: int, n: int) -> list[tuple[int, int]]:
    """n equal column ranges [x0, x1) covering 0..width."""
    edges = np.linspace(0, width, n + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of the True runs of a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _attached_to_row(mask: np.ndarray, row: int) -> np.ndarray:
    """The 8-connected ink of a 0/1 mask that touches rows row-2..row+2: the trace itself with its
    QRS excursions, without text, numbers or neighbouring traces floating near it."""
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.zeros(n, np.uint8)
    keep[labels[max(0, row - 2) : row + 3]] = 1
    keep[0] = 0  # background
    return keep[labels]


def _column_extent(mask: np.ndarray) -> np.ndarray:
    """Per column of a 0/1 mask: rows from the first to the last ink pixel (0 where no ink)."""
    inked = mask.any(axis=0)
    first = np.argmax(mask, axis=0)
    last = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)
    return np.where(inked, last - first + 1, 0)


def _count_spikes(extent: np.ndarray, page_height: int, page_width: int) -> int:
    """Number of QRS-like spikes in a trace row, from its per-column vertical extent.

    A spike column reaches >= 2 % of the page height (~4 mm = 0.4 mV at 10 mm/mV) and >= 3x the
    row's median extent: a QRS complex towers over the thin trace around it, whereas the glyphs of a
    text line are all about as tall as the line. Columns reaching >= 6 % of the height (~12 mm) count
    whatever the median: in fast, wide-complex rhythms the whole trace is QRS. Spike columns closer
    than 3 columns (~1.6 mm) form one spike, and only narrow spikes (<= 1.5 % of the page width,
    ~4 mm or 160 ms) count: wider ones are blobs.
    """
    inked = extent[extent > 0]
    if len(inked) == 0:
        return 0
    tall = (extent >= max(0.02 * page_height, 3.0 * float(np.median(inked)))) | (extent >= 0.06 * page_height)
    merged: list[list[int]] = []
    for start, end in _runs(tall):
        if merged and start - merged[-1][1] <= 2:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return sum(1 for start, end in merged if end - start <= max(3, 0.015 * page_width))


def _pulse_score(details: PreprocessDetails) -> float:
    """1 = calibration pulses and a known template; 0.75 = pulses; 0.25 = only long traces; else 0."""
    if details.crop_method == "pulses":
        return 1.0 if details.template != "unknown" else 0.75
    return 0.25 if details.crop_method == "traces" else 0.0


def _add_quality_checks(checks: dict[str, Any], gray: np.ndarray, work: np.ndarray, ink: np.ndarray) -> None:
    """exposure, ink, sharpness and aspect sub-scores (see the module docstring), added to checks."""
    p1, p90 = _percentiles(work, (0.01, 0.90))
    contrast = p90 - p1
    checks["exposure"] = {"paper_level": p90, "contrast": contrast,
                          "score": min(_ramp(p90, 60, 130), _ramp(contrast, 30, 80))}
    fraction = cv2.countNonZero(ink) / ink.size
    ink_score = min(_ramp(fraction, 0.002, 0.006), 1.0 - _ramp(fraction, 0.2, 0.35))
    checks["ink"] = {"fraction": round(fraction, 5), "score": ink_score}
    sharp = float(cv2.meanStdDev(cv2.Laplacian(work, cv2.CV_16S))[1][0, 0] ** 2)
    checks["sharpness"] = {"laplacian_var": round(sharp, 2), "score": _ramp(sharp, 20.0, 80.0)}
    aspect = gray.shape[1] / gray.shape[0]
    checks["aspect"] = {"width_over_height": round(aspect, 3),
                        "score": max(0.05, min(_ramp(aspect, 0.5, 1.1), 1.0 - _ramp(aspect, 2.2, 3.5)))}


def _percentiles(gray: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """Gray levels at the given quantiles (0..1) of a uint8 image, from its histogram (no sort)."""
    cumulative = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel())
    return [float(np.searchsorted(cumulative, q * cumulative[-1])) for q in quantiles]


def _messages(checks: dict[str, Any]) -> dict[str, str]:
    """One user-facing sentence per check, used when its sub-score is low: what was wrong, then
    what to do about it."""
    c = checks
    return {
        "qrs_rows": f"no rows of ECG traces with QRS complexes found ({c['qrs_rows']['rows']} of the "
        f"{_FULL_ROWS} or more a 12-lead page has): photograph the whole page, straight on, with the "
        "lead labels at the left",
        "long_traces": f"too few long trace lines across the page ({c['long_traces']['rows']} rows): "
        "photograph the whole page, not a part of it, with the traces running from left to right",
        "pulses": "no calibration pulses (the 1 mV squares at the left of the trace rows) found: make "
        "sure the left edge of the page is in the picture",
        "exposure": f"too dark or washed out (paper brightness {c['exposure']['paper_level']:.0f}/255, "
        f"contrast {c['exposure']['contrast']:.0f}): take the picture in even light, without flash glare",
        "ink": f"ink covers {100 * c['ink']['fraction']:.1f} % of the picture; a printout has about 1-15 %: "
        "upload a picture of the printed ECG page itself",
        "sharpness": f"too blurred (Laplacian variance {c['sharpness']['laplacian_var']:.0f}): hold the "
        "camera still and let it focus on the traces",
        "aspect": f"unusual shape {c['aspect']['width_over_height']:.2f}:1 (a landscape page is about "
        "1.41:1): photograph the whole page in landscape, without cropping it",
    }


_LAYOUT_ADVICE = (
    "the 12 lead panels could not be located on this picture{found} The model reads only pages "
    "whose lead layout it has found: photograph the whole page sharply and straight on, in even light, with "
    "the calibration pulses and lead labels at the left"
)
_SMALL_ADVICE = (
    "the picture is too small to read the traces: the trace area is {width} pixels wide, and at least "
    "{min_px} are needed (about 1.7 pixels per mm of paper): upload the original photo or scan, not a "
    "thumbnail or a screenshot of it"
)
_TURN_ADVICE = {
    90: "the page seems to lie on its side, its top at the right: rotate the picture a quarter turn to "
    "the left so that the lead labels are at the left and the header at the top",
    180: "the page seems to be upside down: rotate the picture half a turn so that the lead labels are "
    "at the left and the header at the top",
    270: "the page seems to lie on its side, its top at the left: rotate the picture a quarter turn to "
    "the right so that the lead labels are at the left and the header at the top",
}


def _ramp(value: float, lo: float, hi: float) -> float:
    """0 at or below lo, 1 at or above hi, linear in between."""
    return float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))
