"""Page normalisation for photos of paper ECGs: find the paper, undo perspective and rotation, even
out the lighting. numpy and OpenCV only (torch-free); used by ``ecgdx.inference`` and
``ecgdx.signals.digitize`` before they read the page.

A scan of a clean page passes through unchanged: each step acts only when it measures something to
correct, and says what it did in ``Normalization.applied``.

1. **Paper**: on a ~512 px copy, the bright region (Otsu threshold of a blurred copy) whose outline
   is a convex quadrilateral covering 20-93 % of the picture, with all four corners inside the
   frame, is taken as the sheet; it is warped to a rectangle with the sheet's own side lengths. A
   picture the sheet fills (a scan), or a sheet cut by the frame, is left alone here.
2. **Orientation**: ``ecgdx.page.orientation.detect_orientation`` (calibration pulses at the left, text
   lines along the rows, header at the top); a page on its side or upside down is turned upright.
3. **Lighting**: the paper's brightness is estimated by a grey-level closing (removes ink and grid
   lines) over a coarse copy; when it varies by more than 12 % across the page (a shadow, a lamp on
   one side), the page is divided by it and rescaled to white paper.
4. **Rotation**: ``ecgdx.page.primitives.estimate_skew`` (the angle at which the page's horizontal
   structure projects sharpest), searched over +/- ``max_rotation`` degrees in its fast mode
   (0.1 deg resolution); undone above 0.3 deg.
5. **Perspective from the page itself** (only when step 1 found no sheet): ``page_perspective``
   measures the slopes of the page's own horizontal lines (grid, baselines, text, rules) in three
   bands down the page and of its vertical lines (grid, separators, pulses) in three bands across;
   when they differ by more than a rotation explains (> 0.01, ~0.6 deg; converging columns alone
   > 0.025), a homography fitted to them straightens the page.

Limits: step 5 corrects shear and converging lines only to first order, not the page's scale or
position; creases and curled paper are not flattened (a curl bends lines, which the straight-line
fits average out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ecgdx.page.orientation import detect_orientation, turn_page
from ecgdx.page.primitives import estimate_skew, flatten_background, shrink

_QUAD_WIDTH = 512  # px width of the copy the sheet is searched on
_MIN_SHEET, _MAX_SHEET = 0.20, 0.93  # sheet area / picture area for a perspective correction
_MIN_ROTATION = 0.3  # degrees
_LIGHTING_THRESHOLD = 0.12
_TURN_WORDS = {90: "the top of the page was at the right; turned a quarter turn counter-clockwise",
               180: "the page was upside down; turned half a turn",
               270: "the top of the page was at the left; turned a quarter turn clockwise"}


@dataclass
class Normalization:
    """What ``normalize_page`` did.

    applied: steps performed, in words (empty for a clean scan). rotation_deg: the page's measured
    tilt (counter-clockwise positive), undone when above 0.3 deg. sheet: the sheet's corners in
    input pixels (TL, TR, BR, BL) when a perspective correction was made. lighting: measured
    unevenness of the paper brightness (0 = even; > 0.12 was corrected). turn_deg: how far the
    picture was turned counter-clockwise to stand upright (0, 90, 180 or 270; ``ecgdx.page.orientation``).
    page_lines: the slopes of the page's own lines measured when no sheet edge was found (see
    ``page_perspective``), whether or not they led to a correction.
    """

    applied: list[str] = field(default_factory=list)
    rotation_deg: float = 0.0
    sheet: list[list[float]] | None = None
    lighting: float = 0.0
    turn_deg: int = 0
    page_lines: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {"applied": list(self.applied), "rotation_deg": round(self.rotation_deg, 3),
                "sheet": self.sheet, "lighting": round(self.lighting, 4), "turn_deg": self.turn_deg,
                "page_lines": self.page_lines}


def normalize_page(gray: np.ndarray, *, max_rotation: float = 15.0, perspective: bool = True,
                   rotation: bool = True, lighting: bool = True,
                   orientation: bool = True) -> tuple[np.ndarray, Normalization]:
    """Normalise a page picture (see the module docstring).

    Args:
        gray: (H, W) uint8 page, 255 = white paper.
        max_rotation: largest tilt searched, degrees.
        perspective, rotation, lighting, orientation: switch single steps off.

    Returns:
        ((H', W') uint8 page, Normalization). The shape changes only with a perspective correction
        or a quarter turn.
    """
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        shape, dtype = getattr(gray, "shape", None), getattr(gray, "dtype", type(gray).__name__)
        raise ValueError(f"normalize_page needs a (H, W) uint8 picture, got {shape} {dtype}")
    info = Normalization()
    if perspective:
        quad = find_sheet(gray)
        if quad is not None:
            gray = _warp_sheet(gray, quad)
            info.sheet = quad.round(1).tolist()
            info.applied.append("perspective: the sheet was found and flattened")
    if orientation and min(gray.shape) >= 16:
        info.turn_deg = detect_orientation(gray).turn
        if info.turn_deg:
            gray = turn_page(gray, info.turn_deg)
            info.applied.append(f"orientation: {_TURN_WORDS[info.turn_deg]}")
    if lighting:
        gray, info.lighting = _even_lighting(gray)
        if info.lighting > _LIGHTING_THRESHOLD:
            info.applied.append(f"lighting: uneven by {100 * info.lighting:.0f} %, evened out")
    if rotation:
        info.rotation_deg = estimate_skew(gray, max_angle=max_rotation, fine=False)
        if abs(info.rotation_deg) >= _MIN_ROTATION:
            gray = rotate_page(gray, info.rotation_deg)
            info.applied.append(f"rotation: {info.rotation_deg:+.1f} deg undone")
    if perspective and info.sheet is None:
        # After the rotation step: what is left of the lines' slopes is then perspective alone,
        # well inside the slope search's range even on pages tilted by 10 degrees or more.
        gray = _straighten_from_lines(gray, info)
    return gray, info


def find_sheet(gray: np.ndarray) -> np.ndarray | None:
    """(4, 2) float32 corners (TL, TR, BR, BL, input px) of a paper sheet on a darker background, or None."""
    h, w = gray.shape
    scale = _QUAD_WIDTH / w if w > _QUAD_WIDTH else 1.0
    small = _area_resize(gray, (max(8, round(w * scale)), max(8, round(h * scale))))
    # Close first: the sheet's ink and grid must not cut it into pieces.
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    blurred = cv2.GaussianBlur(closed, (5, 5), 0)
    threshold, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if float(np.mean(blurred[mask > 0])) - float(np.mean(blurred[mask == 0] if (mask == 0).any() else 0)) < 40:
        return None  # no clear bright sheet against a darker background
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    share = cv2.contourArea(contour) / float(small.shape[0] * small.shape[1])
    if not _MIN_SHEET <= share <= _MAX_SHEET:
        return None
    hull = cv2.convexHull(contour)
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
    if len(quad) != 4 or not cv2.isContourConvex(quad):
        return None
    if cv2.contourArea(quad) < 0.9 * cv2.contourArea(hull):
        return None  # the outline is not a quadrilateral (a torn edge, a hand over the sheet)
    corners = quad.reshape(4, 2).astype(np.float32)
    margin = 0.01 * np.array([small.shape[1], small.shape[0]], np.float32)
    limit = np.array([small.shape[1] - 1, small.shape[0] - 1], np.float32) - margin
    if (corners < margin).any() or (corners > limit).any():
        # A corner on the picture's edge: the "sheet" is cut by the frame, or is only the bright
        # part of a shadowed page. Either way there is no whole sheet to flatten.
        return None
    return _order_corners(corners / scale)


def _area_resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(gray, size, INTER_AREA)`` for the coarse copies the sheet and lighting steps
    read, ~3x faster: an exact integer block average (OpenCV's fast path) down to 2-4x the target
    size first, the fractional area step on that. Thin lines then fall on block boundaries a few
    pixels off (single pixels differ by up to ~60 gray levels, 2 on average), which the closing and
    blur of those steps remove; both measure the paper, not the lines."""
    ratio = min(gray.shape[1] / size[0], gray.shape[0] / size[1])
    factor = int(ratio // 2)
    if factor >= 2:
        gray = shrink(gray, factor)
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _order_corners(points: np.ndarray) -> np.ndarray:
    s = points.sum(axis=1)
    d = points[:, 0] - points[:, 1]
    return np.float32([points[np.argmin(s)], points[np.argmax(d)], points[np.argmax(s)], points[np.argmin(d)]])


def _warp_sheet(gray: np.ndarray, quad: np.ndarray) -> np.ndarray:
    tl, tr, br, bl = quad
    width = int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
    height = int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))))
    target = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    matrix = cv2.getPerspectiveTransform(quad, target)
    return cv2.warpPerspective(gray, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def rotate_page(gray: np.ndarray, angle: float) -> np.ndarray:
    """Undo a counter-clockwise tilt of ``angle`` degrees about the centre; white outside."""
    h, w = gray.shape
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -angle, 1.0)
    return cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)


def _even_lighting(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(page, unevenness): divide by the paper brightness when it varies by > 12 %."""
    h, w = gray.shape
    factor = max(1, int(math.ceil(w / 256)))
    small = _area_resize(gray, (max(8, w // factor), max(8, h // factor)))
    # A closing wider than a trace, a grid square or a text line leaves the paper's brightness.
    size = max(5, (small.shape[1] // 24) | 1)
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    paper = cv2.GaussianBlur(paper.astype(np.float32), (0, 0), size / 2.0)
    low, high = np.percentile(paper, [5, 95])
    unevenness = float((high - low) / max(high, 1.0))
    if unevenness <= _LIGHTING_THRESHOLD:
        return gray, unevenness
    full = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    out = gray.astype(np.float32) * (float(high) / np.maximum(full, 1.0))
    return np.clip(out, 0, 255).astype(np.uint8), unevenness


# --------------------------------------------------------------------------------------------------
# Perspective from the page's own lines
# --------------------------------------------------------------------------------------------------

# Lines are measured on a copy about this wide; slopes (dy/dx) are searched up to +/- _MAX_SLOPE.
_LINES_WIDTH = 550
_LINE_PASSES = 2  # measurements of a page's lines, at most (the second on the first's result)
_BANDS = 3  # bands across and down the page in which line slopes are measured
_MAX_SLOPE = 0.08  # ~4.6 deg: a 7 % corner shift tilts the edges of the page by about that much
# (slope step, pixels sampled): coarse over the whole range, then fine around the coarse optimum.
_SLOPE_STAGES = ((0.005, 2500), (0.001, 6000))
# Act only when the slopes differ down or across the page (or horizontal and vertical lines are not
# square) by more than this: a pure rotation is left to the rotation step (docs/robustness.md).
_MIN_DISTORTION = 0.01
# Vertical lines are fewer and, on crowded pages, outnumbered by slanted QRS strokes (clean pages of
# the development set measure up to 0.017): converging columns alone must show more.
_MIN_COLUMN_KEYSTONE = 0.025


def page_perspective(gray: np.ndarray, *, refine: bool = False) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Perspective of a page whose sheet edge is not visible, from the page's own straight lines.

    Horizontal lines (grid rules, trace baselines, text lines, the header rule) are measured in
    three bands from top to bottom, vertical lines (grid rules, lead separators, calibration
    pulses) in three bands from left to right: each band's slope is the one at which its dark
    structure projects sharpest (as ``ecgdx.page.primitives.estimate_skew``). To first order, a
    perspective view of the page tilts horizontal lines by ``d - g * v`` and vertical lines by
    ``b - h * u`` at normalised page coordinates (u, v); straight-line fits through the bands'
    slopes give d, g, b, h, hence a homography that maps the page back.

    refine: the page is known to be in perspective (a second pass on a first correction's result):
        converging columns then count from the same limit as the rest.

    Returns:
        (3x3 matrix from straightened to picture pixels, for ``cv2.warpPerspective`` with
        ``WARP_INVERSE_MAP``; or None when the lines show no more than a rotation), and the
        measurements: the bands' slopes (dy/dx for rows, dx/dy for columns) and how far they are
        from a pure rotation.
    """
    height, width = gray.shape
    factor = max(1, round(width / _LINES_WIDTH))
    flat = _flatten(gray, factor)
    h, w = flat.shape
    # Dark structure, grid included (the grid's rules are the straightest lines on the page).
    weight = np.clip(235.0 - flat.astype(np.float32), 0, None)
    weight[weight < 15.0] = 0.0
    margin_x, margin_y = w // 10, h // 10
    row_edges = np.linspace(0, h, _BANDS + 1).round().astype(int)
    column_edges = np.linspace(0, w, _BANDS + 1).round().astype(int)
    rows = [_band_slope(weight[y0:y1, margin_x : w - margin_x]) for y0, y1 in zip(row_edges[:-1], row_edges[1:], strict=True)]
    columns = [_band_slope(np.ascontiguousarray(weight[margin_y : h - margin_y, x0:x1].T))
               for x0, x1 in zip(column_edges[:-1], column_edges[1:], strict=True)]
    scale = w / 2.0
    v = ((row_edges[:-1] + row_edges[1:]) / 2.0 - h / 2.0) / scale
    u = ((column_edges[:-1] + column_edges[1:]) / 2.0 - w / 2.0) / scale
    row_slopes = np.array([slope for slope, _ in rows])
    column_slopes = np.array([slope for slope, _ in columns])
    lines = {"row_slopes": [round(float(x), 4) for x in row_slopes],
             "column_slopes": [round(float(x), 4) for x in column_slopes]}
    if min(total for _, total in rows + columns) == 0:
        return None, lines  # a band without dark structure: nothing to measure
    g, d = np.polyfit(v, row_slopes, 1)
    hh, b = np.polyfit(u, column_slopes, 1)
    g, hh = -g, -hh
    # A rotation tilts horizontal lines by +a and vertical ones (dx/dy) by -a: what is left of
    # d + b is shear; g and h make the lines converge.
    keystone_rows, keystone_columns = abs(g) * (v[-1] - v[0]), abs(hh) * (u[-1] - u[0])
    shear = abs(d + b)
    lines.update(keystone_rows=round(float(keystone_rows), 5), keystone_columns=round(float(keystone_columns), 5),
                 shear=round(float(shear), 5))
    column_limit = _MIN_DISTORTION if refine else _MIN_COLUMN_KEYSTONE
    if max(keystone_rows, shear) <= _MIN_DISTORTION and keystone_columns <= column_limit:
        return None, lines
    # The model maps straightened (u, v) to picture coordinates; in full-resolution pixels:
    to_page = np.array([[1.0, b, 0.0], [d, 1.0, 0.0], [g, hh, 1.0]])
    full = width / 2.0
    normalise = np.array([[1.0 / full, 0.0, -width / 2.0 / full], [0.0, 1.0 / full, -height / 2.0 / full],
                          [0.0, 0.0, 1.0]])
    matrix = np.linalg.inv(normalise) @ to_page @ normalise
    return matrix / matrix[2, 2], lines


def _straighten_from_lines(gray: np.ndarray, info: Normalization) -> np.ndarray:
    """``page_perspective``, re-measured on its own result: the fit is first-order, so a strong
    perspective is left partly uncorrected by one pass. Both passes compose into one warp (one
    interpolation of the picture)."""
    total, info.page_lines = page_perspective(gray)
    if total is None:
        return gray
    size = (gray.shape[1], gray.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for _ in range(_LINE_PASSES - 1):
        straightened = cv2.warpPerspective(gray, total, size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                           borderValue=255)
        residual, _ = page_perspective(straightened, refine=True)
        if residual is None:
            break
        total = total @ residual
    info.applied.append("perspective: straightened from the page's own lines (no sheet edge seen)")
    return cv2.warpPerspective(gray, total / total[2, 2], size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=255)


def _flatten(gray: np.ndarray, factor: int) -> np.ndarray:
    return flatten_background(shrink(gray, factor))


def _band_slope(weight: np.ndarray) -> tuple[float, float]:
    """(slope dy/dx of the lines of a weight image, total weight).

    The slope maximises the sum of squares of the rows' projection along it (sharpest = lines
    lined up), searched coarse then fine; x is measured from the image centre. Each stage uses an
    evenly thinned sample of the weighted pixels: thousands of pixels pin a slope down as well as
    the whole half does, at a fraction of the cost.
    """
    flat_index = np.flatnonzero(weight)
    if len(flat_index) < 50:
        return 0.0, 0.0
    total = float(weight.sum())
    # Thinned before anything else is computed per pixel: the sample is all the search uses.
    flat_index = flat_index[:: max(1, -(-len(flat_index) // _SLOPE_STAGES[-1][1]))]
    ys, xs = np.divmod(flat_index, weight.shape[1])
    values = weight.ravel()[flat_index]
    rows = ys.astype(np.float32)
    columns = xs.astype(np.float32) - weight.shape[1] / 2.0
    best, span = 0.0, _MAX_SLOPE
    for increment, pixels in _SLOPE_STAGES:
        # Rounded up, so that a stage never takes more than its share (with a floor, a band of 4,999
        # pixels used all of them in the 2,500-pixel stage).
        every = max(1, -(-len(rows) // pixels))
        r, c, v = rows[::every], columns[::every], values[::every]
        candidates = np.arange(best - span, best + span + increment / 2, increment, dtype=np.float32)
        projected = r[None, :] - c[None, :] * candidates[:, None]
        projected -= projected.min()
        bins = int(projected.max()) + 2
        low = np.floor(projected)
        upper = ((projected - low) * v).astype(np.float64).ravel()  # the share of the upper bin
        # Each candidate's histogram in its own block of bins: one integer cast, offsets added first.
        low += (np.arange(len(candidates), dtype=np.float32) * bins)[:, None]
        index = low.astype(np.intp).ravel()
        # Linear binning: the score varies smoothly with the slope (no rounding aliases). The
        # weights are cast to float64 here, as np.bincount would: its own cast is ~3x slower.
        size = len(candidates) * bins
        lower = np.broadcast_to(v.astype(np.float64), projected.shape).ravel() - upper
        hist = np.bincount(index, lower, minlength=size)
        hist += np.bincount(index + 1, upper, minlength=size)
        score = np.square(hist.reshape(len(candidates), bins)).sum(axis=1)
        best = float(candidates[int(np.argmax(score))])
        span = increment
    return best, total
