"""Synthetic ECG pages drawn with OpenCV, laid out like the EDAN SE-3 printouts of the dataset.

``make_page`` returns the image together with the ground truth the tests need: the box holding every
trace, calibration pulse and lead label, and the boxes of every header and footer text item.
All coordinates are (x0, y0, x1, y1) pixels with x1/y1 exclusive. Positions are fractions of the
page size, so a page drawn at 2212x1572 is the same page as one drawn at 1106x786.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

Box = tuple[int, int, int, int]

# Paper: 297 x 210 mm (A4 landscape); the traces print at 25 mm/s and 10 mm/mV.
PAGE_MM = (297.0, 210.0)
MM_PER_S = 25.0
MM_PER_MV = 10.0

INK = 20  # gray level of printed ink
GRID_MINOR_GRAY, GRID_MAJOR_GRAY = 232, 205
GRID_MINOR_BGR, GRID_MAJOR_BGR = (236, 226, 255), (190, 170, 250)  # pink


class Page(NamedTuple):
    """A synthetic page and its ground truth.

    image: (H, W) uint8 gray, or (H, W, 3) uint8 BGR when drawn with color=True.
    trace_box: box around all traces, calibration pulses, separators and lead labels.
    header_boxes / footer_boxes: one box per printed header / footer text item (incl. rules).
    """

    image: np.ndarray
    trace_box: Box
    header_boxes: list[Box]
    footer_boxes: list[Box]


class _Canvas:
    """Draws on a gray page while recording the bounding box of every item (in pixels)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.gray = np.full((height, width), 255, np.uint8)
        self.scale = height / 786.0  # 1.0 at the dataset's 1106x786 PNG size
        self._scratch = np.zeros((height, width), np.uint8)

    def _box_of(self, draw) -> Box:
        """Draw onto a scratch mask to learn the exact pixels an item covers, then onto the page."""
        draw(self._scratch, 255)
        draw(self.gray, INK)
        x, y, w, h = cv2.boundingRect(self._scratch)
        self._scratch[y : y + h, x : x + w] = 0
        return x, y, x + w, y + h

    def text(self, s: str, x: float, y: float, size: float = 1.0) -> Box:
        """Text with its baseline at fractions (x, y) of the page; size 1.0 ~ 10 px high at 786."""
        org = (round(x * self.width), round(y * self.height))
        font_scale = 0.42 * size * self.scale
        thickness = max(1, round(self.scale))

        def draw(img, value):
            cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, int(value), thickness, cv2.LINE_AA)

        return self._box_of(draw)

    def hline(self, x0: float, x1: float, y: float) -> Box:
        p0 = (round(x0 * self.width), round(y * self.height))
        p1 = (round(x1 * self.width), round(y * self.height))
        thickness = max(1, round(1.5 * self.scale))
        return self._box_of(lambda img, v: cv2.line(img, p0, p1, int(v), thickness))

    def polyline(self, points: np.ndarray) -> Box:
        """Open polyline through (n, 2) pixel points."""
        pts = np.round(points).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(1, round(1.5 * self.scale))
        return self._box_of(lambda img, v: cv2.polylines(img, [pts], False, int(v), thickness, cv2.LINE_AA))

    def heart(self, x: float, y: float) -> Box:
        """Small filled heart whose bottom tip is at fractions (x, y)."""
        r = max(2, round(3 * self.scale))
        cx, cy = round(x * self.width), round(y * self.height)

        def draw(img, value):
            cv2.circle(img, (cx - r, cy - 2 * r), r, int(value), -1)
            cv2.circle(img, (cx + r, cy - 2 * r), r, int(value), -1)
            tri = np.array([[cx - 2 * r, cy - 2 * r], [cx + 2 * r, cy - 2 * r], [cx, cy]], np.int32)
            cv2.fillConvexPoly(img, tri, int(value))

        return self._box_of(draw)


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _beat_wave(t: np.ndarray, rng: np.random.Generator, rr: float) -> np.ndarray:
    """ECG-like voltage in mV at times t (s): per beat a sum of gaussians for P, Q, R, S and T."""
    waves = [  # (offset in s from the R peak, width in s, amplitude in mV)
        (-0.18, 0.025, 0.15),
        (-0.03, 0.008, -0.12),
        (0.0, 0.010, rng.uniform(0.6, 1.1)),
        (0.03, 0.010, -rng.uniform(0.1, 0.35)),
        (0.25, 0.045, rng.uniform(0.15, 0.35)),
    ]
    v = np.zeros_like(t)
    first = rng.uniform(0.1, rr)
    for r_peak in np.arange(first, t[-1] + rr, rr):
        for off, width, amp in waves:
            v += amp * np.exp(-0.5 * ((t - r_peak - off) / width) ** 2)
    return v + 0.02 * np.sin(2 * np.pi * 0.3 * t)  # slow baseline wander


def _draw_grid(gray: np.ndarray, box: Box, px_per_mm: float, color: bool) -> np.ndarray:
    """Returns a BGR (color) or gray page with a 1 mm / 5 mm grid under the existing ink."""
    x0, y0, x1, y1 = box
    if color:
        page = np.full((*gray.shape, 3), 255, np.uint8)
        minor, major = GRID_MINOR_BGR, GRID_MAJOR_BGR
    else:
        page = np.full(gray.shape, 255, np.uint8)
        minor, major = GRID_MINOR_GRAY, GRID_MAJOR_GRAY
    n_x = int((x1 - x0) / px_per_mm)
    n_y = int((y1 - y0) / px_per_mm)
    for i in range(n_x + 1):
        x = round(x0 + i * px_per_mm)
        cv2.line(page, (x, y0), (x, y1), major if i % 5 == 0 else minor, 1)
    for j in range(n_y + 1):
        y = round(y0 + j * px_per_mm)
        cv2.line(page, (x0, y), (x1, y), major if j % 5 == 0 else minor, 1)
    cv2.rectangle(page, (x0, y0), (x1, y1), major, max(1, round(gray.shape[0] / 786)))
    # Ink is printed over the grid.
    ink = gray < 255
    if color:
        page[ink] = np.minimum(page[ink], gray[ink][:, None])
    else:
        page[ink] = np.minimum(page[ink], gray[ink])
    return page


def make_page(
    template: str = "3x4_grid", width: int = 1106, height: int = 786, seed: int = 0, color: bool = False
) -> Page:
    """Draw a synthetic 12-lead ECG page.

    Args:
        template: "3x4_grid" (pink/grey grid, 3 rows x 4 leads + rhythm strip) or "6x2_nogrid"
            (no grid, 6 rows x 2 leads + rhythm strip).
        width, height: page size in pixels (any size; the layout scales).
        seed: changes patient ID, heart rate, date and wave shapes, deterministically.
        color: True returns BGR with a pink grid; False returns gray with a light grey grid.

    Returns:
        ``Page(image, trace_box, header_boxes, footer_boxes)``.
    """
    if template not in ("3x4_grid", "6x2_nogrid"):
        raise ValueError(f"unknown template {template!r}")
    rng = np.random.default_rng(seed)
    c = _Canvas(width, height)
    px_per_mm = width / PAGE_MM[0]
    hr = int(rng.integers(52, 110))
    date = f"2020-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    clock = f"{int(rng.integers(0, 12)):02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d} AM"

    header: list[Box] = []
    title = "ECG REPORT" if template == "3x4_grid" else "CPEIC_MULTAN_EDAN ECG REPORT"
    header.append(c.text(title, 0.45 if template == "3x4_grid" else 0.32, 0.035, size=1.6))
    header.append(c.text(f"ID : {int(rng.integers(1000, 999999))}", 0.03, 0.058))
    for s, x in (
        ("Years", 0.15),
        ("Male", 0.21),
        ("cm", 0.28),
        ("kg", 0.35),
        ("mmHg", 0.44),
        ("Department:", 0.69),
    ):
        header.append(c.text(s, x, 0.058))
    header.append(c.text("Exam.Room:", 0.03, 0.078))
    header.append(c.text("Medication:", 0.13, 0.078))
    header.append(c.hline(0.03, 0.975, 0.088))
    header.append(c.hline(0.03, 0.975, 0.094))
    header.append(c.text("Diagnosis Information:", 0.03, 0.112))
    header.append(c.text(f"Date {date}", 0.40, 0.112))
    for i, s in enumerate(("Technician :", "Ref-Phys. :", "Report Confirmed by:")):
        header.append(c.text(s, 0.70, 0.131 + 0.021 * i))

    # Trace area: rows of leads, each row starting with a 1 mV calibration pulse.
    if template == "3x4_grid":
        baselines = [0.30, 0.49, 0.68, 0.87]
        columns = [("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"), ("II",)]
        max_mv = 1.1
    else:
        baselines = list(np.linspace(0.265, 0.905, 7))
        columns = [
            (a, b)
            for a, b in zip(
                ("I", "II", "III", "aVR", "aVL", "aVF"), ("V1", "V2", "V3", "V4", "V5", "V6"), strict=True
            )
        ]
        columns.append(("II",))
        max_mv = 0.9
    mv_px = MM_PER_MV * px_per_mm
    x_start, x_end = 0.07 * width, 0.955 * width
    trace: list[Box] = []
    rr = 60.0 / hr
    for row, (base_frac, leads) in enumerate(zip(baselines, columns, strict=True)):
        base = base_frac * height
        px0 = 0.043 * width
        foot, top_w = 1.0 * px_per_mm, 3.0 * px_per_mm  # 1 mm feet around a 3 mm wide, 1 mV high step
        xs = [px0, px0 + foot, px0 + foot + top_w, px0 + 2 * foot + top_w]
        pulse = np.array(
            [
                [xs[0], base],
                [xs[1], base],
                [xs[1], base - mv_px],
                [xs[2], base - mv_px],
                [xs[2], base],
                [xs[3], base],
            ]
        )
        trace.append(c.polyline(pulse))
        seg_w = (x_end - x_start) / len(leads)
        for k, lead in enumerate(leads):
            sx = x_start + k * seg_w
            n = max(2, int(seg_w))
            t = np.arange(n) / px_per_mm / MM_PER_S
            v = np.clip(_beat_wave(t, rng, rr), -max_mv, max_mv)
            trace.append(c.polyline(np.stack([sx + np.arange(n), base - v * mv_px], axis=1)))
            trace.append(c.text(lead, (sx + 3) / width, (base - 0.006 * height) / height))
            if k > 0 and row < len(baselines) - 1:  # column separator
                sep_top, sep_bot = base - 0.6 * mv_px, base + 0.6 * mv_px
                trace.append(c.polyline(np.array([[sx, sep_top], [sx, sep_bot]])))

    footer: list[Box] = []
    footer.append(c.text("0.67~25Hz AC50 25mm/s 10mm/mV 4*2.5s+1r", 0.03, 0.983))
    footer.append(c.heart(0.322, 0.983))
    footer.append(c.text(str(hr), 0.33, 0.983))
    footer.append(c.text("SE-3 V1.0", 0.37, 0.983))
    footer.append(c.text(f"{date}  {clock}", 0.81, 0.983))

    trace_box = _union(trace)
    if template == "3x4_grid":
        grid_box = (round(0.032 * width), round(0.183 * height), round(0.984 * width), round(0.963 * height))
        image = _draw_grid(c.gray, grid_box, px_per_mm, color)
    else:
        image = cv2.cvtColor(c.gray, cv2.COLOR_GRAY2BGR) if color else c.gray
    # Mild sensor noise, deterministic per seed.
    noise = rng.normal(0.0, 2.0, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return Page(image, trace_box, header, footer)
