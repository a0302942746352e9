"""Lead panels of a paper 12-lead ECG page, and a template-free re-composition of the page.

The dataset's print template (3x4 leads on a pink grid, or 6x2 leads on plain paper) is confounded
with the diagnosis, so a model that sees the template learns it instead of the ECG. This module finds
where every lead is printed (``find_lead_panels``) and redraws the first seconds of every lead into
one fixed layout on plain white paper (``canonical_page``), so that pages of every template look the
same apart from the traces themselves.

Layouts recognised (EDAN SE-3 printouts, 25 mm/s, 10 mm/mV), by their number of trace rows; the
template name adds "_grid" or "_nogrid" for ruled or plain paper:

- 4 rows, "3x4": I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6, 2.5 s each, + 10 s lead-II rhythm strip
  (3 rows: the same without the rhythm strip).
- 7 rows, "6x2": I V1 / II V2 / III V3 / aVR V4 / aVL V5 / aVF V6, 5 s each, + lead-II rhythm strip.
- 6 rows, "6x2" without the rhythm strip. The dataset's 114 gridded 6-row pages (labelled
  "3x4_grid" in its labels file, all abnormal_heartbeat or history_of_mi) are 113 such "6x2_grid"
  pages ("2*5s" in their footer, rows unevenly spaced) and one rhythm-strip printout (leads II, V1,
  V5 for two consecutive 10 s recordings), which is refused: it holds no 12-lead layout.

Coordinates: (x0, y0, x1, y1) boxes in pixels of the page given, x1/y1 exclusive; other positions are
continuous pixel coordinates in which pixel i spans [i, i + 1). Times are seconds from the start of
the recording (every row of these printers starts at the same instant).

No torch, no PIL: numpy and OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ecgdx.errors import NotAnEcgError
from ecgdx.labels import LEADS
from ecgdx.page.analysis import PageAnalysis
from ecgdx.page.primitives import (
    GRID_LEVEL,
    box_between_text,
    grid_strength,
)

__all__ = [
    "CANONICAL_LEADS",
    "CANONICAL_ROW_MM",
    "LeadPanel",
    "PageLayout",
    "canonical_page",
    "find_lead_panels",
]

# Printer constants (EDAN SE-3): paper speed, gain, and the calibration pulse's height (1 mV).
MM_PER_S = 25.0
PULSE_MM = 10.0
# Whole recording shown on a page (the rhythm strip; the lead panels tile it).
RECORD_SECONDS = 10.0

# Canonical page: 3 rows x 4 columns of leads plus the lead-II rhythm strip.
CANONICAL_LEADS: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
# Height of paper (mm) shown per canonical row, centred on the row's baseline: +/- 15 mm holds all but
# the tallest QRS complexes, and stays clear of most of the neighbouring rows on 6x2 pages (21.6 mm).
CANONICAL_ROW_MM = 30.0

# Reported panel boxes reach this far (mm) above and below the row baseline.
PANEL_HALF_MM = 12.0
# A row's own band (mm each side of its baseline, at most half-way to the next row): ink of the row
# that lies further out is drawn only when connected to ink within the band.
CORE_HALF_MM = 12.0
# Lead labels ("aVR", "V1", ...) print from the panel start, up to ~7.3 mm wide, ~2.6 mm high, their
# bottom 0-0.5 mm above the baseline (measured on dev pages at 4 px/mm). The label box is wider/taller.
LABEL_MM = 8.0
_TEXT_BAND_MM = (3.6, -0.2)  # (top, bottom) of the label text band, mm above the baseline
# Blanked at the (start, end) of every panel (mm): where separator lines print on 3x4 pages.
_EDGE_MM = (1.0, 0.75)
# Following the trace through the label area, a gap between neighbouring columns' ink runs longer
# than this (mm) counts as a break (heavily penalised).
_MAX_JUMP_MM = 2.0
# Trace start: first ink within +/- this (mm) of the baseline, right of the calibration pulse.
_START_BAND_MM = 6.0
# Separators: vertical lines at least this share of the lead rows' vertical span (and >= 20 mm).
_SEPARATOR_SHARE = 0.6
# Plausible page widths (mm) given the pulse scale: A5 landscape to A3 landscape, with margin.
_PAGE_MM = (150.0, 450.0)
# Printed time scale may differ from the nominal 25 mm/s by this fraction (scan/print scaling).
_TIME_SCALE_TOLERANCE = 0.1


@dataclass(frozen=True)
class _Design:
    """A printed lead layout: lead names per row (top to bottom) and each panel's duration."""

    stem: str
    lead_rows: tuple[tuple[str, ...], ...]
    seconds: float
    rhythm: bool


_ROWS_3X4 = CANONICAL_LEADS
_ROWS_6X2 = (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"))
# Number of trace rows (calibration pulses) -> layout.
_DESIGNS: dict[int, _Design] = {
    3: _Design("3x4", _ROWS_3X4, 2.5, False),
    4: _Design("3x4", _ROWS_3X4, 2.5, True),
    6: _Design("6x2", _ROWS_6X2, 5.0, False),
    7: _Design("6x2", _ROWS_6X2, 5.0, True),
}


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadPanel:
    """Where one lead (or the rhythm strip) is printed.

    lead: 'I', 'II', 'III', 'aVR', 'aVL', 'aVF', 'V1'..'V6' ('II' for the rhythm strip).
    box: (x0, y0, x1, y1) page pixels, x1/y1 exclusive; x spans the panel's time span, y the
        baseline +/- PANEL_HALF_MM (clipped to the page; traces may reach beyond it or into it from
        neighbouring rows).
    row, column: 0-based position on the page (row counts trace rows from the top).
    t0, t1: time span in seconds from the start of the recording.
    baseline_y: y of the row's 0 mV line (bottom of its calibration pulse), page pixels.
    confidence: 0..1; product of trace coverage of the panel, agreement of its boundaries with the
        printed separator lines (where the layout prints them) and the quality of its row's pulse.
    """

    lead: str
    box: tuple[int, int, int, int]
    row: int
    column: int
    t0: float
    t1: float
    baseline_y: float
    confidence: float


@dataclass(frozen=True)
class PageLayout:
    """Lead layout of one page (``find_lead_panels``).

    template: '3x4_grid', '6x2_nogrid', '6x2_grid' or '3x4_nogrid' (lead arrangement + ruled paper).
    has_grid, has_rhythm: ruled paper; a 10 s lead-II rhythm strip under the lead rows.
    page_size: (height, width) of the page in pixels.
    px_per_mm: page pixels per mm, from the calibration pulses (1 mV = 10 mm high; median over rows,
        sub-pixel line centres). Used for amplitudes and for the nominal time scale.
    grid_px_per_mm: the same from the 5 mm grid period (ruled pages only, else None); a cross-check.
    px_per_s: page pixels per second along the time axis, measured from the separator lines (or,
        without them, from the trace extent); within 10 % of 25 mm/s * px_per_mm, else nominal.
    time_source: 'separators', 'trace_extent' or 'nominal' (how px_per_s was obtained).
    baselines: y of every trace row's 0 mV line, top to bottom (page pixels).
    trace_x0, trace_x1: x where the traces start (just right of the calibration pulses) and end.
    separators: x of the vertical lead separator lines found (page pixels).
    panels: the 12 leads by name (``ecgdx.labels.LEADS`` order).
    rhythm: the rhythm strip, or None when the page has none.
    """

    template: str
    has_grid: bool
    has_rhythm: bool
    page_size: tuple[int, int]
    px_per_mm: float
    grid_px_per_mm: float | None
    px_per_s: float
    time_source: str
    baselines: tuple[float, ...]
    trace_x0: float
    trace_x1: float
    separators: tuple[float, ...]
    panels: dict[str, LeadPanel]
    rhythm: LeadPanel | None

    @property
    def rows(self) -> int:
        """Number of trace rows (calibration pulses)."""
        return len(self.baselines)


# --------------------------------------------------------------------------------------------------
# Page analysis (all at the working scale, ~1106 px wide)
# --------------------------------------------------------------------------------------------------


# A vertical separator line: (centre x, half width, top y, bottom y), working pixels.
_Separator = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Row:
    """One trace row at the working scale: baseline y, pulse right edge x, pulse height (px), quality."""

    baseline: float
    pulse_right: float
    height: float
    quality: float


@dataclass(frozen=True)
class _Analysis:
    """Working-scale facts shared by find_lead_panels and canonical_page."""

    work: PageAnalysis
    design: _Design
    rows: tuple[_Row, ...]
    ppm: float  # working px per mm
    pps: float  # working px per second
    x0: float  # trace start
    separators: tuple[_Separator, ...]  # matched to panel boundaries
    bounds: tuple[float, ...]  # panel boundaries x, len = columns + 1
    text_limits: tuple[int, int]  # rows (top, bottom) between header and footer text
    layout: PageLayout


def _runs(mask_1d: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end_exclusive)] of the runs of True/nonzero values in a 1-D array."""
    edges = np.diff(np.concatenate(([0], (np.asarray(mask_1d) != 0).view(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def column_runs(mask: np.ndarray, merge_gap: int | None = None) -> list[list[tuple[int, int]]]:
    """``ink_runs`` per column: for each column of ``mask``, its [(start, end_exclusive)] runs, top
    to bottom (an empty list where the column has no ink)."""
    runs: list[list[tuple[int, int]]] = [[] for _ in range(mask.shape[1])]
    for c, r0, r1 in zip(*(part.tolist() for part in ink_runs(mask, merge_gap)), strict=True):
        runs[c].append((r0, r1))
    return runs


def ink_runs(mask: np.ndarray, merge_gap: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ink of a (h, w) 0/1 array: maximal stretches of consecutive inked pixels down one
    column. Three (n,) int64 arrays, column, start row and end row (exclusive) of every run, ordered
    by column, then top to bottom.

    merge_gap: runs of one column separated by at most this many px are joined into one.
    """
    h, w = mask.shape
    # One scan of the column-major copy for the (few) ink pixels; runs are where the flat index
    # stops stepping by one or crosses into the next column.
    ink = np.flatnonzero(np.ascontiguousarray(mask.T))
    if len(ink):
        start_c = ink // h
        breaks = np.flatnonzero((np.diff(ink) != 1) | (np.diff(start_c) != 0))
        firsts = np.concatenate(([0], breaks + 1))
        lasts = np.concatenate((breaks, [len(ink) - 1]))
        start_c = start_c[firsts]
        start_r = ink[firsts] - start_c * h
        end_r = ink[lasts] - start_c * h + 1
    else:
        start_c, start_r, end_r = (np.zeros(0, np.int64) for _ in range(3))
    if merge_gap is not None and len(start_c):
        joined = np.zeros(len(start_c), bool)
        joined[1:] = (start_c[1:] == start_c[:-1]) & (start_r[1:] - end_r[:-1] <= merge_gap)
        first = np.flatnonzero(~joined)
        last = np.concatenate([first[1:] - 1, [len(start_c) - 1]])
        start_c, start_r, end_r = start_c[first], start_r[first], end_r[last]
    return start_c, start_r, end_r


def _centroid(weights: np.ndarray, start: int, end: int) -> float:
    """Weighted centre (continuous coordinates, pixel i spans [i, i+1)) of weights[start:end]."""
    w = weights[start:end].astype(np.float64)
    total = w.sum()
    if total <= 0:
        return (start + end) / 2.0
    return float(start + 0.5 + (np.arange(end - start) * w).sum() / total)


def _split_pulse(box: np.ndarray, work: PageAnalysis, single_h: float) -> list[_Row]:
    """Rows marked by one pulse component (one pulse, or 2-3 touching pulses of adjacent rows).

    The pulse is drawn _|^^|_: its feet (ink left of the left edge and right of the right edge) lie on
    the baseline, its top bar (ink between the edges) 10 mm higher. Line centres are weighted by ink
    darkness for sub-pixel heights. Returns one _Row per foot line found (quality 1), or, when the
    shape is not resolved, one row at the box bottom (quality 0.6).
    """
    x, y, w, h = (int(v) for v in box)
    sub = work.ink[y : y + h, x : x + w]
    dark = (255 - work.flat[y : y + h, x : x + w].astype(np.int32)) * sub
    cols = sub.sum(axis=0)
    edge_cols = np.flatnonzero(cols >= 0.5 * cols.max())
    edges = _runs(np.isin(np.arange(w), edge_cols))
    fallback = [_Row(y + h - 1.0, float(x + w), float(h - 1), 0.6)]
    if len(edges) < 2:
        return fallback
    left_end, right_start = edges[0][1], edges[-1][0]
    feet = dark[:, : edges[0][0]].sum(axis=1) + dark[:, edges[-1][1] :].sum(axis=1)
    top = dark[:, left_end:right_start].sum(axis=1)
    foot_runs = [r for r in _runs(feet > 0) if r[1] - r[0] <= 0.25 * single_h]
    top_runs = [r for r in _runs(top > 0) if r[1] - r[0] <= 0.25 * single_h]
    if not foot_runs or not top_runs:
        return fallback
    tops = np.array([_centroid(top, *r) for r in top_runs])
    rows = []
    for run in foot_runs:
        base = _centroid(feet, *run)
        heights = base - tops
        ok = (heights > 0.6 * single_h) & (heights < 1.4 * single_h)
        if not ok.any():
            continue
        height = float(heights[ok][np.argmin(np.abs(heights[ok] - single_h))])
        rows.append(_Row(y + base, float(x + w), height, 1.0))
    return rows or fallback


def _find_rows(work: PageAnalysis) -> tuple[list[_Row], tuple[int, int]]:
    """Trace rows from the calibration pulses (see primitives.find_pulses), top to bottom, and the
    rows (top, bottom) between the page's header and footer text (working px).

    Header and footer are found as in ``preprocessing.locate_trace_area``: text lines ending above
    the middle of the first pulse, and starting below the last pulse's baseline.
    """
    boxes = work.boxes
    pulses, n_rows = work.pulses
    if n_rows < 3:
        raise NotAnEcgError(
            "no ECG lead layout found: fewer than 3 calibration pulses (the square 1 mV steps at the "
            f"left of each trace row) were recognised ({n_rows} found); is this a whole 12-lead ECG page?"
        )
    height = work.ink.shape[0]
    single_h = float(np.median(pulses[pulses[:, 3] <= 0.09 * height][:, 3]))
    rows: list[_Row] = []
    for box in pulses:
        rows.extend(_split_pulse(box, work, single_h))
    rows.sort(key=lambda r: r.baseline)
    # Two feet closer than half a pulse height (5 mm) are one row: printed rows are >= 20 mm apart.
    # Keep the one whose pulse is the likelier: resolved, then nearest the typical height. (A blurred,
    # JPEG-compressed photo can show a second, false foot line a few mm above the true one.)
    unique: list[_Row] = []
    for row in rows:
        if unique and row.baseline - unique[-1].baseline < 0.5 * single_h:
            if (-row.quality, abs(row.height - single_h)) < (-unique[-1].quality, abs(unique[-1].height - single_h)):
                unique[-1] = row
            continue
        unique.append(row)
    first, last = pulses[0], pulses[-1]
    text_box = box_between_text(
        boxes, work.ink, int(first[1]) + int(single_h) // 2, int(last[1] + last[3]) + 1
    )
    limits = (0, height) if text_box is None else (text_box[1], text_box[3])
    return unique, limits


def row_limits(baselines: list[float], i: int, half: float, height: int) -> tuple[int, int]:
    """Rows [y0, y1) of a band around baseline i, at most ``half`` px each side and no further than
    half-way to the neighbouring baselines."""
    b = baselines[i]
    up = min(half, (b - baselines[i - 1]) / 2) if i > 0 else half
    down = min(half, (baselines[i + 1] - b) / 2) if i + 1 < len(baselines) else half
    return max(0, int(b - up)), min(height, int(math.ceil(b + down)))


def _trace_extent(work: PageAnalysis, rows: list[_Row], ppm: float) -> tuple[float, float, list[float]]:
    """(start x, end x, per-row start x): median over rows of the first ink right of each pulse and of
    the last ink, within +/- _START_BAND_MM of the baseline."""
    height, width = work.ink.shape
    baselines = [r.baseline for r in rows]
    starts, ends = [], []
    for i, row in enumerate(rows):
        y0, y1 = row_limits(baselines, i, _START_BAND_MM * ppm, height)
        present = work.ink[y0:y1].any(axis=0)
        first = int(row.pulse_right + 0.5 * ppm)
        after = np.flatnonzero(present[first : first + int(15 * ppm)])
        starts.append(float(first + after[0]) if len(after) else math.nan)
        cols = np.flatnonzero(present)
        ends.append(float(cols[-1] + 1) if len(cols) else math.nan)
    if np.all(np.isnan(starts)):
        raise NotAnEcgError("no ECG traces found to the right of the calibration pulses")
    return float(np.nanmedian(starts)), float(np.nanmedian(ends)), starts


def _find_separators(
    work: PageAnalysis, rows: list[_Row], design: _Design, ppm: float, x0: float, x1: float
) -> list[_Separator]:
    """(centre x, half width, top y, bottom y) of vertical separator lines between x0 and x1, working px.

    A separator is a straight vertical line through the lead rows, at least _SEPARATOR_SHARE of their
    vertical span long: longer than nearly every QRS complex (the few giant ones that qualify are
    told apart by ``_time_scale``). Found by a vertical opening of the ink mask.
    """
    height = work.ink.shape[0]
    lead_rows = rows[: len(design.lead_rows)]
    span = lead_rows[-1].baseline - lead_rows[0].baseline
    length = int(max(20 * ppm, _SEPARATOR_SHARE * span))
    y0 = max(0, int(lead_rows[0].baseline - 15 * ppm))
    y1 = min(height, int(lead_rows[-1].baseline + 15 * ppm))
    c0, c1 = max(0, int(x0)), min(work.ink.shape[1], int(x1) + 1)
    if y1 - y0 <= length or c1 <= c0:
        return []
    region = np.ascontiguousarray(work.ink[y0:y1, c0:c1])
    opened = cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((length, 1), np.uint8))
    counts = opened.sum(axis=0)
    found = []
    for s, e in _runs(counts >= length):
        rows_with = np.flatnonzero(opened[:, s:e].any(axis=1))
        found.append(
            (c0 + (s + e) / 2.0, (e - s) / 2.0, float(y0 + rows_with[0]), float(y0 + rows_with[-1] + 1))
        )
    return found


def _grid_period(flat: np.ndarray, box: tuple[int, int, int, int], ppm: float) -> float | None:
    """Grid spacing in working px per mm, from the period of the 5 mm major lines (None if unclear).

    Paper (ink masked out) is averaged per column and per row; the strongest period within 20 % of
    5 mm (from the pulses) of the detrended profiles, refined by zero-padded FFT, averaged over axes.
    """
    x0, y0, x1, y1 = box
    region = flat[y0:y1, x0:x1].astype(np.float32)
    if min(region.shape) < 64:
        return None
    paper = (region > 200).astype(np.float32)
    periods = []
    for axis in (0, 1):
        profile = (region * paper).sum(axis=axis) / np.maximum(paper.sum(axis=axis), 1.0)
        profile = profile - np.convolve(profile, np.ones(41, np.float32) / 41.0, mode="same")
        profile = profile[20:-20]
        n = len(profile)
        spectrum = np.abs(np.fft.rfft(profile * np.hanning(n), 16 * n))
        period = 1.0 / np.maximum(np.fft.rfftfreq(16 * n), 1e-9)
        window = (period >= 4.0 * ppm) & (period <= 6.0 * ppm)
        if not window.any():
            return None
        periods.append(float(period[np.argmax(np.where(window, spectrum, 0.0))]))
    return float(np.mean(periods)) / 5.0


def _time_scale(
    x0: float, x1: float, separators: list[_Separator], design: _Design, ppm: float
) -> tuple[float, str, list[_Separator | None]]:
    """(px per s, source, the separator at each inner panel boundary or None) for the design.

    Every separator candidate s, read as boundary k, proposes a scale (s - x0) / (k * seconds);
    proposals beyond _TIME_SCALE_TOLERANCE of 25 mm/s * ppm are dropped. The proposal under which
    the most separators sit within 1.5 mm of their boundaries wins (ties: the longer separators,
    then the proposal nearest the prior), and its matched separators give the scale by least
    squares through x0. Real separators are exactly periodic and span all lead rows; a giant QRS
    stroke is neither. Without separators the prior is used: the trace extent (each row spans 10 s)
    when within the tolerance of nominal, else 25 mm/s.
    """
    nominal = MM_PER_S * ppm
    columns = len(design.lead_rows[0])
    extent = (x1 - x0) / RECORD_SECONDS
    if math.isfinite(extent) and abs(extent / nominal - 1.0) <= _TIME_SCALE_TOLERANCE:
        prior, source = extent, "trace_extent"
    else:
        prior, source = nominal, "nominal"
    tol = 1.5 * ppm
    best_key, best = None, None
    for sep in separators:
        for k in range(1, columns):
            pps = (sep[0] - x0) / (k * design.seconds)
            if abs(pps / nominal - 1.0) > _TIME_SCALE_TOLERANCE:
                continue
            matched = _match_boundaries(x0, pps, separators, design, tol)
            found = [m for m in matched if m is not None]
            key = (len(found), round(sum(m[3] - m[2] for m in found) / ppm), -abs(pps - prior))
            if best_key is None or key > best_key:
                best_key, best = key, matched
    if best is None:
        return prior, source, [None] * (columns - 1)
    ks = np.array([k for k, sep in enumerate(best, 1) if sep is not None], float)
    xs = np.array([sep[0] for sep in best if sep is not None], float)
    pps = float(((xs - x0) * ks).sum() / (ks * ks).sum()) / design.seconds
    return pps, "separators", best


def _match_boundaries(
    x0: float, pps: float, separators: list[_Separator], design: _Design, tol: float
) -> list[_Separator | None]:
    """Per inner boundary k = 1..columns-1, the separator nearest x0 + k * seconds * pps within tol."""
    matched: list[_Separator | None] = []
    for k in range(1, len(design.lead_rows[0])):
        expected = x0 + k * design.seconds * pps
        near = [sep for sep in separators if abs(sep[0] - expected) <= tol]
        matched.append(min(near, key=lambda sep: abs(sep[0] - expected)) if near else None)
    return matched


def _coverage(ink: np.ndarray, x0: float, x1: float, y0: int, y1: int) -> float:
    """Share of columns in [x0, x1) with ink between rows y0 and y1 (0 for an empty range)."""
    c0, c1 = max(0, int(round(x0))), min(ink.shape[1], int(round(x1)))
    if c1 <= c0 or y1 <= y0:
        return 0.0
    return float(ink[y0:y1, c0:c1].any(axis=0).mean())


def analyse_layout(gray: Any, measure_grid: bool = True) -> _Analysis:
    """Everything find_lead_panels reports, plus the working-scale data canonical_page needs.

    gray: the page, or its ``PageAnalysis`` (shared with the crop; nothing is computed twice).
    measure_grid=False skips the grid measurements (~5 ms at full resolution), which drawing does not
    need: the layout then reports has_grid False and a template without the grid suffix ('3x4').
    """
    work = PageAnalysis.of(gray)
    gray = work.gray
    height, width = work.ink.shape
    rows, text_limits = _find_rows(work)
    design = _DESIGNS.get(len(rows))
    if design is None:
        raise NotAnEcgError(
            f"no known ECG lead layout: {len(rows)} trace rows were found (expected 3, 4, 6 or 7 rows, "
            "each starting with a 1 mV calibration pulse)"
        )
    ppm = float(np.median([r.height for r in rows])) / PULSE_MM
    if not (_PAGE_MM[0] <= width / ppm <= _PAGE_MM[1]):
        raise NotAnEcgError(
            f"the calibration pulses make the page {width / ppm:.0f} mm wide; an ECG page is "
            f"{_PAGE_MM[0]:.0f}-{_PAGE_MM[1]:.0f} mm wide (1 mV pulses are 10 mm high)"
        )
    x0, x1, starts = _trace_extent(work, rows, ppm)
    separators = _find_separators(work, rows, design, ppm, x0, x1)
    pps, source, matched = _time_scale(x0, x1, separators, design, ppm)
    if len(rows) == 6 and not any(matched):
        # The other 6-row print of this machine: 3 rhythm strips (II, V1, V5) of 10 s, two
        # consecutive recordings, no separators (1 of the dataset's 114 gridded 6-row pages).
        raise NotAnEcgError(
            "6 trace rows without the lead separator at 5 s: this looks like a rhythm-strip printout "
            "(a few leads, 10 s each), not a 12-lead layout"
        )
    columns = len(design.lead_rows[0])
    bounds = [x0] + [
        s[0] if s is not None else x0 + k * design.seconds * pps for k, s in enumerate(matched, 1)
    ]
    # Only separators at panel boundaries are separators; other tall strokes are giant QRS complexes.
    separators = [s for s in matched if s is not None]
    bounds.append(x0 + columns * design.seconds * pps)

    baselines = [r.baseline for r in rows]
    rows_box = _rows_box(baselines, x0, x1, ppm, work.ink.shape)
    has_grid = measure_grid and grid_strength(work.flat, rows_box) >= GRID_LEVEL
    grid_ppm = _grid_period(work.flat, rows_box, ppm) if has_grid else None

    # Separators are expected between lead panels on real prints; a boundary without one is less sure.
    boundary_ok = [1.0] + [1.0 if s is not None else (0.8 if separators else 0.9) for s in matched] + [1.0]
    f = work.factor
    core = CORE_HALF_MM * ppm
    panels: dict[str, LeadPanel] = {}
    for r, leads in enumerate(design.lead_rows):
        row_q = rows[r].quality * (1.0 if abs(starts[r] - x0) <= 1.5 * ppm else 0.6)
        y0, y1 = row_limits(baselines, r, core, height)
        for c, lead in enumerate(leads):
            cov = _coverage(work.ink, bounds[c] + 0.1 * pps, bounds[c + 1], y0, y1)
            conf = min(1.0, cov / 0.9) * boundary_ok[c] * boundary_ok[c + 1] * row_q
            span = (bounds[c], bounds[c + 1], c * design.seconds, (c + 1) * design.seconds)
            panels[lead] = _panel(lead, r, c, span, baselines[r], conf, f, ppm, gray.shape)
    rhythm = None
    if design.rhythm:
        r = len(design.lead_rows)
        y0, y1 = row_limits(baselines, r, core, height)
        x_end = x0 + RECORD_SECONDS * pps
        conf = min(1.0, _coverage(work.ink, x0 + 0.1 * pps, x_end, y0, y1) / 0.9) * rows[r].quality
        rhythm = _panel("II", r, 0, (x0, x_end, 0.0, RECORD_SECONDS), baselines[r], conf, f, ppm, gray.shape)
    coverage_ok = sum(p.confidence > 0.3 for p in panels.values())
    if coverage_ok < 9:
        raise NotAnEcgError(
            f"calibration pulses were found but only {coverage_ok} of 12 lead panels hold a trace"
        )
    template = f"{design.stem}_{'grid' if has_grid else 'nogrid'}" if measure_grid else design.stem
    layout = PageLayout(
        template=template,
        has_grid=bool(has_grid),
        has_rhythm=design.rhythm,
        page_size=(int(gray.shape[0]), int(gray.shape[1])),
        px_per_mm=ppm * f,
        grid_px_per_mm=None if grid_ppm is None else grid_ppm * f,
        px_per_s=pps * f,
        time_source=source,
        baselines=tuple(b * f for b in baselines),
        trace_x0=x0 * f,
        trace_x1=x1 * f,
        separators=tuple(s[0] * f for s in separators),
        panels={lead: panels[lead] for lead in LEADS},
        rhythm=rhythm,
    )
    return _Analysis(
        work, design, tuple(rows), ppm, pps, x0, tuple(separators), tuple(bounds), text_limits, layout
    )


def _rows_box(
    baselines: list[float], x0: float, x1: float, ppm: float, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Working-pixel box around all trace rows (for the grid measurements)."""
    height, width = shape
    return (
        max(0, int(x0)),
        max(0, int(baselines[0] - 12 * ppm)),
        min(width, int(x1)),
        min(height, int(baselines[-1] + 12 * ppm)),
    )


def _panel(
    lead: str,
    row: int,
    column: int,
    span: tuple[float, float, float, float],
    baseline: float,
    confidence: float,
    factor: int,
    ppm: float,
    shape: tuple[int, int],
) -> LeadPanel:
    """LeadPanel in page pixels from working-scale positions; span = (x0, x1, t0, t1)."""
    x0, x1, t0, t1 = span
    height, width = shape
    half = PANEL_HALF_MM * ppm
    box = (
        max(0, int(round(x0 * factor))),
        max(0, int(round((baseline - half) * factor))),
        min(width, int(round(x1 * factor))),
        min(height, int(round((baseline + half) * factor))),
    )
    return LeadPanel(lead, box, row, column, t0, t1, baseline * factor, round(float(confidence), 3))


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def find_lead_panels(gray: np.ndarray) -> PageLayout:
    """Lead layout of an uncropped ECG page.

    Args:
        gray: (H, W) uint8 grayscale page (``decode_image`` output; colour already converted), any
            resolution.

    Returns:
        ``PageLayout`` with the template, pixel and time scales, row baselines, the 12 lead panels
        and the rhythm strip (boxes in pixels of ``gray``).

    How (on a copy shrunk by an integer factor to ~1106 px wide, background flattened, ink = darker
    than 63 % of the local paper brightness):
      1. Calibration pulses (``primitives.find_pulses``) give the trace rows; each pulse's feet
         give the row's baseline and its feet-to-top distance (10 mm) the px/mm scale (median over
         rows; line centres weighted by darkness, so sub-pixel). Touching pulses of close rows are
         split by their feet. The row count picks the layout (3/4 rows: 3x4, 6/7 rows: 6x2).
      2. The traces start at the first ink right of the pulses (median over rows) and end at the last.
      3. Column boundaries come from the time scale, starting at the trace start: vertical separator
         lines (straight ink columns longer than 60 % of the lead rows' span) that sit exactly every
         2.5 s (3x4) or 5 s (6x2) for a scale within 10 % of 25 mm/s * px/mm are the boundaries and
         give the printed scale; without them the trace extent (10 s per row) gives it, else
         25 mm/s. Real pages print 2.5 s in 61.9 mm of their own grid (24.8 mm/s).
      4. Ruled paper: ``primitives.grid_strength``; grid_px_per_mm from the 5 mm grid period.

    Raises:
        NotAnEcgError: no calibration pulses, a row count of no known layout, an implausible scale,
            panels without traces, or 6 rows without the 5 s separator (the machine's rhythm-strip
            printout: 3 leads x 10 s, twice).
        InvalidImageError: ``gray`` is not a (H, W) uint8 array.
    """
    return analyse_layout(gray).layout


def canonical_page(
    gray: Any,
    height: int = 384,
    width: int = 768,
    seconds_per_lead: float = 2.5,
) -> np.ndarray:
    """Redraw any recognised page as one fixed, template-free layout.

    Layout: rows 1-3 hold I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6, each column 2.5 s wide and
    showing the FIRST ``seconds_per_lead`` seconds of that lead's printed panel (so a 6x2 page's 5 s
    panels contribute their first half); row 4 is the 10 s lead-II rhythm strip. Time runs at
    width / 10 s px per second; each row shows CANONICAL_ROW_MM (30 mm) of paper centred on its
    baseline, so all panels share one mm scale (3.07 px/mm across and 3.2 down at 384 x 768).
    Pages without a rhythm strip (6x2_grid) show their lead-II panel (5 s) at its start and white
    after it.

    Cleaning: only ink (darker than 63 % of the paper brightness) is drawn, so grid, shading and paper
    texture vanish; header and footer text (patient data, diagnosis, settings) are cut away; ink of
    other rows is dropped (components whose centre of mass lies nearer another row's baseline, and
    pieces that do not reach the row's own band of +/- 12 mm, at most half-way to the next row);
    separator lines are erased; in the first 8 mm of every panel, where the lead label is printed,
    only the trace is kept: it is followed column by column from the right, unconnected glyphs are
    dropped and glyph strokes standing on the trace within the label's text band are cut off; the
    first 1 mm and last 0.75 mm of every panel are left white (where 3x4 pages print separators).
    Calibration pulses lie left of every panel and are never drawn. The ink mask is area-resampled
    to the output, which gives anti-aliased dark lines on white.

    Args:
        gray: (H, W) uint8 uncropped page, any resolution, or its ``PageAnalysis``.
        height, width: output size (>= 16 each); the default 384 x 768 gives 3.07 px/mm across and
            3.2 px/mm down.
        seconds_per_lead: seconds of each lead shown, 0 < s <= 2.5.

    Returns:
        (height, width) uint8, 255 = paper, darker = ink.

    Raises:
        NotAnEcgError: as ``find_lead_panels``.
        ValueError: bad size or seconds_per_lead.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 16 <= value <= 8192:
            raise ValueError(f"{name} must be an integer in 16..8192, got {value!r}")
    if not isinstance(seconds_per_lead, int | float) or not 0 < seconds_per_lead <= 2.5:
        raise ValueError(f"seconds_per_lead must be in (0, 2.5], got {seconds_per_lead!r}")
    return _render(
        analyse_layout(gray, measure_grid=False), int(height), int(width), float(seconds_per_lead)
    )


# --------------------------------------------------------------------------------------------------
# Canonical rendering
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ink:
    """Ink of an analysed page prepared for drawing (working scale).

    labels: 8-connected component labels (int32) of the ink inside the trace region (between header
        and footer text, around the traces), separator lines erased; origin: (y, x) of its corner.
    home: (n,) int, per label the trace row whose baseline is nearest the component's centre of mass.
    erased: (x0, x1, y0, y1) spans of the erased separator pixels.
    """

    labels: np.ndarray
    origin: tuple[int, int]
    home: np.ndarray
    erased: tuple[tuple[int, int, int, int], ...]


def prepare_ink(a: _Analysis) -> _Ink:
    """Erase the separators (they join every row's trace into one component), then label the ink.

    Only the region between the header and footer text is labelled: patient data, diagnoses and
    filter settings must never reach the model (and labelling less is faster).
    """
    height, width = a.work.ink.shape
    y0, y1 = a.text_limits
    x0 = max(0, int(a.x0) - 2)
    x1 = min(width, int(math.ceil(a.x0 + RECORD_SECONDS * a.pps)) + 3)
    mask = a.work.ink[y0:y1, x0:x1].copy()
    erased = []
    for x, half_width, top, bottom in a.separators:
        c0, c1 = max(0, int(math.floor(x - half_width - 1))), int(math.ceil(x + half_width + 1))
        r0, r1 = max(0, int(top) - 1), int(bottom) + 1
        mask[max(0, r0 - y0) : max(0, r1 - y0), max(0, c0 - x0) : max(0, c1 - x0)] = 0
        erased.append((c0, c1, r0, r1))
    _, labels, _, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    baselines = np.array([r.baseline for r in a.rows]) - y0
    home = np.argmin(np.abs(centroids[:, 1:2] - baselines[None, :]), axis=1)
    return _Ink(labels, (y0, x0), home, tuple(erased))


def _render(a: _Analysis, height: int, width: int, seconds_per_lead: float) -> np.ndarray:
    """Canonical (height, width) uint8 image of an analysed page (see canonical_page)."""
    out = np.full((height, width), 255, np.uint8)
    ink = prepare_ink(a)
    n_rows = len(CANONICAL_LEADS) + 1
    row_h = height / n_rows
    out_pps = width / RECORD_SECONDS
    where = {lead: (r, c) for r, leads in enumerate(a.design.lead_rows) for c, lead in enumerate(leads)}
    for r, leads in enumerate(CANONICAL_LEADS):
        for c, lead in enumerate(leads):
            page_row, page_col = where[lead]
            window = _panel_mask(a, ink, page_row, a.bounds[page_col], seconds_per_lead)
            _paste(out, window, (c * width / len(leads), r * row_h), (seconds_per_lead * out_pps, row_h))
    if a.design.rhythm:
        page_row, x_left, seconds = len(a.design.lead_rows), a.x0, RECORD_SECONDS
    else:
        page_row, page_col = where["II"]
        x_left, seconds = a.bounds[page_col], a.design.seconds
    window = _panel_mask(a, ink, page_row, x_left, seconds)
    _paste(out, window, (0.0, (n_rows - 1) * row_h), (seconds * out_pps, row_h))
    return out


def _panel_mask(a: _Analysis, ink: _Ink, page_row: int, x_left: float, seconds: float) -> np.ndarray:
    """Cleaned 0/1 uint8 working-scale window of one panel: ``seconds`` of trace row ``page_row`` from
    working x ``x_left``, CANONICAL_ROW_MM high centred on the row's baseline (zero outside the page).

    Kept: page components whose home row is this row, or that cross this row's baseline +/- 2 mm
    (traces of two rows that touch), and of these the pieces inside the window that reach the row's
    own band (+/- CORE_HALF_MM, at most half-way to the neighbouring rows). Then the label area is
    cleaned (``clean_label_area``), erased separator columns are bridged and both ends blanked.
    """
    height = a.work.ink.shape[0]
    base = a.rows[page_row].baseline
    half = CANONICAL_ROW_MM / 2.0 * a.ppm
    sx0, sx1 = int(round(x_left)), max(int(round(x_left)) + 1, int(round(x_left + seconds * a.pps)))
    sy0, sy1 = int(round(base - half)), int(round(base + half))
    labels = np.zeros((sy1 - sy0, sx1 - sx0), np.int32)  # label 0 (background) outside the region
    oy, ox = ink.origin
    lh, lw = ink.labels.shape
    cy0, cy1 = max(oy, sy0), min(oy + lh, sy1)
    cx0, cx1 = max(ox, sx0), min(ox + lw, sx1)
    if cy1 > cy0 and cx1 > cx0:
        labels[cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0] = ink.labels[
            cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox
        ]
    home = (ink.home == page_row).view(np.uint8)
    home[0] = 0
    tight0 = int(base - 2 * a.ppm) - sy0
    tight1 = int(math.ceil(base + 2 * a.ppm)) - sy0
    crossing = np.zeros(len(ink.home), np.uint8)
    crossing[labels[tight0:tight1].ravel()] = 1
    crossing[0] = 0
    core0, core1 = row_limits([r.baseline for r in a.rows], page_row, CORE_HALF_MM * a.ppm, height)
    window = row_ink(home[labels], (home | crossing)[labels], (core0 - sy0, core1 - sy0), (tight0, tight1))
    carry = set()
    for c0, c1, r0, r1 in ink.erased:
        if r0 < sy1 and r1 > sy0:
            carry.update(c - sx0 for c in range(c0, c1) if sx0 <= c < sx1)
    clean_label_area(window, base - sy0, a.ppm, carry)
    bridge(window, carry)
    # Every panel loses the same thin strips at both ends, where 3x4 pages print separators (the
    # trace there cannot be recovered); doing it everywhere keeps it from marking the template.
    window[:, : int(round(_EDGE_MM[0] * a.ppm))] = 0
    window[:, window.shape[1] - int(round(_EDGE_MM[1] * a.ppm)) :] = 0
    return window


def row_ink(
    home: np.ndarray, candidate: np.ndarray, core: tuple[int, int], tight: tuple[int, int]
) -> np.ndarray:
    """0/1 window of the ink that belongs to the panel's row.

    home: 0/1 ink of page components whose home is this row; candidate: that plus the ink of other
    rows' components that cross this row's baseline +/- 2 mm (rows [tight0, tight1)). Pieces (8-
    connected within the window) of home ink are kept when they reach the row's band (rows
    [core0, core1)): tips of a neighbour's waves entering the window from its edge are dropped.
    Pieces of the other components only when they cross the baseline band themselves: a giant QRS
    of a neighbour that runs through this row stays, that neighbour's other waves do not.
    """
    n, labels = cv2.connectedComponents(candidate, connectivity=8)
    if n <= 1:
        return candidate
    h = candidate.shape[0]
    core0, core1 = max(0, core[0]), min(h, core[1])
    tight0, tight1 = max(0, tight[0]), min(h, tight[1])
    is_home = np.zeros(n, bool)
    is_home[labels[home > 0]] = True
    reaches_core = np.zeros(n, bool)
    reaches_core[labels[core0:core1].ravel()] = True
    crosses = np.zeros(n, bool)
    crosses[labels[tight0:tight1].ravel()] = True
    keep = (is_home & reaches_core) | crosses
    keep[0] = False
    return keep.view(np.uint8)[labels]


def _paste(
    out: np.ndarray, window: np.ndarray, origin: tuple[float, float], size: tuple[float, float]
) -> None:
    """Area-resample a 0/1 window to ``size`` (w, h) output px at ``origin`` (x, y); darken ``out``."""
    dx0, dy0 = int(round(origin[0])), int(round(origin[1]))
    dx1 = min(out.shape[1], int(round(origin[0] + size[0])))
    dy1 = min(out.shape[0], int(round(origin[1] + size[1])))
    if dx1 <= dx0 or dy1 <= dy0:
        return
    cover = cv2.resize(window * np.uint8(255), (dx1 - dx0, dy1 - dy0), interpolation=cv2.INTER_AREA)
    dest = out[dy0:dy1, dx0:dx1]
    np.minimum(dest, 255 - cover, out=dest)


def clean_label_area(window: np.ndarray, base: float, ppm: float, carry: set[int]) -> None:
    """Keep only the trace in the first LABEL_MM of the window (where the lead label prints), in place.

    1. The trace is followed from 2 mm right of the label area to the panel start as a cheapest path
       through the columns' ink runs (``_trace_path``): runs that touch cost nothing, jumps cost their
       length. Ink off the path (the label's glyphs, unless they touch the trace) is erased.
    2. Where a glyph stands on the trace, its stroke is part of the trace's run in that column. A run
       that reaches more than max(2 px, 0.6 mm) beyond the span of the path two columns to either
       side, with the far end inside the label's text band, is cut back to that span. Steep waves
       pass: the path two columns away spans them; isolated glyph strokes (<= 3 px wide) do not.
    Separator columns (``carry``) repeat the previous column's run.
    """
    h, w = window.shape
    c_label = min(int(round(LABEL_MM * ppm)), w)
    if c_label <= 0:
        return
    c_end = min(w, c_label + int(round(2 * ppm)))
    band_top = base - _TEXT_BAND_MM[0] * ppm
    band_bottom = base - _TEXT_BAND_MM[1] * ppm
    path = _trace_path(window, c_label, c_end, base, _MAX_JUMP_MM * ppm, carry, (band_top, band_bottom))
    grow = max(2.0, 0.6 * ppm)
    kept = np.zeros((h, c_label), np.uint8)
    for c in range(c_label):
        run = path[c]
        if run is None:
            continue
        top, bottom = run
        left = path[c - 2] if c >= 2 else None
        right = path[c + 2] if c + 2 < c_end else None
        if left is not None or right is not None:
            if left is None or right is None:
                hull_top, hull_bottom = left or right
            else:
                hull_top, hull_bottom = min(left[0], right[0]), max(left[1], right[1])
            if hull_top - top > grow and top >= band_top:
                top = min(hull_top, bottom - 1)
            if bottom - hull_bottom > grow and bottom <= band_bottom:
                bottom = max(hull_bottom, top + 1)
        kept[top:bottom, c] = 1
    window[:, :c_label] = kept


def _trace_path(
    window: np.ndarray,
    c_label: int,
    c_end: int,
    base: float,
    max_jump: float,
    carry: set[int],
    band: tuple[float, float],
) -> list[tuple[int, int] | None]:
    """One ink run [top, bottom) per column 0..c_end-1 (None where a column has none): the cheapest
    path leftwards from the run nearest the baseline in the last column with ink, which must lie
    right of the label area (columns c_label..c_end-1); without one there is no trace to follow and
    every column gets None (a lone label is erased, not mistaken for the trace).

    Step cost between runs of neighbouring columns: their vertical gap (0 when they touch), plus
    1000 when it exceeds max_jump, plus 1 % of the centre shift (prefers the smoother of equal
    paths), plus 0.2 when the new run's centre lies in the label text ``band`` (top, bottom): where
    a glyph touches the trace, following the glyph costs more than staying on the trace, while a
    trace that really runs through the band has no cheaper alternative. Columns without ink and
    separator columns (``carry``) are passed through; separator columns then get the run to their
    right.
    """
    runs_by_col = column_runs(window[:, :c_end])
    for c in carry:
        if c < c_end:
            runs_by_col[c] = []
    last = next((c for c in range(c_end - 1, c_label - 1, -1) if runs_by_col[c]), None)
    path: list[tuple[int, int] | None] = [None] * c_end
    if last is None:
        return path
    seed = min(runs_by_col[last], key=lambda r: abs((r[0] + r[1]) / 2.0 - base))
    # Dynamic programming from right to left: states are the runs of a column.
    states = [seed]
    costs = [0.0]
    back: list[tuple[int, list[int]]] = []  # (column, index of the predecessor state per state)
    for c in range(last - 1, -1, -1):
        runs = runs_by_col[c]
        if not runs:
            continue
        new_costs, choice = [], []
        for run in runs:
            in_band = 0.2 if band[0] <= (run[0] + run[1]) / 2.0 <= band[1] else 0.0
            best, cost = cheapest_step(states, costs, run, max_jump)
            new_costs.append(cost + in_band)
            choice.append(best)
        back.append((c, choice))
        states, costs = runs, new_costs
    # Backtrack from the cheapest state in the leftmost column with ink.
    index = min(range(len(costs)), key=costs.__getitem__)
    chosen: dict[int, tuple[int, int]] = {}
    for c, choice in reversed(back):
        chosen[c] = runs_by_col[c][index]
        index = choice[index]
    chosen[last] = seed
    previous = None
    for c in range(c_end - 1, -1, -1):  # right to left: separators repeat the run to their right
        if c in chosen:
            previous = chosen[c]
            path[c] = previous
        elif c in carry and previous is not None:
            path[c] = previous
    return path


def step_cost(a: tuple[int, int], b: tuple[int, int], max_jump: float) -> float:
    """Cost of the trace going from run a to run b in the next column (see _trace_path)."""
    above, below = a[0] - b[1], b[0] - a[1]
    gap = above if above > below else below
    if gap < 0:
        gap = 0
    shift = abs((a[0] + a[1]) - (b[0] + b[1])) / 2.0
    return gap + (1000.0 if gap > max_jump else 0.0) + 0.01 * shift


def cheapest_step(states: list[tuple[int, int]], costs: list[float], run: tuple[int, int],
                  max_jump: float) -> tuple[int, float]:
    """(i, costs[i] + step_cost(states[i], run, max_jump)) of the cheapest i, the first on ties.

    The same sums as calling ``step_cost`` per state, written out: this is the inner loop of the
    trace-following searches (~13 panels a page), where Python's call overhead was most of the time.
    """
    r0, r1 = run
    centre = r0 + r1
    best, best_cost = 0, math.inf
    for i, (s0, s1) in enumerate(states):
        above, below = s0 - r1, r0 - s1
        gap = above if above > below else below
        if gap < 0:
            gap = 0
        cost = costs[i] + (gap + (1000.0 if gap > max_jump else 0.0) + 0.01 * (abs((s0 + s1) - centre) / 2.0))
        if cost < best_cost:
            best, best_cost = i, cost
    return best, best_cost


def bridge(window: np.ndarray, carry: set[int]) -> None:
    """Fill erased separator columns outside the label area with the column just left of them."""
    for c in sorted(carry):
        if c > 0 and (c - 1) not in carry and not window[:, c].any():
            j = c
            while j in carry and j < window.shape[1]:
                window[:, j] = window[:, c - 1]
                j += 1
