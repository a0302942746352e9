"""Draw a 12-lead signal as a paper ECG page, with the exact pixel <-> signal mapping as ground truth.

The pages imitate the EDAN SE-3 printouts of the Mendeley dataset (see ``ecgdx.page.layout``):

- ``3x4``: pink grid, rows I|aVR|V1|V4, II|aVL|V2|V5, III|aVF|V3|V6 of 2.5 s each, then a 10 s
  lead-II rhythm strip; a 1 mV calibration pulse at the left of every row; separator lines.
- ``6x2``: plain paper, rows I|V1, II|V2, III|V3, aVR|V4, aVL|V5, aVF|V6 of 5 s each, then the rhythm
  strip. ``rhythm=False`` drops the strip (the dataset's "6x2_grid" pages, with ``grid=True``).

Geometry (measured on the dataset's full-resolution scans, 2213 x 1572 px at 7.9 px/mm): a 280 x
199 mm page, traces starting 19.2 mm from the left edge, 25 mm/s, 10 mm/mV; row baselines at the
millimetre positions in ``_BASELINES_MM``. Any ``dpi`` keeps these millimetres.

Every lead's mapping (``LeadMapping``) is exact in the undistorted page: sample i of lead L lies at
x = x0 + (i / fs - t0) * px_per_s, y = baseline_y - value_mV * px_per_mv. With geometric distortions
(rotation, perspective) ``RenderedPage.homography`` maps undistorted page pixels to image pixels.

Pixel coordinates are continuous: pixel i spans [i, i + 1), so its centre is i + 0.5.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ecgdx.labels import LEADS

__all__ = [
    "LAYOUTS",
    "Distortions",
    "LeadMapping",
    "RenderedPage",
    "load_record",
    "printer_filter",
    "render_page",
    "simulate_signals",
]

LAYOUTS = ("3x4", "6x2")
MM_PER_S = 25.0
MM_PER_MV = 10.0
RECORD_SECONDS = 10.0
DEFAULT_DPI = 200.0  # 7.87 px/mm, the dataset's full-resolution scans

_PAGE_MM = (280.0, 199.0)  # (width, height)
_TRACE_X0_MM = 19.2
# Row baselines (mm from the top), lead rows then the rhythm strip (measured on real pages).
_BASELINES_MM = {
    "3x4": (58.7, 96.7, 134.9, 172.9),
    "6x2": (50.6, 72.0, 93.8, 115.7, 137.5, 159.3, 181.0),
}
_ROWS = {
    "3x4": (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    "6x2": (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
}
# Separator lines reach this far (mm) above the first and below the last lead row's baseline.
_SEPARATOR_REACH_MM = {"3x4": (6.0, 4.0), "6x2": (4.5, 7.5)}
_GRID_BOX_MM = (8.9, 36.2, 275.4, 191.6)  # (x0, y0, x1, y1) of the ruled area
# Calibration pulse, mm relative to the trace start: left foot, rising edge, falling edge, right foot.
_PULSE_MM = (-7.5, -6.5, -4.0, -3.0)
_TRACE_MM = 0.3  # printed line width
_INK_BGR = (45, 38, 48)
_GRID_MINOR_BGR = (240, 234, 248)
_GRID_MAJOR_BGR = (208, 200, 224)
_FONT = cv2.FONT_HERSHEY_COMPLEX


@dataclass(frozen=True)
class LeadMapping:
    """Where one lead is printed, in undistorted page pixels.

    lead: 'I' ... 'V6' ('II' for the rhythm strip). x0: x (px) of time t0. px_per_s: horizontal
    scale (px/s). baseline_y: y (px) of 0 mV. px_per_mv: vertical scale (px/mV, y grows downwards).
    t0, t1: the time window (s from the start of the record) printed in this panel.
    """

    lead: str
    x0: float
    px_per_s: float
    baseline_y: float
    px_per_mv: float
    t0: float
    t1: float

    def to_pixels(self, t: np.ndarray, mv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) page pixels of times ``t`` (s) and values ``mv`` (mV)."""
        t = np.asarray(t, float)
        return self.x0 + (t - self.t0) * self.px_per_s, self.baseline_y - np.asarray(mv, float) * self.px_per_mv


@dataclass(frozen=True)
class Distortions:
    """Image degradations, applied in this order: lighting, creases, geometry, blur, noise, JPEG.

    rotation_deg: rotation about the page centre (degrees, counter-clockwise positive).
    perspective: largest corner displacement as a share of the shorter page side (0 = none).
    blur_sigma: Gaussian blur sigma (px). noise_sigma: Gaussian noise (gray levels).
    jpeg_quality: re-encode as JPEG at this quality (None = no).
    lighting: depth of a smooth brightness falloff (0..1; 0.3 darkens one side by up to 30 %).
    creases: number of fold lines (faint straight light/dark bands across the page).
    """

    rotation_deg: float = 0.0
    perspective: float = 0.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    lighting: float = 0.0
    creases: int = 0

    @classmethod
    def mild(cls, rng: np.random.Generator) -> Distortions:
        """Random mild distortions: rotation <= 2 deg, blur, noise, JPEG 50, uneven light, one crease."""
        return cls(
            rotation_deg=float(rng.uniform(-2.0, 2.0)),
            blur_sigma=float(rng.uniform(0.4, 1.0)),
            noise_sigma=float(rng.uniform(3.0, 8.0)),
            jpeg_quality=50,
            lighting=float(rng.uniform(0.1, 0.3)),
            creases=int(rng.integers(0, 2)),
        )

    @property
    def geometric(self) -> bool:
        return bool(self.rotation_deg or self.perspective)


@dataclass
class RenderedPage:
    """A drawn page and its ground truth.

    image: (H, W, 3) uint8 BGR page. layout: '3x4' or '6x2'. fs: sampling rate (Hz) of ``signals``.
    signals: (12, N) float mV in ``LEADS`` order, exactly what was drawn (N = 10 s * fs; NaN = not drawn).
    leads: the 12 panels' mappings by lead name. rhythm: the rhythm strip's, or None.
    px_per_mm: page pixels per mm (dpi / 25.4). homography: (3, 3) undistorted page px -> image px
    (identity without geometric distortion). distortions: what was applied. details: made-up header.
    """

    image: np.ndarray
    layout: str
    fs: float
    signals: np.ndarray
    leads: dict[str, LeadMapping]
    rhythm: LeadMapping | None
    px_per_mm: float
    homography: np.ndarray
    distortions: Distortions
    has_grid: bool
    details: dict[str, str] = field(default_factory=dict)

    def truth(self) -> dict:
        """JSON-ready description of the mapping (no pixels, no samples)."""
        return {
            "layout": self.layout,
            "fs": self.fs,
            "has_grid": self.has_grid,
            "has_rhythm": self.rhythm is not None,
            "px_per_mm": self.px_per_mm,
            "page_size": list(self.image.shape[:2]),
            "homography": self.homography.tolist(),
            "distortions": asdict(self.distortions),
            "leads": {k: asdict(v) for k, v in self.leads.items()},
            "rhythm": asdict(self.rhythm) if self.rhythm else None,
        }


# --------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------


def load_record(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a WFDB record (``.hea`` + signal file) as (12, N) mV in ``LEADS`` order, and fs (Hz).

    Channel names are matched case-insensitively ('AVR' = 'aVR'). Physical units must be mV
    (or uV, which is converted). Needs the ``wfdb`` package (``pip install 'ecgdx[signal]'``).

    Raises:
        ValueError: a lead is missing or the units are not a voltage.
    """
    import wfdb

    path = Path(path)
    with warnings.catch_warnings():
        # wfdb 4.3 uses pandas' deprecated inplace= internally (Pandas4Warning); nothing to act on.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        record = wfdb.rdrecord(str(path.with_suffix("")) if path.suffix == ".hea" else str(path))
    names = [str(n).strip().lower() for n in record.sig_name]
    signals = np.empty((len(LEADS), record.p_signal.shape[0]), float)
    for i, lead in enumerate(LEADS):
        if lead.lower() not in names:
            raise ValueError(f"record {path.name}: lead {lead} missing (channels: {', '.join(record.sig_name)})")
        j = names.index(lead.lower())
        unit = str(record.units[j]).strip().lower()
        factor = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3}.get(unit)
        if factor is None:
            raise ValueError(f"record {path.name}: lead {lead} is in {record.units[j]!r}, not mV")
        signals[i] = record.p_signal[:, j] * factor
    return signals, float(record.fs)


def printer_filter(signals: np.ndarray, fs: float, low_hz: float | None = 0.67,
                   high_hz: float | None = 40.0) -> np.ndarray:
    """Band-limit like an electrocardiograph's print filter (zero phase, numpy only).

    The EDAN pages of the dataset print "0.67~25Hz" (3x4) or "0.5~45Hz" (6x2): a high-pass removes
    baseline wander, a low-pass the muscle and mains noise. Here both are 2nd-order Butterworth
    magnitude responses applied in the frequency domain; None skips one.
    Args: signals (..., N) mV; fs Hz. Returns the same shape (each row's mean removed by the high-pass).
    """
    x = np.asarray(signals, float)
    n = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    spectrum = np.fft.rfft(x - mean, axis=-1)
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / fs), 1e-9)
    gain = np.ones_like(f)
    if low_hz:
        gain /= np.sqrt(1.0 + (low_hz / f) ** 4)
        gain[0] = 0.0
    if high_hz:
        gain /= np.sqrt(1.0 + (f / high_hz) ** 4)
    out = np.fft.irfft(spectrum * gain, n, axis=-1)
    return out if low_hz else out + mean


def simulate_signals(seed: int, fs: float = 500.0, heart_rate: float | None = None) -> tuple[np.ndarray, float]:
    """(12, 10 s * fs) mV from neurokit2's 12-lead simulation (``method="multileads"``), and the
    heart rate asked for (bpm; random 50-110 when None). Needs neurokit2 (``ecgdx[signal]``)."""
    import neurokit2 as nk

    rng = np.random.default_rng(seed)
    rate = float(heart_rate if heart_rate is not None else rng.uniform(50, 110))
    frame = nk.ecg_simulate(duration=RECORD_SECONDS, sampling_rate=int(fs), heart_rate=rate,
                            method="multileads", random_state=int(seed))
    return np.stack([frame[lead].to_numpy(float) for lead in LEADS]), rate


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def render_page(
    signals: np.ndarray,
    fs: float,
    *,
    layout: str = "3x4",
    dpi: float = DEFAULT_DPI,
    seed: int = 0,
    grid: bool | None = None,
    rhythm: bool = True,
    distortions: Distortions | None = None,
) -> RenderedPage:
    """Draw a 12-lead record as a paper ECG page.

    Args:
        signals: (12, N) mV in ``LEADS`` order, sampled at ``fs``; the first 10 s are drawn (shorter
            records leave the rest of the page blank). NaN samples are not drawn.
        fs: sampling rate (Hz), >= 50.
        layout: '3x4' or '6x2'. grid: ruled paper (default: 3x4 yes, 6x2 no). rhythm: print the
            10 s lead-II strip.
        dpi: resolution (dots per inch; 200 ~ the dataset's scans, 100 ~ its PNGs), 50..600.
        seed: made-up header details and random distortion parts (creases, noise).
        distortions: degradations (see ``Distortions``); None = a clean page.

    Returns:
        ``RenderedPage`` with the image and the exact mapping.

    Raises:
        ValueError: bad shape, fs, layout or dpi.
    """
    signals = np.asarray(signals, float)
    if signals.ndim != 2 or signals.shape[0] != len(LEADS) or signals.shape[1] < 2:
        raise ValueError(f"signals must be (12, N) mV in LEADS order, got shape {signals.shape}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not 50 <= fs <= 10000:
        raise ValueError(f"fs must be 50..10000 Hz, got {fs}")
    if not 50 <= dpi <= 600:
        raise ValueError(f"dpi must be 50..600, got {dpi}")
    grid = (layout == "3x4") if grid is None else bool(grid)
    distortions = distortions or Distortions()
    rng = np.random.default_rng(seed)
    n = int(round(RECORD_SECONDS * fs))
    drawn = np.full((len(LEADS), n), np.nan)
    drawn[:, : min(n, signals.shape[1])] = signals[:, :n]

    ppm = dpi / 25.4
    size = (int(round(_PAGE_MM[0] * ppm)), int(round(_PAGE_MM[1] * ppm)))
    canvas = np.full((size[1], size[0], 3), 255, np.uint8)
    if grid:
        _draw_grid(canvas, ppm)
    details = _made_up_details(rng)
    _draw_text(canvas, ppm, layout, details, rhythm)
    leads, rhythm_map = _mappings(layout, ppm, rhythm)
    _draw_traces(canvas, ppm, layout, drawn, fs, leads, rhythm_map)
    image, homography = _distort(canvas, distortions, rng)
    return RenderedPage(image, layout, float(fs), drawn, leads, rhythm_map, ppm, homography, distortions,
                        grid, details)


def _mappings(layout: str, ppm: float, rhythm: bool) -> tuple[dict[str, LeadMapping], LeadMapping | None]:
    """Per-lead mappings (page px) of a layout at ppm px/mm."""
    rows = _ROWS[layout]
    seconds = RECORD_SECONDS / len(rows[0])
    pps = MM_PER_S * ppm
    x0 = _TRACE_X0_MM * ppm
    baselines = [b * ppm for b in _BASELINES_MM[layout]]
    leads = {}
    for r, names in enumerate(rows):
        for c, lead in enumerate(names):
            leads[lead] = LeadMapping(lead, x0 + c * seconds * pps, pps, baselines[r], MM_PER_MV * ppm,
                                      c * seconds, (c + 1) * seconds)
    strip = LeadMapping("II", x0, pps, baselines[len(rows)], MM_PER_MV * ppm, 0.0, RECORD_SECONDS) if rhythm else None
    return {lead: leads[lead] for lead in LEADS}, strip


def _draw_grid(canvas: np.ndarray, ppm: float) -> None:
    """1 mm minor and 5 mm major lines over the ruled area (thin, anti-aliased)."""
    x0, y0, x1, y1 = (v * ppm for v in _GRID_BOX_MM)
    nx = int((_GRID_BOX_MM[2] - _GRID_BOX_MM[0]) // 1)
    ny = int((_GRID_BOX_MM[3] - _GRID_BOX_MM[1]) // 1)
    for major in (False, True):
        colour = _GRID_MAJOR_BGR if major else _GRID_MINOR_BGR
        for i in range(nx + 1):
            if (i % 5 == 0) == major:
                x = x0 + i * ppm
                _line(canvas, (x, y0), (x, y1), colour, 1)
        for j in range(ny + 1):
            if (j % 5 == 0) == major:
                y = y0 + j * ppm
                _line(canvas, (x0, y), (x1, y), colour, 1)


_SHIFT = 4  # OpenCV fixed-point bits: coordinates in 1/16 px


def _line(canvas: np.ndarray, p: tuple[float, float], q: tuple[float, float], colour, thickness: int) -> None:
    """Anti-aliased line between continuous-coordinate points (pixel centres at i + 0.5)."""
    scale = 1 << _SHIFT
    a = (int(round((p[0] - 0.5) * scale)), int(round((p[1] - 0.5) * scale)))
    b = (int(round((q[0] - 0.5) * scale)), int(round((q[1] - 0.5) * scale)))
    cv2.line(canvas, a, b, colour, thickness, cv2.LINE_AA, _SHIFT)


def _polyline(canvas: np.ndarray, x: np.ndarray, y: np.ndarray, thickness: int) -> None:
    """Anti-aliased polyline through (x, y) continuous coordinates, split at NaN gaps."""
    ok = np.isfinite(x) & np.isfinite(y)
    scale = 1 << _SHIFT
    edges = np.diff(np.concatenate(([0], ok.view(np.int8), [0])))
    for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        pts = np.stack([(x[s:e] - 0.5) * scale, (y[s:e] - 0.5) * scale], axis=1)
        pts = np.clip(np.round(pts), -(2**28), 2**28).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, _INK_BGR, thickness, cv2.LINE_AA, _SHIFT)


def _draw_traces(canvas, ppm, layout, signals, fs, leads, rhythm_map) -> None:
    """Calibration pulses, separators, lead labels and the traces."""
    thickness = max(1, int(round(_TRACE_MM * ppm)))
    rows = _ROWS[layout]
    baselines = [b * ppm for b in _BASELINES_MM[layout]]
    x0 = _TRACE_X0_MM * ppm
    n_rows = len(rows) + (1 if rhythm_map else 0)
    for r in range(n_rows):
        b = baselines[r]
        xs = [x0 + d * ppm for d in _PULSE_MM]
        top = b - MM_PER_MV * ppm
        pts = [(xs[0], b), (xs[1], b), (xs[1], top), (xs[2], top), (xs[2], b), (xs[3], b)]
        _polyline(canvas, np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), thickness)
    # Separators between the columns of lead rows.
    up, down = _SEPARATOR_REACH_MM[layout]
    for c in range(1, len(rows[0])):
        x = leads[rows[0][c]].x0
        _line(canvas, (x, baselines[0] - up * ppm), (x, baselines[len(rows) - 1] + down * ppm), _INK_BGR, thickness)
    t = np.arange(signals.shape[1]) / fs
    for lead, m in leads.items():
        keep = (t >= m.t0) & (t <= m.t1 + 0.5 / fs)
        x, y = m.to_pixels(t[keep], signals[LEADS.index(lead), keep])
        _polyline(canvas, x, y, thickness)
        _label(canvas, ppm, lead, m.x0, m.baseline_y)
    if rhythm_map is not None:
        x, y = rhythm_map.to_pixels(t, signals[LEADS.index("II")])
        _polyline(canvas, x, y, thickness)
        _label(canvas, ppm, "II", rhythm_map.x0, rhythm_map.baseline_y)


def _label(canvas: np.ndarray, ppm: float, text: str, x: float, baseline: float) -> None:
    """Lead name printed at the panel start, its bottom 0.3 mm above the baseline (~2.6 mm high)."""
    scale = 2.6 * ppm / 22.0  # Hershey glyphs are ~22 px high at scale 1
    org = (int(round(x + 0.6 * ppm)), int(round(baseline - 0.3 * ppm)))
    cv2.putText(canvas, text, org, _FONT, scale, _INK_BGR, max(1, int(round(0.12 * ppm))), cv2.LINE_AA)


def _made_up_details(rng: np.random.Generator) -> dict[str, str]:
    """Invented header data: never real people, dates in a synthetic range."""
    return {
        "id": f"SYN{int(rng.integers(10000, 99999))}",
        "age": str(int(rng.integers(20, 90))),
        "sex": str(rng.choice(["Male", "Female"])),
        "date": f"{int(rng.integers(1, 29)):02d}-{int(rng.integers(1, 13)):02d}-2099",
        "time": f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d}",
        "hr": str(int(rng.integers(50, 110))),
    }


def _draw_text(canvas, ppm, layout, details, rhythm) -> None:
    """Header (title, patient line, rules, technician block) and footer (settings, date)."""
    width = canvas.shape[1]

    def put(text: str, x_mm: float, y_mm: float, height_mm: float) -> None:
        scale = height_mm * ppm / 22.0
        cv2.putText(canvas, text, (int(x_mm * ppm), int(y_mm * ppm)), _FONT, scale, (0, 0, 0),
                    max(1, int(round(0.12 * ppm * height_mm / 2.6))), cv2.LINE_AA)

    title = "ECG REPORT (SYNTHETIC)" if layout == "3x4" else "ECGDX_SYNTHETIC ECG REPORT"
    put(title, _PAGE_MM[0] / 2 - len(title) * 1.6, 6.5, 4.0)
    put(f"ID : {details['id']}   {details['age']} Years   {details['sex']}   cm   kg   /   mmHg   "
        "Race:Unknown   Room No.:", 2.5, 11.0, 2.6)
    put("Exam.Room:      Medication:", 2.5, 15.0, 2.6)
    for y_mm in (17.4, 18.1):
        _line(canvas, (2.0 * ppm, y_mm * ppm), (width - 2.0 * ppm, y_mm * ppm), (0, 0, 0), 1)
    put("Diagnosis Information:", 2.5, 21.5, 2.6)
    for i, text in enumerate(("Technician :", "Ref-Phys. :", "Report Confirmed by:")):
        put(text, 197.0, 25.5 + 4.2 * i, 2.6)
    columns = len(_ROWS[layout][0])
    design = f"{columns}*{RECORD_SECONDS / columns:g}s" + ("+1r" if rhythm else "")
    band = "0.67~25Hz" if layout == "3x4" else "0.5~45Hz"
    put(f"{band} AC50 25mm/s 10mm/mV {design} HR {details['hr']}  ecgdx render", 2.5, 196.3, 2.2)
    put(f"{details['date']}  {details['time']}", 228.0, 196.3, 2.2)


# --------------------------------------------------------------------------------------------------
# Distortions
# --------------------------------------------------------------------------------------------------


def _distort(canvas: np.ndarray, d: Distortions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``d`` to a BGR page; returns (image, homography undistorted px -> image px)."""
    image = canvas
    h, w = image.shape[:2]
    if d.lighting > 0:
        image = _lighting(image, d.lighting, rng)
    if d.creases > 0:
        image = _creases(image, d.creases, rng)
    homography = np.eye(3)
    if d.geometric:
        homography = _homography(w, h, d, rng)
        image = cv2.warpPerspective(image, homography, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    if d.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), d.blur_sigma)
    if d.noise_sigma > 0:
        noise = rng.normal(0.0, d.noise_sigma, image.shape[:2])[..., None]
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if d.jpeg_quality is not None:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(d.jpeg_quality)])
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image
    return image, homography


def _homography(w: int, h: int, d: Distortions, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the page centre followed by a random perspective (corner jitter)."""
    rotation = np.eye(3)
    rotation[:2] = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), d.rotation_deg, 1.0)
    if d.perspective <= 0:
        return rotation
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-1, 1, (4, 2)) * d.perspective * min(w, h)
    perspective = cv2.getPerspectiveTransform(corners, (corners + jitter).astype(np.float32))
    return perspective @ rotation


def _lighting(image: np.ndarray, depth: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply by a smooth brightness ramp plus a soft vignette (shadow of a phone or a lamp)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)) + 0.5
    vignette = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2.0
    gain = 1.0 - depth * np.clip(0.7 * ramp + 0.3 * vignette, 0, 1)
    return np.clip(image.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def _creases(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Straight fold lines: a thin dark line with a light band beside it."""
    out = image.copy()
    h, w = out.shape[:2]
    for _ in range(count):
        if rng.random() < 0.5:
            x = rng.uniform(0.2, 0.8) * w
            p, q = (x + rng.uniform(-0.05, 0.05) * w, 0.0), (x, float(h))
        else:
            y = rng.uniform(0.2, 0.8) * h
            p, q = (0.0, y), (float(w), y + rng.uniform(-0.05, 0.05) * h)
        shade = np.zeros((h, w), np.uint8)
        cv2.line(shade, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 255, max(3, w // 300), cv2.LINE_AA)
        shade = cv2.GaussianBlur(shade, (0, 0), max(1.0, w / 800))
        darker = 1.0 - 0.12 * shade.astype(np.float32)[..., None] / 255.0
        out = np.clip(out.astype(np.float32) * darker, 0, 255).astype(np.uint8)
    return out
