"""Occlusion explanations: which parts of the page moved the model's answer (numpy + OpenCV only).

How it is computed (``explain_input``):

1. Grid: the model input (H x W) is split into a grid of cells (8 x 8 by default). For each cell a
   copy of the input is made with that cell whited out (set to 1.0, blank paper); all copies run
   through the model as batches. A cell's importance = P(predicted class | original) -
   P(predicted class | cell whited out), with the model's temperature-calibrated probabilities.
   The cell values are upsampled smoothly (bicubic, clipped to the cells' range) to H x W for the
   heatmap, and mapped back onto the page crop for display (``render_overlay``).
2. Leads: the same is done with whole lead panels (and the rhythm strip) instead of cells, and the
   leads are ranked by the drop. Where the panels are comes from ``ecgdx.page.layout.find_lead_panels``
   on the page (boxes mapped into the model input through the crop box and the resize), or, for
   models whose spec uses the canonical layout, from the canonical page's fixed geometry (3 rows x 4
   columns I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6 + the rhythm strip). When no layout is known
   (``ecgdx.page.layout`` missing or the page not recognised) the grid cells are ranked instead, and the
   explanation says so (``Explanation.region_method == "grid"`` and ``note``).

Limits (say them wherever the picture is shown):
- It measures the model's sensitivity, not clinical causation: a large drop means the model relied
  on that area, not that the area shows the disease.
- Cells are coarse (an 8 x 8 grid of a 384 px input is 48 px, ~2 s of trace by ~1 row); effects
  smaller than a cell, or spread over several cells, are blurred or missed.
- Whited-out areas are out of distribution (real pages never have blank holes); the model's answer
  to them is not guaranteed to mean "without this evidence".
- Leads are occluded one at a time: evidence repeated in several leads shows small drops everywhere.
- Negative drops (occlusion made the prediction stronger) are kept in the numbers but shown as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES, LEADS, RHYTHM_STRIP
from ecgdx.page.preprocessing import PreprocessDetails, PreprocessSpec

__all__ = [
    "Explanation",
    "Regions",
    "canonical_lead_boxes",
    "explain_input",
    "lead_regions",
    "occlusion_drops",
    "render_overlay",
    "write_overlay",
]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) model-input pixels, x1/y1 exclusive
ProbabilityFn = Callable[[np.ndarray], np.ndarray]  # (N, 1, H, W) float32 -> (N, C) probabilities

PAPER = 1.0  # value of blank paper in the model input
# Occluded copies per model run: as inference.RUN_BATCH, bounds onnxruntime's arena (~50 MB a page).
MAX_BATCH = 2
# Canonical page rows (3 lead rows + rhythm strip) and lead columns, as drawn by layout.canonical_page.
_CANONICAL_ROWS: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
_CANONICAL_ASPECT = (384, 768)  # (height, width) the canonical page is drawn at by default


@dataclass(frozen=True)
class Regions:
    """Named boxes to occlude: lead panels (page layout or canonical geometry) or grid cells.

    method: 'page_layout', 'canonical' or 'grid'. note: why this method was used (for users).
    """

    boxes: dict[str, Box]
    method: str
    note: str = ""


@dataclass
class Explanation:
    """Occlusion explanation of one prediction.

    target: class key explained (the predicted class). base_probability: its probability on the
    unmodified input. cell_drops: (rows, cols) float32 drop per grid cell (may be negative).
    heatmap: (H, W) float32 smooth drop map in model-input pixels. regions: (name, drop, box)
    sorted by drop, largest first (leads, or grid cells when the layout is unknown).
    region_method / note: see ``Regions``. content_box: the part of the model input showing the page
    crop (x0, y0, x1, y1); the rest is letterbox padding. background: (h, w) uint8 picture the
    heatmap is drawn on (the page crop, or the canonical page), background_kind says which.
    """

    target: str
    base_probability: float
    cell_drops: np.ndarray
    heatmap: np.ndarray
    regions: list[tuple[str, float, Box]]
    region_method: str
    note: str
    content_box: Box
    background: np.ndarray | None = None
    background_kind: str = "page_crop"

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most important regions as (name, drop)."""
        return [(name, drop) for name, drop, _ in self.regions[:k]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no pixel arrays)."""
        return {
            "method": "occlusion",
            "target": self.target,
            "base_probability": round(self.base_probability, 6),
            "grid": list(self.cell_drops.shape),
            "cell_drops": np.round(self.cell_drops, 6).tolist(),
            "regions": [{"name": n, "drop": round(d, 6), "box": list(b)} for n, d, b in self.regions],
            "region_method": self.region_method,
            "note": self.note,
        }


# --------------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------------


def occlusion_drops(
    probabilities: ProbabilityFn, image: np.ndarray, target: int, boxes: list[Box], fill: float = PAPER
) -> tuple[float, np.ndarray]:
    """Drop of P(target) when each box is filled with ``fill``.

    Args:
        probabilities: model, (N, 1, H, W) float32 -> (N, C) probabilities.
        image: (1, H, W) or (H, W) float32 model input.
        target: class index.
        boxes: (x0, y0, x1, y1) boxes in input pixels.

    Returns:
        (base probability, (len(boxes),) float32 drops = base - occluded probability).
    """
    x = np.asarray(image, np.float32).reshape(1, *np.asarray(image).shape[-2:])
    copies = []
    for x0, y0, x1, y1 in boxes:
        copy = x.copy()
        copy[:, y0:y1, x0:x1] = fill
        copies.append(copy)
    batch = np.stack([x, *copies])  # the unmodified input rides along as the first item
    probs = np.concatenate([probabilities(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)])
    base = float(probs[0, target])
    return base, (base - probs[1:, target]).astype(np.float32)


def grid_boxes(height: int, width: int, grid: tuple[int, int]) -> list[Box]:
    """Row-major boxes of a rows x cols grid covering a height x width input (edges rounded)."""
    rows, cols = grid
    if rows < 1 or cols < 1 or rows > height or cols > width:
        raise ValueError(f"grid must be between 1x1 and {height}x{width}, got {rows}x{cols}")
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])) for r in range(rows) for c in range(cols)]


def smooth_heatmap(cell_values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(rows, cols) cell values -> (height, width) float32, bicubic, clipped to the cells' range
    (bicubic overshoots at sharp steps; clipping keeps the map's scale honest)."""
    cells = np.asarray(cell_values, np.float32)
    smooth = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth, float(cells.min()), float(cells.max()))


def explain_input(
    probabilities: ProbabilityFn,
    image: np.ndarray,
    target: int,
    *,
    regions: Regions | None = None,
    grid: tuple[int, int] = (8, 8),
    details: PreprocessDetails | None = None,
    spec: PreprocessSpec | None = None,
) -> Explanation:
    """Grid occlusion heatmap plus region (lead) ranking for class ``target`` (module docstring).

    Args:
        probabilities: model, (N, 1, H, W) float32 -> (N, C) probabilities.
        image: (1, H, W) float32 model input.
        target: class index to explain (normally the predicted one).
        regions: lead boxes from ``lead_regions``; None = rank the grid cells.
        grid: (rows, cols) of the occlusion grid.
        details, spec: preprocessing record and spec, for drawing the result on the page crop.
    """
    height, width = np.asarray(image).shape[-2:]
    cells = grid_boxes(height, width, grid)
    base, drops = occlusion_drops(probabilities, image, target, cells)
    cell_drops = drops.reshape(grid)
    if regions is None or not regions.boxes:
        note = regions.note if regions is not None else "no lead layout given; ranking grid cells instead"
        regions = Regions(_cell_names(cells, grid), "grid", note)
        ranked_drops = drops
    else:
        _, ranked_drops = occlusion_drops(probabilities, image, target, list(regions.boxes.values()))
    order = np.argsort(-ranked_drops, kind="stable")
    names, boxes = list(regions.boxes), list(regions.boxes.values())
    ranked = [(names[i], float(ranked_drops[i]), boxes[i]) for i in order]
    background, kind = None, "page_crop"
    if details is not None:
        canonical = details.layout_method == "canonical"
        background = details.model_input if canonical else details.cropped
        kind = "model_input" if canonical else "page_crop"
    return Explanation(
        target=CLASS_KEYS[target], base_probability=base, cell_drops=cell_drops,
        heatmap=smooth_heatmap(cell_drops, height, width), regions=ranked, region_method=regions.method,
        note=regions.note, content_box=content_box(details, spec, height, width),
        background=background, background_kind=kind,
    )


def _cell_names(cells: list[Box], grid: tuple[int, int]) -> dict[str, Box]:
    """'row r, col c' names (1-based, top-left first) for grid cells."""
    cols = grid[1]
    return {f"cell r{i // cols + 1}c{i % cols + 1}": box for i, box in enumerate(cells)}


# --------------------------------------------------------------------------------------------------
# Where the leads are, in model-input pixels
# --------------------------------------------------------------------------------------------------


def content_box(details: PreprocessDetails | None, spec: PreprocessSpec | None, height: int, width: int) -> Box:
    """The part of the model input that shows the page (keep_aspect letterboxes the rest)."""
    if details is None or spec is None or not spec.keep_aspect:
        return 0, 0, width, height
    if details.layout_method == "canonical":
        src_h, src_w = _CANONICAL_ASPECT
    else:
        x0, y0, x1, y1 = details.crop_box
        src_h, src_w = y1 - y0, x1 - x0
    # Same arithmetic as ecgdx.page.preprocessing (_enhance_and_resize / _canonical_input).
    scale = min(height / src_h, width / src_w)
    fit_h = min(height, max(1, round(src_h * scale)))
    fit_w = min(width, max(1, round(src_w * scale)))
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    return left, top, left + fit_w, top + fit_h


def canonical_lead_boxes(height: int, width: int) -> dict[str, Box]:
    """Lead panel boxes of a canonical page drawn at height x width (``layout.canonical_page``).

    Asks ``ecgdx.page.layout.canonical_panel_boxes`` when the module offers it; otherwise uses the
    canonical geometry: 4 equal rows (3 lead rows + the 10 s rhythm strip), each lead row split into
    4 columns of 2.5 s = width / 4.
    """
    try:
        from ecgdx import layout

        offered = getattr(layout, "canonical_panel_boxes", None)
        if offered is not None:
            return {name: tuple(int(v) for v in box) for name, box in offered(height, width).items()}
        rows = getattr(layout, "CANONICAL_LEADS", _CANONICAL_ROWS)
    except ImportError:
        rows = _CANONICAL_ROWS
    n_rows = len(rows) + 1
    boxes: dict[str, Box] = {}
    for r, leads in enumerate(rows):
        y0, y1 = round(r * height / n_rows), round((r + 1) * height / n_rows)
        for c, lead in enumerate(leads):
            boxes[lead] = (round(c * width / len(leads)), y0, round((c + 1) * width / len(leads)), y1)
    boxes[RHYTHM_STRIP] = (0, round((n_rows - 1) * height / n_rows), width, height)
    return boxes


def canonical_regions(spec: PreprocessSpec) -> Regions:
    """Lead boxes in model-input pixels for a canonical page: fixed by the layout, so they need
    neither the page nor its preprocessing record (``Predictor.explain_model_input`` uses this)."""
    # Only layout_method is read for a canonical page (its aspect is fixed); a stand-in record says so.
    record = _CanonicalRecord()
    cx0, cy0, cx1, cy1 = content_box(record, spec, spec.height, spec.width)
    boxes = canonical_lead_boxes(cy1 - cy0, cx1 - cx0)
    shifted = {k: (x0 + cx0, y0 + cy0, x1 + cx0, y1 + cy0) for k, (x0, y0, x1, y1) in boxes.items()}
    return Regions(shifted, "canonical", "leads at the canonical page's fixed positions")


class _CanonicalRecord:
    layout_method = "canonical"
    crop_box = None


def lead_regions(spec: PreprocessSpec, details: PreprocessDetails, gray: np.ndarray | None) -> Regions:
    """Lead panel boxes in model-input pixels for this page, or an empty grid fallback with a note."""
    height, width = spec.height, spec.width
    cx0, cy0, cx1, cy1 = content_box(details, spec, height, width)
    if details.layout_method == "canonical":
        return canonical_regions(spec)
    if gray is None:
        return Regions({}, "grid", "the page was not available to find the leads; ranking grid cells instead")
    try:
        from ecgdx.page.layout import find_lead_panels
    except ImportError:
        return Regions({}, "grid", "lead layout finder not installed; ranking grid cells instead of leads")
    from ecgdx.errors import EcgdxError

    try:
        layout = find_lead_panels(gray)
    except EcgdxError as exc:
        return Regions({}, "grid", f"lead layout not recognised ({exc}); ranking grid cells instead of leads")
    except Exception as exc:  # an explanation must never break the prediction it explains
        return Regions({}, "grid", f"lead layout finder failed ({type(exc).__name__}: {exc}); "
                       "ranking grid cells instead of leads")
    panels = dict(layout.panels)
    if layout.rhythm is not None:
        panels[RHYTHM_STRIP] = layout.rhythm
    # Panels are found on the working-scale page; the crop box is recorded in original pixels.
    scale = getattr(details, "scale", 1) or 1
    working_crop = tuple(v / scale for v in details.crop_box)
    boxes = {}
    for name in (*LEADS, RHYTHM_STRIP):
        if name in panels:
            box = _page_to_input(panels[name].box, working_crop, (cx0, cy0, cx1, cy1))
            if box is not None:
                boxes[name] = box
    if not boxes:
        return Regions({}, "grid", "the leads lie outside the cropped area; ranking grid cells instead")
    return Regions(boxes, "page_layout", f"leads found on the page ({layout.template})")


def _page_to_input(box: Box, crop_box: Box, content: Box) -> Box | None:
    """Page-pixel box -> model-input box through the crop and the resize; None if it vanishes."""
    px0, py0, px1, py1 = crop_box
    cx0, cy0, cx1, cy1 = content
    sx, sy = (cx1 - cx0) / (px1 - px0), (cy1 - cy0) / (py1 - py0)
    x0 = int(np.clip(math.floor(cx0 + (box[0] - px0) * sx), cx0, cx1))
    x1 = int(np.clip(math.ceil(cx0 + (box[2] - px0) * sx), cx0, cx1))
    y0 = int(np.clip(math.floor(cy0 + (box[1] - py0) * sy), cy0, cy1))
    y1 = int(np.clip(math.ceil(cy0 + (box[3] - py0) * sy), cy0, cy1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------

_DISPLAY_WIDTH = 1400  # overlays are drawn at most this wide
_BAR_WIDTH = 90  # colour bar panel (px)
_TITLE_HEIGHT = 58
_MIN_SCALE = 0.01  # colour bar top: at least 1 percentage point of probability
_MIN_MARKED_DROP = 0.001  # regions whose drop is below 0.1 pp are not outlined


def render_overlay(
    explanation: Explanation,
    probabilities: Mapping[str, float] | None = None,
    title: str | None = None,
    top_k: int = 3,
) -> np.ndarray:
    """BGR uint8 picture: the heatmap over the page crop, a colour bar and the top regions marked.

    Colours: JET of max(drop, 0) / largest drop (blue = no effect, red = largest drop); the colour
    bar gives the scale in percentage points of P(class).
    """
    bg = explanation.background
    heat = explanation.heatmap
    cx0, cy0, cx1, cy1 = explanation.content_box
    if bg is None:
        bg = np.full(heat.shape, 255, np.uint8)
        cx0, cy0, cx1, cy1 = 0, 0, heat.shape[1], heat.shape[0]
    elif explanation.background_kind == "model_input":
        cx0, cy0, cx1, cy1 = 0, 0, heat.shape[1], heat.shape[0]  # background = the whole input
    scale = min(1.0, _DISPLAY_WIDTH / bg.shape[1])
    out_w, out_h = max(1, round(bg.shape[1] * scale)), max(1, round(bg.shape[0] * scale))
    page = cv2.cvtColor(cv2.resize(bg, (out_w, out_h), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    heat_page = cv2.resize(heat[cy0:cy1, cx0:cx1], (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    peak = float(max(explanation.cell_drops.max(), 0.0))
    # The colour scale spans at least _MIN_SCALE, so that a model that barely reacts to occlusion
    # shows a calm blue page instead of amplified noise.
    scale_top = max(peak, _MIN_SCALE)
    level = np.clip(heat_page / scale_top, 0.0, 1.0)
    colour = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    # Strong heat mostly shows the colour, weak heat mostly the page, so the traces stay readable.
    alpha = (0.25 + 0.45 * level)[:, :, None]
    blended = np.round(page * (1 - alpha) + colour * alpha).astype(np.uint8)
    to_display = (out_w / (cx1 - cx0), out_h / (cy1 - cy0), cx0, cy0)
    _mark_regions(blended, explanation, top_k, to_display)
    canvas = np.full((out_h + _TITLE_HEIGHT, out_w + _BAR_WIDTH, 3), 255, np.uint8)
    canvas[_TITLE_HEIGHT:, :out_w] = blended
    _draw_colour_bar(canvas, out_w, _TITLE_HEIGHT, out_h, scale_top)
    _draw_title(canvas, explanation, probabilities, title, top_k)
    return canvas


def _mark_regions(image: np.ndarray, explanation: Explanation, top_k: int, to_display) -> None:
    """Outline the top_k regions with their rank, name and drop."""
    sx, sy, ox, oy = to_display
    for rank, (name, drop, (x0, y0, x1, y1)) in enumerate(explanation.regions[:top_k], start=1):
        if drop < _MIN_MARKED_DROP:
            break
        p0 = (round((x0 - ox) * sx), round((y0 - oy) * sy))
        p1 = (round((x1 - ox) * sx) - 1, round((y1 - oy) * sy) - 1)
        cv2.rectangle(image, p0, p1, (255, 255, 255), 4, cv2.LINE_AA)
        cv2.rectangle(image, p0, p1, (0, 0, 0), 2, cv2.LINE_AA)
        text = f"#{rank} {name} {100 * drop:.1f} pp"  # a drop of P(shown class), positive like the bar
        text, scale = _fit_text(text, image.shape[1] - 12, 0.7, 0.35, 5)
        text_w = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 5)[0][0]
        # Boxes at the right edge get their label moved left, never cut off by the picture's edge.
        org = (max(2, min(p0[0] + 6, image.shape[1] - 8 - text_w)), max(p0[1] + 24, 24))
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 5, cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)


def _draw_colour_bar(canvas: np.ndarray, x: int, top: int, height: int, peak: float) -> None:
    """Vertical JET bar (top = largest drop) with its scale in percentage points."""
    bar_h = max(20, height - 60)
    y0 = top + 30
    ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None].repeat(22, axis=1)
    canvas[y0 : y0 + bar_h, x + 16 : x + 38] = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    font, ink = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.putText(canvas, f"{100 * peak:.1f}", (x + 40, y0 + 10), font, 0.45, ink, 1, cv2.LINE_AA)
    cv2.putText(canvas, "0", (x + 40, y0 + bar_h), font, 0.45, ink, 1, cv2.LINE_AA)
    # The caption stays inside the bar's panel: it used to start over the picture's right edge.
    caption, scale = _fit_text("cell drop, pp", _BAR_WIDTH - 6, 0.42, 0.3, 1)
    cv2.putText(canvas, caption, (x + 3, y0 - 10), font, scale, ink, 1, cv2.LINE_AA)


def _fit_text(text: str, room: int, scale: float, min_scale: float, thickness: int) -> tuple[str, float]:
    """(text, scale) no wider than ``room`` px: the font shrinks down to ``min_scale``, then the text
    is cut with an ellipsis."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    while scale > min_scale and cv2.getTextSize(text, font, scale, thickness)[0][0] > room:
        scale -= 0.02
    while cv2.getTextSize(text, font, scale, thickness)[0][0] > room and len(text) > 4:
        text = text[:-4] + "..."
    return text, scale


def _fitted_text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int) -> None:
    """putText, shrinking the font until the line fits the canvas width (never clipped at the right).
    A margin of 12 px stays white: anti-aliased strokes reach a pixel or two past getTextSize's width,
    by an amount that differs between OpenCV releases."""
    text, scale = _fit_text(text, canvas.shape[1] - org[0] - 12, scale, 0.3, thickness)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def _draw_title(canvas, explanation: Explanation, probabilities, title, top_k: int) -> None:
    """Two lines: predicted class and probability; top regions and the method's caveat."""
    p = (probabilities or {}).get(explanation.target, explanation.base_probability)
    first = title or f"Predicted: {DISPLAY_NAMES[explanation.target]} ({100 * p:.0f}%)"
    kind = "leads" if explanation.region_method != "grid" else "cells (lead layout unknown)"
    top = ", ".join(f"{n} {100 * d:.1f}" for n, d in explanation.top(top_k)) or "none"
    second = (f"Top {kind}, drop of P({DISPLAY_NAMES[explanation.target]}) when hidden, pp: {top}. "
              "Occlusion sensitivity, not clinical causation.")
    _fitted_text(canvas, first, (10, 24), 0.7, 2)
    _fitted_text(canvas, second, (10, 48), 0.5, 1)


def write_overlay(path: str | Path, explanation: Explanation, probabilities: Mapping[str, float] | None = None,
                  title: str | None = None) -> Path:
    """Render the overlay and write it as PNG; returns the path. Raises OSError if it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", render_overlay(explanation, probabilities, title))
    if not ok:
        raise OSError(f"could not encode the overlay for {path}")
    path.write_bytes(encoded.tobytes())
    return path
