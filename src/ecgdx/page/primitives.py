"""Low-level page measurements shared by crop, canonical layout, orientation, normalisation and digitisation.

Pages are analysed at about ``WORK_WIDTH`` pixels wide (``shrink`` by an integer factor), with their
paper background divided out (``flatten_background``); dark ink is split into connected components
(``component_boxes``), among which ``find_pulses`` finds the 1 mV calibration pulses and
``text_lines`` the glyphs of text lines; ``box_between_text`` is the trace area between header and
footer text, ``grid_strength`` how strongly the paper is ruled, ``estimate_skew`` the page's rotation.
Used by ``ecgdx.page.preprocessing`` (trace-area crop), ``ecgdx.page.layout`` (lead panels, canonical page),
``ecgdx.page.orientation``, ``ecgdx.page.normalize`` and ``ecgdx.signals.digitize``; this module imports none of them.

numpy and OpenCV only.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from ecgdx.errors import InvalidImageError

__all__ = [
    "GRID_LEVEL",
    "INK_LEVEL",
    "MAX_GLYPHS",
    "MAX_INK_LEVEL",
    "SKEW_RANGE",
    "WORK_WIDTH",
    "as_gray",
    "box_between_text",
    "component_boxes",
    "estimate_skew",
    "find_pulses",
    "flatten_background",
    "grid_strength",
    "hanging_fragments",
    "ink_level",
    "shrink",
    "text_lines",
]

# Pages are analysed at about this width (the 50 % PNGs' width), reached by an integer shrink factor
# (OpenCV's fast path): component sizes then mean the same at every input resolution.
WORK_WIDTH = 1106
# Ink = darker than this after background flattening (paper ~255, grid dots ~185-240, ink < 120).
INK_LEVEL = 160
# The most the ink level rises for a page whose darkest ink is grey (``ink_level``).
MAX_INK_LEVEL = 190
# A page counts as gridded when its paper profiles ripple by more than this many gray levels
# (measured on dev pages at 35-100 % scale, clean, noisy or JPEG-60: grid >= 0.86, none <= 0.49).
GRID_LEVEL = 0.65
# Text-line grouping compares glyphs pairwise; beyond this many candidates the rest is noise.
MAX_GLYPHS = 4000
# Deskew search range (degrees). Beyond ~4 deg the pulses no longer line up.
SKEW_RANGE = 4.0


def as_gray(gray: Any) -> np.ndarray:
    """Validate a (H, W) uint8 page for the layout functions."""
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        shape = getattr(gray, "shape", None)
        dtype = getattr(gray, "dtype", type(gray).__name__)
        raise InvalidImageError(f"expected a (H, W) uint8 grayscale page, got shape {shape} dtype {dtype}")
    if min(gray.shape) < 16:
        raise InvalidImageError(f"the page is too small to analyse ({gray.shape[1]}x{gray.shape[0]})")
    return gray


def shrink(gray: np.ndarray, factor: int) -> np.ndarray:
    """Average factor x factor blocks (the last partial row/column of blocks is dropped)."""
    if factor <= 1:
        return gray
    height, width = gray.shape
    h, w = height // factor, width // factor
    # Exact integer ratios take OpenCV's fast area path (~20x faster than a fractional one).
    return cv2.resize(gray[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Divide out the paper brightness (coarse max filter) -> (H, W) uint8 with paper ~255."""
    height, width = gray.shape
    small = shrink(gray, 8)
    # Lines are thin, so the brightest cell in a 5x5 neighbourhood of 8x8-pixel cells is paper.
    background = cv2.dilate(small, np.ones((5, 5), np.uint8))
    background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, np.maximum(background, 1), scale=255)


def ink_level(flat: np.ndarray) -> float:
    """The gray level below which a background-flattened (paper ~255) uint8 page is ink.

    ``INK_LEVEL`` for a sharp print, whose darkest ink (0.5th percentile, from the histogram) is near
    black: 1-4 on every development PNG and full-resolution JPEG, <= 50 on simulated phone photos.
    A blurred or faded picture has grey traces (darkest ~120 at a blur of sigma 2 px on a 50 % page),
    and its thin pulse and trace lines fall apart at ``INK_LEVEL``: the level then moves half-way from
    the darkest ink to the paper, up to ``MAX_INK_LEVEL`` (grid dots stay lighter). Pages whose darkest
    ink is below 65 keep exactly ``INK_LEVEL``.
    """
    cumulative = np.cumsum(cv2.calcHist([flat], [0], None, [256], [0, 256]).ravel())
    darkest = float(np.searchsorted(cumulative, 0.005 * cumulative[-1]))
    return float(np.clip((darkest + 255.0) / 2.0, INK_LEVEL, MAX_INK_LEVEL))


def component_boxes(ink: np.ndarray) -> np.ndarray:
    """(n, 4) int64 x, y, w, h bounding boxes of the 8-connected components of a 0/1 uint8 mask.

    Outer contours give the same boxes as connectedComponentsWithStats at half its cost; RETR_CCOMP
    keeps components lying inside the holes of others (text inside a trace loop).
    """
    contours, hierarchy = cv2.findContours(ink, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 4), np.int64)
    outer = hierarchy[0][:, 3] < 0
    boxes = [cv2.boundingRect(c) for c, keep in zip(contours, outer, strict=True) if keep]
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def find_pulses(boxes: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, int]:
    """Calibration-pulse boxes ((n, 4) x, y, w, h sorted by y) and the number of trace rows they mark.

    A pulse is a narrow outline (ink fills < 60 % of its box) about 10 mm tall and 2-5 mm wide in
    the left fifth of the page; all pulses share one column and one height, which rejects letters
    and trace fragments. On crowded pages two or three pulses of adjacent rows touch; such a stack
    in the same column counts as round(height / pulse height) rows.
    """
    height, width = ink.shape
    x, y, w, h = boxes.T
    shape_ok = (x < 0.2 * width) & (w >= 0.006 * width) & (w <= 0.045 * width) & (h >= 1.3 * w)
    cand = boxes[shape_ok & (h >= 0.025 * height) & (h <= 0.3 * height)]
    fill = np.array([cv2.countNonZero(ink[b[1] : b[1] + b[3], b[0] : b[0] + b[2]]) for b in cand]).reshape(-1)
    cand = cand[fill <= 0.6 * cand[:, 2] * cand[:, 3]]
    single = cand[cand[:, 3] <= 0.09 * height]
    if len(single) < 2:
        return cand[:0], 0
    cx, ch = single[:, 0], single[:, 3]
    same_col = np.abs(cx[:, None] - cx[None, :]) <= 0.01 * width
    same_h = np.abs(ch[:, None] - ch[None, :]) <= 0.2 * ch[:, None]
    best = int(np.argmax((same_col & same_h).sum(axis=1)))
    group = single[same_col[best] & same_h[best]]
    pulse_h = float(np.median(group[:, 3]))
    stacked = cand[
        (np.abs(cand[:, 0] - single[best, 0]) <= 0.01 * width)
        & (cand[:, 3] >= 1.6 * pulse_h)
        & (cand[:, 3] <= 3.5 * pulse_h)
    ]
    rows = len(group) + int(sum(round(b[3] / pulse_h) for b in stacked))
    group = np.concatenate([group, stacked])
    return group[np.argsort(group[:, 1])], rows


def text_lines(boxes: np.ndarray, shape: tuple[int, int], where: np.ndarray) -> np.ndarray:
    """Boolean mask: boxes (among ``where``) that are glyphs of a text line (>= 3 side by side)."""
    height, width = shape
    x, y, w, h = boxes.T
    idx = np.flatnonzero(where & (h <= 0.04 * height) & (w <= 0.08 * width) & (w * h >= 2))
    if len(idx) > MAX_GLYPHS:
        # A speckled photo: keep the largest blobs (glyphs) and drop the smallest (noise) so the
        # pairwise comparison below stays bounded.
        idx = idx[np.argsort(-(w * h)[idx], kind="stable")[:MAX_GLYPHS]]
    mask = np.zeros(len(boxes), bool)
    top, bot, hh, xx = y[idx], y[idx] + h[idx], h[idx], x[idx]
    for start in range(0, len(idx), 512):  # chunks keep the pairwise matrices small
        part = slice(start, start + 512)
        overlap = np.minimum(bot[part, None], bot[None, :]) - np.maximum(top[part, None], top[None, :])
        same_line = overlap >= 0.5 * np.minimum(hh[part, None], hh[None, :])
        # Glyphs of one line are close together; isolated trace fragments are not.
        near = np.abs(xx[part, None] - xx[None, :]) <= 0.06 * width
        mask[idx[part]] = (same_line & near).sum(axis=1) >= 3  # itself + 2 neighbours
    return mask


def box_between_text(
    boxes: np.ndarray, ink: np.ndarray, header_limit: int, footer_limit: int
) -> tuple[int, int, int, int] | None:
    """Box between the header and the footer text, across all ink in between (working pixels).

    Header = text lines and long rules ending at or above row header_limit; footer = text lines
    starting at or below row footer_limit. Returns (x0, y0, x1, y1) or None.
    """
    height, width = ink.shape
    x, y, w, h = boxes.T
    rules = (w >= 0.4 * width) & (h <= 0.02 * height)
    header = (text_lines(boxes, ink.shape, y + h <= header_limit) | rules) & (y + h <= header_limit)
    footer = text_lines(boxes, ink.shape, y >= footer_limit)
    if header.any():
        header |= hanging_fragments(boxes, header, ink.shape, header_limit)
    margin = max(2, round(0.004 * height))
    top = int((y + h)[header].max()) + margin if header.any() else 0
    bottom = int(y[footer].min()) - margin if footer.any() else height
    if bottom - top < 2:
        return None
    # Columns holding ink between header and footer; >= 2 pixels ignores single specks of noise.
    counts = cv2.reduce(ink[top:bottom], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    cols = np.flatnonzero(counts >= 2)
    if len(cols) == 0:
        return None
    x_margin = round(0.01 * width)
    return max(0, int(cols[0]) - x_margin), top, min(width, int(cols[-1]) + 1 + x_margin), bottom


def hanging_fragments(
    boxes: np.ndarray, header: np.ndarray, shape: tuple[int, int], header_limit: int
) -> np.ndarray:
    """Small pieces just below the last header line (descenders cut off where the grid overprints
    the text), as a boolean mask: they are text too and must stay out of the crop."""
    height, width = shape
    x, y, w, h = boxes.T
    bottom = int((y + h)[header].max())
    last = header & (y + h >= bottom - 0.02 * height)
    line_x0, line_x1 = int(x[last].min()), int((x + w)[last].max())
    return (
        ~header
        & (h <= 0.02 * height)
        & (w <= 0.03 * width)
        & (y >= bottom - 0.02 * height)
        & (y <= bottom + 0.005 * height)
        & (y + h <= header_limit)
        & (x >= line_x0)
        & (x + w <= line_x1)
    )


def grid_strength(flat: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How strongly the paper of the box is ruled, in gray levels (0 = plain paper).

    Paper pixels (ink and its anti-aliased edges masked out) are averaged per column and per row;
    grid lines make these profiles ripple, plain paper keeps them flat. Averaging hundreds of pixels
    cancels sensor and JPEG noise, which a per-pixel count of "faint" pixels would mistake for grid.
    Returns the median absolute deviation of both profiles from their 9-pixel moving average.
    """
    x0, y0, x1, y1 = box
    region = flat[y0:y1, x0:x1]
    if min(region.shape) < 20:
        return 0.0
    paper = (cv2.dilate((region < INK_LEVEL).view(np.uint8), np.ones((3, 3), np.uint8)) == 0).view(np.uint8)
    values = region.astype(np.float32) * paper
    ripples = []
    for axis in (0, 1):
        count = paper.sum(axis=axis, dtype=np.float32)
        profile = values.sum(axis=axis) / np.maximum(count, 1.0)
        smooth = np.convolve(profile, np.ones(9, np.float32) / 9.0, mode="same")
        ripples.append(float(np.median(np.abs(profile - smooth)[5:-5])))
    return float(np.mean(ripples))


def estimate_skew(gray: np.ndarray, *, max_angle: float = SKEW_RANGE, fine: bool = True,
                  working_flat: np.ndarray | None = None) -> float:
    """Page rotation in degrees (counter-clockwise positive, as ``cv2.getRotationMatrix2D``).

    Dark structure (ink, and grid lines on ruled paper) is projected onto the vertical axis along
    lines of slope tan(angle); printed pages are made of horizontal lines (grid, rules, text lines,
    trace baselines), so the projection is sharpest (largest sum of squares) at the page's angle.
    Coarse search on a 4x smaller copy (0.25 deg steps), then 0.1 and 0.02 deg steps at working scale.
    Args: gray (H, W) uint8 page; max_angle: search range (degrees); fine: refine at full working
    scale in 0.02 deg steps (else at quarter scale in 0.1 deg steps: ~10x faster, for deciding whether
    a page needs rotating at all). Returns the angle, 0.0 for blank pages and for angles at the
    edge of the range (no clear optimum). working_flat: the page's flattened working-scale copy
    (``PageAnalysis.flat``) when the caller has it already; the fine search starts from it.
    """
    gray = as_gray(gray)
    factor = max(1, round(gray.shape[1] / WORK_WIDTH))
    if fine:
        flat = working_flat if working_flat is not None else flatten_background(shrink(gray, factor))
        # The working-scale search (most of the time) in two steps, 0.1 then 0.02 deg, instead of
        # 31 angles at 0.02: the projection's sharpness varies smoothly over 0.1 deg there
        # (1106 px wide: 0.1 deg moves a line's ends by 1.9 px, about its width).
        stages = ((4, 0.25, max_angle), (1, 0.1, 0.3), (1, 0.02, 0.08))
    else:
        # One shrink to quarter working scale, flattened there: the resizes dominated the fast mode.
        h, w = gray.shape
        quarter = shrink(gray, 4 * factor) if min(h, w) >= 4 * factor else cv2.resize(
            gray, (max(1, w // (4 * factor)), max(1, h // (4 * factor))), interpolation=cv2.INTER_AREA)
        flat = flatten_background(quarter)
        stages = ((2, 0.5, max_angle), (1, 0.1, 0.6))
    angle = 0.0
    dark_pixels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for reduce_by, step, span in stages:
        if reduce_by not in dark_pixels:
            small = flat if reduce_by == 1 else cv2.resize(
                flat, (flat.shape[1] // reduce_by, flat.shape[0] // reduce_by), interpolation=cv2.INTER_AREA)
            # Weight 235 - gray where the page is darker than 235, found on the uint8 copy (the
            # same pixels and values as clipping a float copy, without one); fast mode: ink only
            # (traces, text, rules, weight >= 75), not the grid.
            ys, xs = np.nonzero(small < 235 if fine else small <= 160)
            weight = 235.0 - small[ys, xs]  # float64: the weights' products below are float64 anyway
            dark_pixels[reduce_by] = (ys.astype(np.float64), xs - small.shape[1] / 2.0, weight)
        ys, xs, w = dark_pixels[reduce_by]
        if len(ys) < 50:
            return 0.0
        candidates = np.arange(angle - span, angle + span + step / 2, step)
        scores = []
        for a in candidates:
            # y measured along the rotated horizontal: rows of a page tilted by a (CCW) rise to the right.
            proj = ys + xs * math.tan(math.radians(a))
            proj -= proj.min()
            # Linear binning: the score varies smoothly with the angle (no rounding aliases).
            low = np.floor(proj)
            frac = proj - low
            low = low.astype(np.int64)
            bins = low.max() + 2
            hist = np.bincount(low, weights=w * (1.0 - frac), minlength=bins)
            hist += np.bincount(low + 1, weights=w * frac, minlength=bins)
            scores.append(float((hist * hist).sum()))
        angle = float(candidates[int(np.argmax(scores))])
    return angle if abs(angle) < max_angle else 0.0
