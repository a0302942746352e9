"""Page normalisation for photos of paper ECGs: find the paper, undo perspective and rotation, even
out the lighting. numpy and OpenCV only (torch-free); used by ``ecgdx.inference`` and
``ecgdx.digitize`` before they read the page.

A scan of a clean page passes through unchanged: each step acts only when it measures something to
correct, and says what it did in ``Normalization.applied``.

1. **Paper**: on a ~512 px copy, the bright region (Otsu threshold of a blurred copy) whose outline
   is a convex quadrilateral covering 20-93 % of the picture, with all four corners inside the
   frame, is taken as the sheet; it is warped to a rectangle with the sheet's own side lengths. A
   picture the sheet fills (a scan), or a sheet cut by the frame, is left alone.
2. **Rotation**: ``ecgdx.digitize.estimate_skew`` (the angle at which the page's horizontal
   structure projects sharpest), searched over +/- ``max_rotation`` degrees in its fast mode
   (0.1 deg resolution); undone above 0.3 deg.
3. **Lighting**: the paper's brightness is estimated by a grey-level closing (removes ink and grid
   lines) over a coarse copy; when it varies by more than 12 % across the page (a shadow, a lamp on
   one side), the page is divided by it and rescaled to white paper.

Limits: a sheet that fills the whole photo, or lies on a bright table, gives no quadrilateral, so
its perspective is not corrected (rotation and lighting still are); creases and curled paper are
not flattened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

_QUAD_WIDTH = 512  # px width of the copy the sheet is searched on
_MIN_SHEET, _MAX_SHEET = 0.20, 0.93  # sheet area / picture area for a perspective correction
_MIN_ROTATION = 0.3  # degrees
_LIGHTING_THRESHOLD = 0.12


@dataclass
class Normalization:
    """What ``normalize_page`` did.

    applied: steps performed, in words (empty for a clean scan). rotation_deg: the page's measured
    tilt (counter-clockwise positive), undone when above 0.3 deg. sheet: the sheet's corners in
    input pixels (TL, TR, BR, BL) when a perspective correction was made. lighting: measured
    unevenness of the paper brightness (0 = even; > 0.12 was corrected).
    """

    applied: list[str] = field(default_factory=list)
    rotation_deg: float = 0.0
    sheet: list[list[float]] | None = None
    lighting: float = 0.0

    def to_dict(self) -> dict:
        return {"applied": list(self.applied), "rotation_deg": round(self.rotation_deg, 3),
                "sheet": self.sheet, "lighting": round(self.lighting, 4)}


def normalize_page(gray: np.ndarray, *, max_rotation: float = 15.0, perspective: bool = True,
                   rotation: bool = True, lighting: bool = True) -> tuple[np.ndarray, Normalization]:
    """Normalise a page picture (see the module docstring).

    Args:
        gray: (H, W) uint8 page, 255 = white paper.
        max_rotation: largest tilt searched, degrees.
        perspective, rotation, lighting: switch single steps off.

    Returns:
        ((H', W') uint8 page, Normalization). The shape changes only with a perspective correction.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"normalize_page needs a (H, W) uint8 picture, got {gray.shape} {gray.dtype}")
    info = Normalization()
    if perspective:
        quad = find_sheet(gray)
        if quad is not None:
            gray = _warp_sheet(gray, quad)
            info.sheet = quad.round(1).tolist()
            info.applied.append("perspective: the sheet was found and flattened")
    if lighting:
        gray, info.lighting = _even_lighting(gray)
        if info.lighting > _LIGHTING_THRESHOLD:
            info.applied.append(f"lighting: uneven by {100 * info.lighting:.0f} %, evened out")
    if rotation:
        from ecgdx.digitize import estimate_skew

        info.rotation_deg = estimate_skew(gray, max_angle=max_rotation, fine=False)
        if abs(info.rotation_deg) >= _MIN_ROTATION:
            gray = rotate_page(gray, info.rotation_deg)
            info.applied.append(f"rotation: {info.rotation_deg:+.1f} deg undone")
    return gray, info


def find_sheet(gray: np.ndarray) -> np.ndarray | None:
    """(4, 2) float32 corners (TL, TR, BR, BL, input px) of a paper sheet on a darker background, or None."""
    h, w = gray.shape
    scale = _QUAD_WIDTH / w if w > _QUAD_WIDTH else 1.0
    small = cv2.resize(gray, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
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
    small = cv2.resize(gray, (max(8, w // factor), max(8, h // factor)), interpolation=cv2.INTER_AREA)
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
