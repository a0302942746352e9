"""Which way up is a page picture? Finds pages turned by 90, 180 or 270 degrees (numpy + OpenCV).

A printed 12-lead page has three cues that need no model, all read from the same ink components
(``ecgdx.page.primitives``' page analysis, on a copy ~``_WORK_SIDE`` px on its long side):

- **Calibration pulses**: the 1 mV pulses stand in one column at the LEFT of the trace rows and rise
  from the baseline (tall, narrow outlines). Turned by 180 degrees they sit at the right; turned by
  90 they are wide, not tall, and are not found at all.
- **Text lines**: header, lead labels and footer are lines of glyphs side by side. On a page turned
  by 90 or 270 degrees the glyphs stack vertically and hardly any "line" is found.
- **Header band**: the header (ID, patient data, the thick rule, the diagnosis block) sits at the
  top and holds about three times the glyphs of the one footer line at the bottom.

Each of the four candidate turns gets a score (see ``_score``); the page is turned only when a
turned reading beats the picture as it is by a clear margin, so an upright page is never turned on
weak evidence (on the 1,190 development pages: no false turns, docs/robustness.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ecgdx.page.primitives import (
    INK_LEVEL,
    MAX_INK_LEVEL,
    as_gray,
    component_boxes,
    find_pulses,
    flatten_background,
    shrink,
    text_lines,
)

__all__ = ["Orientation", "detect_orientation", "turn_page"]

# The long side of the copy the cues are read on: glyphs are still separate (~4 px tall) and the
# analysis costs a few ms.
_WORK_SIDE = 550
# Weights of the cues in a candidate's score (pulses are the strongest single cue; the picture's
# shape only tips the balance, photos are cropped freely). Tuned on development pages turned four
# ways, clean and distorted (docs/robustness.md).
_PULSE_WEIGHT, _AXIS_WEIGHT, _HEADER_WEIGHT, _SHAPE_WEIGHT = 1.0, 0.6, 0.6, 0.4
# A turned reading must beat the picture as it is by this much.
_MARGIN = 0.5
# ...and show a page to read: calibration pulses, or at least this many glyphs in text lines and
# this many times more of them along its rows than across (noise has as many both ways).
_MIN_GLYPHS = 20
_MIN_ALONG = 1.5
# The header band and the footer band: the top and the bottom quarter of the page.
_BAND = 0.25
# The header band and the footer band: the top and the bottom quarter of the page.
_BAND = 0.25


@dataclass
class Orientation:
    """What ``detect_orientation`` found.

    turn: degrees the picture must be turned COUNTER-clockwise to stand upright (0, 90, 180 or
    270). scores: each candidate turn's score (higher = more upright-looking once turned).
    cues: the measurements behind the scores, per candidate turn.
    """

    turn: int = 0
    scores: dict[int, float] = field(default_factory=dict)
    cues: dict[int, dict[str, float]] = field(default_factory=dict)


def detect_orientation(gray: np.ndarray) -> Orientation:
    """Measure the cues for each of the four turns of ``gray`` ((H, W) uint8, 255 = paper).

    Returns an ``Orientation`` whose ``turn`` is 0 unless a turned page is clearly more upright.
    """
    gray = as_gray(gray)
    flat = flatten_background(_work_copy(gray))
    ink = _ink(flat)
    boxes = component_boxes(ink)
    # Text lines read the same after a half turn, so two analyses cover the four candidates.
    glyphs = {0: text_lines(boxes, ink.shape, np.ones(len(boxes), bool))}
    quarter = _turned_boxes(boxes, ink.shape, 1)
    glyphs[1] = text_lines(quarter, ink.shape[::-1], np.ones(len(boxes), bool))
    counts = {axis: int(mask.sum()) for axis, mask in glyphs.items()}
    result = Orientation()
    for k in range(4):
        turned_ink = np.ascontiguousarray(np.rot90(ink, k))
        turned = _turned_boxes(boxes, ink.shape, k)
        _, pulse_rows = find_pulses(turned, turned_ink)
        text = glyphs[k % 2]
        middle = turned[:, 1] + turned[:, 3] / 2.0
        height = turned_ink.shape[0]
        top = int((text & (middle < _BAND * height)).sum())
        bottom = int((text & (middle > (1.0 - _BAND) * height)).sum())
        rows_px, cols_px = turned_ink.shape
        landscape = 1.0 if cols_px > 1.1 * rows_px else -1.0 if rows_px > 1.1 * cols_px else 0.0
        cues = {"pulse_rows": float(pulse_rows), "text_glyphs": float(counts[k % 2]), "landscape": landscape,
                "glyphs_across": float(counts[1 - k % 2]), "header_glyphs": float(top),
                "footer_glyphs": float(bottom)}
        result.cues[90 * k] = cues
        result.scores[90 * k] = round(_score(cues), 4)
    best = max(result.scores, key=result.scores.get)
    cues = result.cues[best]
    lines_along = cues["text_glyphs"] >= max(_MIN_GLYPHS, _MIN_ALONG * cues["glyphs_across"])
    readable = lines_along or cues["pulse_rows"] >= 2
    if best != 0 and readable and result.scores[best] - result.scores[0] >= _MARGIN:
        result.turn = best
    return result


def _work_copy(gray: np.ndarray) -> np.ndarray:
    """``gray`` with its long side near ``_WORK_SIDE``: shrunk by an integer factor (OpenCV's fast
    path), or enlarged when smaller, so that glyphs and pulses keep the size the limits expect."""
    long_side = max(gray.shape)
    if long_side >= _WORK_SIDE:
        return shrink(gray, max(1, round(long_side / _WORK_SIDE)))
    scale = _WORK_SIDE / long_side
    size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
    return cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)


def _ink(flat: np.ndarray) -> np.ndarray:
    """0/1 ink mask of a flattened page. Blurred or faded prints have grey strokes, so the level
    moves half-way from the darkest ink to the paper (as the quality gate does), within limits
    that keep the grid out."""
    darkest = float(np.percentile(flat[::2, ::2], 0.5))
    level = float(np.clip((darkest + 255.0) / 2.0, INK_LEVEL, MAX_INK_LEVEL))
    return (flat < level).view(np.uint8)


def turn_page(gray: np.ndarray, turn: int) -> np.ndarray:
    """``gray`` turned counter-clockwise by ``turn`` degrees (a multiple of 90), as a new array."""
    if turn % 90:
        raise ValueError(f"turn_page turns by multiples of 90 degrees, got {turn}")
    return np.ascontiguousarray(np.rot90(gray, (turn // 90) % 4))


def _score(cues: dict[str, float]) -> float:
    """pulses (0..1) + axis (-1..1) + header (-1..1) + shape (-1, 0, 1), weighted.

    pulses: calibration pulses found at the left for >= 2 rows (1 at 4 rows or more). axis: text
    glyphs found along this reading's rows against across them. header: glyphs in the top band
    against the bottom band. shape: 1 for a landscape reading (a printed page is ~1.41:1), -1 for
    a portrait one, 0 when within 10 % of square.
    """
    rows = cues["pulse_rows"]
    pulses = min(rows, 4.0) / 4.0 if rows >= 2 else 0.0
    along, across = cues["text_glyphs"], cues["glyphs_across"]
    axis = (along - across) / max(along + across, 1.0)
    top, bottom = cues["header_glyphs"], cues["footer_glyphs"]
    header = (top - bottom) / max(top + bottom, 1.0)
    return _PULSE_WEIGHT * pulses + _AXIS_WEIGHT * axis + _HEADER_WEIGHT * header + _SHAPE_WEIGHT * cues["landscape"]


def _turned_boxes(boxes: np.ndarray, shape: tuple[int, int], k: int) -> np.ndarray:
    """(n, 4) x, y, w, h boxes of a (H, W) mask, as they lie in ``np.rot90(mask, k)``."""
    height, width = shape
    x, y, w, h = boxes.T
    k %= 4
    if k == 0:
        return boxes
    if k == 1:
        return np.stack([y, width - x - w, h, w], axis=1)
    if k == 2:
        return np.stack([width - x - w, height - y - h, w, h], axis=1)
    return np.stack([height - y - h, x, h, w], axis=1)
