"""Read the 12 leads of a paper ECG page back into time series (mV at 500 Hz).

``digitize(image) -> DigitizedECG``. Steps:

1. Decode at full resolution (``preprocessing.decode_image``; colour -> gray) and deskew: the page
   is rotated back by the angle that makes its horizontal structure (grid lines, header rules,
   trace baselines) sharpest in a horizontal projection (search +/- 4 deg).
2. Lead layout at the working scale (~1106 px wide): ``layout.analyse_layout`` (what
   ``find_lead_panels`` reports): the scale from the 1 mV calibration pulses (10 mm), the grid
   period as a cross-check, the row baselines (pulse feet), the separator lines; the row count gives
   the design (3x4 + rhythm, 6x2 + rhythm, 6x2 without rhythm).
3. Trace ink per panel at the working scale with the layout's cleaning (``layout.prepare_ink``,
   ``row_ink``, ``clean_label_area``, ``bridge``): separators erased, lead-label glyphs and other
   rows' ink dropped, header/footer text never read.
4. Reading at the page's own resolution (ink inside the cleaned mask): one ink run per pixel column
   by a cheapest-path search (continuity); sub-pixel values: the darkness-weighted centre of each
   column, the run's end (less half the line width) at peaks and troughs, and row-wise centres along
   steep strokes (column centres would widen every QRS by the line width).
5. The rhythm strip's printed lead label (II, III, V1, ...) is read by matching its glyphs
   against the labels this same page prints on its 12 panels (same font, same scale, no OCR);
   when no label matches clearly, the strip is called "rhythm strip" rather than guessed.
6. Time axis from sub-pixel landmarks (separator centres, the midpoint of the traces' start and
   end), mV = (row baseline - y) / (pulse height per mV); resampled to ``fs`` on each lead's own
   window (3x4: aVR is 2.5-5 s, ...); NaN outside it.

A 2213 x 1572 photo and its 50 % PNG give nearly the same signals (the PNG at half the resolution).
No torch, no PIL: numpy and OpenCV (wfdb only to write WFDB records).
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgdx.labels import LEADS
from ecgdx.page import layout as _layout
from ecgdx.page.analysis import PageAnalysis
from ecgdx.page.normalize import normalize_page, rotate_page
from ecgdx.page.preprocessing import decode_image
from ecgdx.page.primitives import INK_LEVEL, SKEW_RANGE, estimate_skew, flatten_background

__all__ = ["DEFAULT_FS", "FORMATS", "RHYTHM_FALLBACK", "DigitizedECG", "digitize", "estimate_skew"]

DEFAULT_FS = 500.0
FORMATS = ("csv", "wfdb", "json")
RECORD_SECONDS = _layout.RECORD_SECONDS
# Deskew precision (degrees): smaller angles are left alone (search range: _RESIDUAL_RANGE after
# normalize_page, primitives.SKEW_RANGE without it).
_SKEW_MIN = 0.05
# What tilt normalize_page's coarse rotation leaves (0.1 deg steps) is a fraction of a degree: on 650
# development and full-resolution pages tilted by 0 to 14.5 deg the fine search over +/-15 deg never
# found more than 0.1 deg. Searching +/-3 deg gives the same angle at about 60 % of the cost.
_RESIDUAL_RANGE = 3.0
# Half height (mm) of the window read around each row's baseline (1.9 mV; tall waves of 6x2 pages
# print into the neighbouring rows, 21.7 mm apart).
_WINDOW_HALF_MM = 19.0
# Columns without trace longer than this (s) stay NaN; shorter gaps are interpolated.
_MAX_GAP_S = 0.06
# A jump between the runs of neighbouring columns longer than this (mm) is penalised in the path.
_MAX_JUMP_MM = 3.0
# Steep strokes up to this many columns (with their neighbours) are read in one shared block
# (_steep_strokes): numpy adds fewer than 8 numbers one by one, so zero padding changes no sum.
_SHARED_BLOCK_WIDTH = 7
# Ink runs of one column closer than this (px) are one run (see _read_panel).
_MERGE_GAP_PX = 2
# What the rhythm strip is called when its printed label cannot be read.
RHYTHM_FALLBACK = "rhythm strip"
# Rhythm-label glyphs are compared in a band this far above the baseline (mm): the labels are
# ~2.6 mm high with their foot on the baseline, where the flat trace runs through them; the band
# keeps their upper part, which the trace crosses only at a wave.
_LABEL_BAND_MM = (3.4, 0.9)
# A label is read when its glyphs match one panel label this well (``_glyph_match``) and every
# differently named panel label clearly worse. On a seeded sample of 277 dev pages with a strip,
# 0.8 / 0.2 read 233 (193 II, 40 III; all 40 III and 36 sampled II correct by eye) and left 44
# unread, most with a QRS drawn over the label; the 11 full-resolution samples: all read, correct.
_LABEL_MIN_SCORE = 0.8
_LABEL_MIN_MARGIN = 0.2
# Narrower strip glyphs (mm) are not read: a lone upright is as likely a fragment of 'II' (the rest
# hidden by a wave or cut off) as the label 'I', so a strip printed in lead I stays unnamed.
_LABEL_MIN_WIDTH_MM = 1.1


@dataclass
class DigitizedECG:
    """The 12 leads read from one page.

    fs: sampling rate (Hz). signals: (12, N) float mV in ``LEADS`` order, N = 10 s * fs, NaN outside
        each lead's printed window. rhythm: (N,) the 10 s rhythm strip, or None.
    rhythm_lead: the strip's printed lead label ('II', 'III', 'V1', ...), or None when the page has no
        strip or its label could not be read (``rhythm_name`` then says "rhythm strip").
    windows: lead -> (t0, t1) seconds printed. confidence: lead -> 0..1 (layout confidence x share of
        the window with a trace x continuity). rhythm_confidence: same for the strip.
    template: '3x4_grid', '6x2_nogrid', '6x2_grid', ... (``PageLayout.template``).
    px_per_mm: page px per mm from the pulses; grid_px_per_mm: from the grid (ruled pages), a check.
    px_per_s: time scale (page px per s). rotation_deg: deskew applied (degrees).
    page_size: (height, width) of the decoded page in px. warnings: what looked doubtful.
    timings_ms: per-step wall time.
    """

    fs: float
    signals: np.ndarray
    rhythm: np.ndarray | None
    windows: dict[str, tuple[float, float]]
    confidence: dict[str, float]
    rhythm_confidence: float | None
    template: str
    px_per_mm: float
    grid_px_per_mm: float | None
    px_per_s: float
    rotation_deg: float
    page_size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    rhythm_lead: str | None = None

    @classmethod
    def from_summary(cls, summary: dict[str, Any], signals: np.ndarray, rhythm: np.ndarray | None) -> DigitizedECG:
        """Rebuild a result from ``summary()`` and its samples (e.g. stored by the web app)."""
        return cls(
            fs=float(summary["fs"]),
            signals=np.asarray(signals, float),
            rhythm=None if rhythm is None else np.asarray(rhythm, float),
            windows={k: (float(v[0]), float(v[1])) for k, v in summary["windows"].items()},
            confidence={k: float(v) for k, v in summary["confidence"].items()},
            rhythm_confidence=summary.get("rhythm_confidence"),
            template=str(summary["template"]),
            px_per_mm=float(summary["px_per_mm"]),
            grid_px_per_mm=summary.get("grid_px_per_mm"),
            px_per_s=float(summary["px_per_s"]),
            rotation_deg=float(summary.get("rotation_deg", 0.0)),
            page_size=tuple(summary.get("page_size", (0, 0))),
            warnings=list(summary.get("warnings", [])),
            timings_ms=dict(summary.get("timings_ms", {})),
            rhythm_lead=summary.get("rhythm_lead"),
        )

    @property
    def rhythm_name(self) -> str | None:
        """The strip's lead as printed ('III'), "rhythm strip" when unread, None without a strip."""
        if self.rhythm is None:
            return None
        return self.rhythm_lead or RHYTHM_FALLBACK

    def source_name(self, source: str | None) -> str | None:
        """How to call a measurement source (``Measurements.rhythm_source``): the strip by its printed
        lead ('III rhythm strip', or 'rhythm strip' when unread), a panel as 'lead V2'."""
        if source is None:
            return None
        if source == "rhythm":
            return f"{self.rhythm_lead} rhythm strip" if self.rhythm_lead else RHYTHM_FALLBACK
        return f"lead {source}"

    @property
    def rhythm_stem(self) -> str | None:
        """File-name stem of the strip: 'rhythm_III', 'rhythm' when its label is unread, None without."""
        if self.rhythm is None:
            return None
        return f"rhythm_{self.rhythm_lead}" if self.rhythm_lead else "rhythm"

    @property
    def rhythm_signal_name(self) -> str | None:
        """Column / WFDB signal name of the strip: its lead ('III'), or 'rhythm' when unread."""
        if self.rhythm is None:
            return None
        return self.rhythm_lead or "rhythm"

    @property
    def time(self) -> np.ndarray:
        """(N,) seconds from the start of the record."""
        return np.arange(self.signals.shape[1]) / self.fs

    def lead(self, name: str) -> np.ndarray:
        """(N,) mV of one lead ('I' ... 'V6'), NaN outside its window."""
        return self.signals[LEADS.index(name)]

    @property
    def scale_agreement(self) -> float | None:
        """grid px/mm / pulse px/mm - 1 (None without grid): both should measure the same millimetre."""
        return None if not self.grid_px_per_mm else self.grid_px_per_mm / self.px_per_mm - 1.0

    def leads_dict(self) -> dict[str, np.ndarray]:
        """Lead name -> (N,) mV, plus 'rhythm' (the strip) when printed: what ``measure`` takes."""
        out = {lead: self.signals[i] for i, lead in enumerate(LEADS)}
        if self.rhythm is not None:
            out["rhythm"] = self.rhythm
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready description without the samples."""
        return {
            "fs": self.fs,
            "samples": int(self.signals.shape[1]),
            "template": self.template,
            "px_per_mm": round(self.px_per_mm, 4),
            "grid_px_per_mm": None if self.grid_px_per_mm is None else round(self.grid_px_per_mm, 4),
            "scale_agreement": None if self.scale_agreement is None else round(self.scale_agreement, 4),
            "px_per_s": round(self.px_per_s, 3),
            "rotation_deg": round(self.rotation_deg, 3),
            "page_size": list(self.page_size),
            "windows": {k: list(v) for k, v in self.windows.items()},
            "confidence": self.confidence,
            "rhythm_confidence": self.rhythm_confidence,
            "has_rhythm": self.rhythm is not None,
            "rhythm_lead": self.rhythm_lead,
            "warnings": list(self.warnings),
            "timings_ms": self.timings_ms,
        }

    def to_json(self) -> dict[str, Any]:
        """``summary()`` plus the samples (NaN -> null), mV rounded to 1 uV."""
        out = self.summary()
        out["leads"] = {lead: _nan_to_none(self.signals[i]) for i, lead in enumerate(LEADS)}
        out["rhythm"] = None if self.rhythm is None else _nan_to_none(self.rhythm)
        return out

    def csv_text(self) -> str:
        """CSV of the 12 leads: header ``time,I,II,III,aVR,aVL,aVF,V1,...,V6``; empty cells = NaN."""
        return _csv_text(self.time, self.signals, LEADS)

    def rhythm_csv_text(self) -> str | None:
        """CSV of the rhythm strip (``time,III``: its printed lead, or ``time,rhythm`` when unread), or
        None when the page has none."""
        if self.rhythm is None:
            return None
        return _csv_text(self.time, self.rhythm[None], (self.rhythm_signal_name,))

    def save(self, directory: str | Path, fmt: str = "csv", name: str = "ecg") -> list[Path]:
        """Write the result into ``directory`` (created) and return the paths written.

        csv: ``leads.csv`` (time + 12 leads; NaN outside each window) and ``rhythm_<lead>.csv``
            (``rhythm_III.csv``; ``rhythm.csv`` when the strip's label is unread).
        wfdb: ``{name}.hea/.dat`` (12 leads, format 16, 1 uV steps; NaN = missing) and
            ``{name}_rhythm.hea/.dat`` (the strip; its signal named by its printed lead).
        json: ``{name}.json`` (``to_json``).
        Every format also writes ``{name}.meta.json`` (``summary``).
        """
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if fmt == "csv":
            (out / "leads.csv").write_text(self.csv_text(), encoding="utf-8")
            written.append(out / "leads.csv")
            rhythm = self.rhythm_csv_text()
            if rhythm is not None:
                target = out / f"{self.rhythm_stem}.csv"
                target.write_text(rhythm, encoding="utf-8")
                written.append(target)
        elif fmt == "wfdb":
            written += write_wfdb(out, name, self.signals, self.fs, LEADS)
            if self.rhythm is not None:
                written += write_wfdb(out, f"{name}_rhythm", self.rhythm[None], self.fs,
                                      (self.rhythm_signal_name,))
        else:
            (out / f"{name}.json").write_text(json.dumps(self.to_json()), encoding="utf-8")
            written.append(out / f"{name}.json")
        meta = out / f"{name}.meta.json"
        meta.write_text(json.dumps(self.summary(), indent=2), encoding="utf-8")
        return [*written, meta]


def _nan_to_none(x: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), 3) for v in x]


def _csv_text(t: np.ndarray, signals: np.ndarray, names) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["time", *names])
    for i in range(len(t)):
        writer.writerow([f"{t[i]:.4f}", *("" if not math.isfinite(v) else f"{v:.4f}" for v in signals[:, i])])
    return buffer.getvalue()


def write_wfdb(directory: Path, name: str, signals: np.ndarray, fs: float, names) -> list[Path]:
    """Write (C, N) mV as a WFDB record (format 16, gain 1000/mV, NaN = the format's missing value)."""
    import wfdb

    channels = len(names)
    with warnings.catch_warnings():
        # wfdb 4.3 uses pandas' deprecated inplace= internally (Pandas4Warning); nothing to act on.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _wrsamp(wfdb, directory, name, signals, fs, names, channels)
    return [directory / f"{name}.hea", directory / f"{name}.dat"]


def _wrsamp(wfdb, directory: Path, name: str, signals: np.ndarray, fs: float, names, channels: int) -> None:
    wfdb.wrsamp(name, fs=fs, units=["mV"] * channels, sig_name=list(names),
                p_signal=np.ascontiguousarray(signals.T, dtype=np.float64), fmt=["16"] * channels,
                adc_gain=[1000.0] * channels, baseline=[0] * channels, write_dir=str(directory),
                comments=["digitised from a paper ECG image by ecgdx"])


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def digitize(image: Any, *, fs: float = DEFAULT_FS, deskew: bool = True, normalize: bool = True) -> DigitizedECG:
    """Digitise a picture of a 12-lead ECG page.

    Args:
        image: anything ``preprocessing.decode_image`` takes (path, bytes, file object, array).
        fs: output sampling rate (Hz), 50..2000.
        deskew: estimate and undo a rotation (+/- 15 deg with normalize, else +/- 4 deg).
        normalize: flatten a photographed sheet's perspective and even out its lighting first
            (``ecgdx.page.normalize``; a clean scan passes unchanged).

    Returns:
        ``DigitizedECG``.

    Raises:
        InvalidImageError: unreadable input (not an image, truncated, too large).
        NotAnEcgError: no lead layout found (no calibration pulses, unknown row count, ...).
        ValueError: fs out of range.
    """
    if not 50 <= fs <= 2000:
        raise ValueError(f"fs must be 50..2000 Hz, got {fs}")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    gray = decode_image(image)
    timings["decode"] = _lap(clock)
    angle = 0.0
    normalized: list[str] = []
    if normalize:
        # Sheet perspective, lighting and a coarse rotation, in normalize_page's order: the page's
        # own lines show perspective only once a tilt beyond their slope range (~4.6 deg) is undone.
        # What rotation is left is measured finely below.
        gray, info = normalize_page(gray)
        normalized = info.applied
        if any(step.startswith("rotation") for step in info.applied):
            angle = float(info.rotation_deg)
    page = PageAnalysis(gray)
    if deskew:
        # The skew search starts from the same working-scale page the layout reads: an upright
        # page is shrunk and flattened once.
        residual = estimate_skew(gray, max_angle=_RESIDUAL_RANGE if normalize else SKEW_RANGE,
                                 working_flat=page.flat)
        if abs(residual) >= _SKEW_MIN:
            gray = rotate_page(gray, residual)
            page = PageAnalysis(gray)
            angle += residual
    timings["deskew"] = _lap(clock) - timings["decode"]
    analysis = _layout.analyse_layout(page)
    timings["layout"] = _lap(clock) - sum(timings.values())
    factor = analysis.work.factor
    fine = _Fine(flatten_background(gray) if factor > 1 else analysis.work.flat, factor)
    result = _read_page(analysis, fine, fs)
    timings["traces"] = _lap(clock) - sum(timings.values())
    lay = analysis.layout
    scale = 1
    warnings = list(result.warnings) + [f"normalised: {step}" for step in normalized]
    grid = lay.grid_px_per_mm
    if grid is not None and abs(grid / lay.px_per_mm - 1) > 0.03:
        warnings.append(f"grid spacing and calibration pulses disagree by {100 * (grid / lay.px_per_mm - 1):.1f} %")
    timings["total"] = _lap(clock)
    return DigitizedECG(
        fs=float(fs),
        signals=result.signals,
        rhythm=result.rhythm,
        windows=result.windows,
        confidence=result.confidence,
        rhythm_confidence=result.rhythm_confidence,
        template=lay.template,
        px_per_mm=lay.px_per_mm * scale,
        grid_px_per_mm=None if grid is None else grid * scale,
        px_per_s=result.pps * factor,
        rotation_deg=float(angle),
        page_size=tuple(int(v) for v in gray.shape),
        warnings=warnings,
        timings_ms={k: round(v, 1) for k, v in timings.items()},
        rhythm_lead=result.rhythm_lead,
    )


def _lap(start: float) -> float:
    return 1000.0 * (time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# Deskew
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------------------------------


@dataclass
class _PageSignals:
    signals: np.ndarray
    rhythm: np.ndarray | None
    windows: dict[str, tuple[float, float]]
    confidence: dict[str, float]
    rhythm_confidence: float | None
    x0: float  # working px of t = 0
    pps: float  # working px per s
    warnings: list[str]
    rhythm_lead: str | None = None


def _read_page(a, fine: _Fine, fs: float) -> _PageSignals:
    """Every lead panel (and the rhythm strip) of an analysed page as signals at ``fs``."""
    ink = _layout.prepare_ink(a)
    design = a.design
    traces: dict[tuple[int, int], _Trace] = {}
    # The outer panel ends reach 1 mm beyond the layout's trace extent (integer columns), so that
    # the faint first and last columns of the trace are seen; the pulses end 3 mm before it.
    margin = 1.0 * a.ppm
    last = len(design.lead_rows[0]) - 1
    for r, names in enumerate(design.lead_rows):
        for c in range(len(names)):
            left = a.bounds[c] - (margin if c == 0 else 0.0)
            right = a.bounds[c + 1] + (margin if c == last else 0.0)
            traces[r, c] = _read_panel(a, ink, fine, r, left, right)
    if design.rhythm:
        traces[len(design.lead_rows), 0] = _read_panel(a, ink, fine, len(design.lead_rows), a.x0 - margin,
                                                       a.x0 + RECORD_SECONDS * a.pps + margin)
    x0, pps, warnings = _time_calibration(a, fine, traces)
    n = int(round(RECORD_SECONDS * fs))
    signals = np.full((len(LEADS), n), np.nan)
    windows, confidence = {}, {}
    px_per_mv = a.ppm * _layout.PULSE_MM  # working px per mV: the pulse height
    for r, names in enumerate(design.lead_rows):
        for c, lead in enumerate(names):
            t0, t1 = c * design.seconds, (c + 1) * design.seconds
            trace = traces[r, c]
            values, share = _resample(trace, x0, pps, px_per_mv, t0, t1, fs)
            signals[LEADS.index(lead), int(round(t0 * fs)) : int(round(t1 * fs))] = values
            windows[lead] = (t0, t1)
            confidence[lead] = round(float(a.layout.panels[lead].confidence * share * trace.continuity), 3)
    rhythm, rhythm_conf, rhythm_lead = None, None, None
    if design.rhythm:
        trace = traces[len(design.lead_rows), 0]
        rhythm, share = _resample(trace, x0, pps, px_per_mv, 0.0, RECORD_SECONDS, fs)
        rhythm_conf = round(float(a.layout.rhythm.confidence * share * trace.continuity), 3)
        rhythm_lead = _read_rhythm_label(a, ink)
        if rhythm_lead is None:
            warnings.append(f"the rhythm strip's lead label could not be read; it is called '{RHYTHM_FALLBACK}'")
    low = [lead for lead, c in confidence.items() if c < 0.5]
    if low:
        warnings.append(f"low confidence for {', '.join(low)}")
    return _PageSignals(signals, rhythm, windows, confidence, rhythm_conf, x0, pps, warnings, rhythm_lead)


# --------------------------------------------------------------------------------------------------
# Rhythm-strip label
# --------------------------------------------------------------------------------------------------


def _read_rhythm_label(a, ink) -> str | None:
    """The lead label printed at the start of the rhythm strip, or None when it cannot be read.

    The page prints the name of every panel in the same font and size as the strip's, so those 12
    labels are the templates: no font, OCR or training data is needed, and nothing but the label
    area is looked at. Each label's glyphs (``_label_glyphs``) are compared with the strip's by
    normalised cross-correlation; the best match is taken only when it is good and every label of
    another name matches clearly worse (a wave drawn over either label spoils the match).
    """
    strip = _label_glyphs(a, ink, len(a.design.lead_rows), a.bounds[0])
    if strip is None or strip.shape[1] < _LABEL_MIN_WIDTH_MM * a.ppm:
        return None
    scores: dict[str, float] = {}
    for r, names in enumerate(a.design.lead_rows):
        for c, lead in enumerate(names):
            template = _label_glyphs(a, ink, r, a.bounds[c])
            if template is not None:
                scores[lead] = _glyph_match(strip, template)
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    best_lead, best = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
    if best >= _LABEL_MIN_SCORE and best - runner_up >= _LABEL_MIN_MARGIN:
        return best_lead
    return None


def _label_glyphs(a, ink, row: int, left: float) -> np.ndarray | None:
    """0/1 ink of the label glyphs at the start of a panel (working px), trace removed, cut to the
    columns that hold ink; None when there is (almost) none.

    The box spans _LABEL_BAND_MM above the row's baseline and 1 mm left of the panel start to
    LABEL_MM right of it, with the same size on every row. The trace's own ink there (the cleaned
    panel mask, grown by a pixel) is removed.
    """
    ppm = a.ppm
    base = a.rows[row].baseline
    y0 = int(round(base - _LABEL_BAND_MM[0] * ppm))
    y1 = y0 + int(round((_LABEL_BAND_MM[0] - _LABEL_BAND_MM[1]) * ppm))
    x0 = int(round(left - 1.0 * ppm))
    x1 = x0 + int(round((_layout.LABEL_MM + 1.0) * ppm))
    height, width = a.work.ink.shape
    if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
        return None
    raw = a.work.ink[y0:y1, x0:x1].astype(np.uint8)
    # The label cleaning follows the trace from 2 mm right of the label area: a little more is enough.
    mask, _, (oy, ox) = _panel_window(a, ink, row, left, left + (_layout.LABEL_MM + 3.0) * ppm)
    trace = np.zeros_like(raw)
    ty0, tx0 = max(y0, oy), max(x0, ox)
    part = mask[ty0 - oy : y1 - oy, tx0 - ox : x1 - ox]
    trace[ty0 - y0 : ty0 - y0 + part.shape[0], tx0 - x0 : tx0 - x0 + part.shape[1]] = part
    glyphs = raw & (1 - cv2.dilate(trace, np.ones((3, 3), np.uint8)))
    columns = np.flatnonzero(glyphs.any(axis=0))
    if int(glyphs.sum()) < 4:
        return None
    return glyphs[:, columns[0] : columns[-1] + 1]


def _glyph_match(a: np.ndarray, b: np.ndarray) -> float:
    """Best normalised cross-correlation of two glyph masks of equal height (-1..1), left-aligned and
    shifted by up to 2 px sideways and 1 px vertically, both slightly blurred (anti-aliasing and
    the threshold move strokes by a pixel), times the square root of their width ratio: a plain
    'I' lies inside 'II' and correlates with it well, but is a third as wide."""
    width = max(a.shape[1], b.shape[1]) + 6
    width_ratio = min(a.shape[1], b.shape[1]) / max(a.shape[1], b.shape[1])

    def placed(mask: np.ndarray, dx: int) -> np.ndarray:
        canvas = np.zeros((mask.shape[0], width), np.float32)
        canvas[:, 3 + dx : 3 + dx + mask.shape[1]] = mask
        return cv2.GaussianBlur(canvas, (0, 0), 0.8)

    first = placed(a, 0)
    first -= first.mean()
    first_energy = float((first * first).sum())
    # The 15 placements of b (2 px either side, 1 px up or down) as one (15, h, width) float32
    # stack; each placement's sums are over its own contiguous block, as for a single array.
    shifted = np.stack([placed(b, dx) for dx in (-2, -1, 0, 1, 2)])
    second = np.stack([np.roll(s, dy, axis=0) for s in shifted for dy in (-1, 0, 1)])
    second -= second.mean(axis=(1, 2), keepdims=True)
    energy = (second * second).sum(axis=(1, 2)).astype(np.float64)
    cross = (first * second).sum(axis=(1, 2)).astype(np.float64)
    norm = np.sqrt(first_energy * energy)
    valid = norm > 0
    best = float((cross[valid] / norm[valid]).max()) if valid.any() else -1.0
    return best * math.sqrt(width_ratio)


# --------------------------------------------------------------------------------------------------
# Time axis
# --------------------------------------------------------------------------------------------------


def _time_calibration(a, fine: _Fine, traces: dict[tuple[int, int], _Trace]) -> tuple[float, float, list[str]]:
    """(x of t = 0, px per s, warnings), working px, from sub-pixel landmarks of the printed time axis.

    Every row starts at t = 0 and ends at t = 10 s; separators sit at the panel boundaries. Where a
    trace starts and stops is blurred by the line's round caps and anti-aliasing, but equally at both
    ends, so the midpoint of the median row start and end marks t = 5 s without bias, while their
    distance gives the scale to within a fraction of a pixel over 10 s. Landmarks: that midpoint and
    every matched separator's centre (t = k * panel seconds); x = x0 + pps * t is fitted by least
    squares when the landmarks span time (3x4: separators at 2.5, 5, 7.5 s), else (6x2: everything
    at 5 s) pps comes from the trace extent. A trace extent that disagrees with the layout's time
    scale by more than 2 % (a row that stops early) is not used.
    """
    design = a.design
    columns = len(design.lead_rows[0])
    starts = [t.start for (r, c), t in traces.items() if c == 0 and t.start is not None]
    ends = [t.end for (r, c), t in traces.items()
            if (c == columns - 1 or r == len(design.lead_rows)) and t.end is not None]
    warnings: list[str] = []
    points = [(k * design.seconds, x) for k, x in enumerate(_separator_centres(a, fine), 1) if x is not None]
    extent_pps = None
    if starts and ends:
        x_start, x_end = float(np.median(starts)), float(np.median(ends))
        extent_pps = (x_end - x_start) / RECORD_SECONDS
        if abs(extent_pps / a.pps - 1.0) <= 0.02:
            points.append((RECORD_SECONDS / 2.0, (x_start + x_end) / 2.0))
        else:
            warnings.append("the traces do not span 10 s at the printed time scale; time axis from the separators")
            extent_pps = None
    if not points:
        return a.x0, a.pps, warnings + ["no time landmarks found; time axis from the layout"]
    t = np.array([p[0] for p in points])
    x = np.array([p[1] for p in points])
    if np.ptp(t) > 0:
        pps, x0 = np.polyfit(t, x, 1)
        return float(x0), float(pps), warnings
    pps = extent_pps if extent_pps is not None else a.pps
    return float(np.mean(x - pps * t)), float(pps), warnings


def _separator_centres(a, fine: _Fine) -> list[float | None]:
    """Sub-pixel centre (working px) of the separator at each inner panel boundary, or None.

    The darkness of the page columns around a separator (at the page's own resolution), median over
    its rows (so trace crossings do not count), weighted centroid.
    """
    f = fine.factor
    out: list[float | None] = []
    for k in range(1, len(a.bounds) - 1):
        near = [s for s in a.separators if abs(s[0] - a.bounds[k]) <= 1.5 * a.ppm]
        if not near:
            out.append(None)
            continue
        x, half, top, bottom = min(near, key=lambda s: abs(s[0] - a.bounds[k]))
        c0 = max(0, int((x - half - 2) * f))
        c1 = min(fine.flat.shape[1], int(math.ceil((x + half + 2) * f)))
        dark = 255.0 - fine.flat[int(top * f) : int(bottom * f), c0:c1].astype(np.float32)
        profile = np.median(dark, axis=0)
        profile = np.clip(profile - np.median(profile[[0, -1]]), 0, None)
        total = float(profile.sum())
        out.append((c0 + 0.5 + float((np.arange(c1 - c0) * profile).sum()) / total) / f if total > 0 else x)
    return out


# --------------------------------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------------------------------


@dataclass
class _Trace:
    """Sub-pixel trace samples of one panel, working px: x (continuous, increasing), y, row baseline.

    start, end: x where the centre line starts and ends (ink extent less half the line width; None
    without ink). continuity: 1 - 5 x the share of the path's steps that jumped over a gap (0..1).
    """

    x: np.ndarray
    y: np.ndarray
    baseline: float
    start: float | None
    end: float | None
    continuity: float


@dataclass(frozen=True)
class _Fine:
    """The page at its own resolution: flat (H, W) uint8 background-flattened (paper ~255), and
    factor = page px per working px (1 when the page is already at the working scale)."""

    flat: np.ndarray
    factor: int


def _read_panel(a, ink, fine: _Fine, row: int, x_left: float, x_right: float) -> _Trace:
    """The trace of trace-row ``row`` between working x ``x_left`` and ``x_right`` (working px out).

    The trace ink is separated at the working scale (``_panel_window``), then read at the page's own
    resolution: page ink inside the cleaned working mask (grown by one working pixel), so a
    2213 px wide photo is read at 8 px/mm and 200 px/s rather than 4 and 100.
    """
    mask, _, (oy, ox) = _panel_window(a, ink, row, x_left, x_right)
    f = fine.factor
    if f > 1:
        grown = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        grown = np.repeat(np.repeat(grown, f, axis=0), f, axis=1)
        flat = fine.flat[oy * f : oy * f + grown.shape[0], ox * f : ox * f + grown.shape[1]]
        grown = grown[: flat.shape[0], : flat.shape[1]]
        mask = ((flat < INK_LEVEL) & (grown > 0)).view(np.uint8)
    else:
        flat = fine.flat[oy : oy + mask.shape[0], ox : ox + mask.shape[1]]
    base = a.rows[row].baseline * f
    # A steep thin stroke drawn along a column boundary is only partly dark in each column and
    # breaks up at the ink threshold: nearby runs of a column are one.
    runs = _layout.ink_runs(mask, merge_gap=_MERGE_GAP_PX * f)
    path, jumps = _cheapest_path(runs, base - oy * f, _MAX_JUMP_MM * a.ppm * f)
    limits = _shared_limits(a, row, oy, f, mask.shape[0])
    crossing = _crossing_columns(path, limits)
    path, merged = _clip_shared(path, limits, mask.shape[0])
    xs, ys, start, end = _column_values(path, flat)
    inked = max(1, len(path[0]))
    # Continuity: jumps over gaps, columns where this row's ink merges with a neighbour's, and
    # columns where its waves run past half-way to a neighbouring row (where the two rows' waves
    # may cross and be taken for each other).
    continuity = 1.0 - min(1.0, (jumps * f + merged + crossing) / inked * 5.0)
    return _Trace((xs / f) + ox, (ys / f) + oy, a.rows[row].baseline,
                  None if start is None else start / f + ox, None if end is None else end / f + ox,
                  continuity)


def _shared_limits(a, row: int, oy: int, f: int, height: int):
    """For the rows above and below (None without one): (half-way line, edge of the neighbour's own
    trace band: 2 mm from its baseline, or the window edge when that is nearer), page px relative to
    the window top (oy working px; the window is ``height`` page px high)."""
    baselines = [r.baseline for r in a.rows]
    b = baselines[row]
    out = []
    for k, sign in ((row - 1, 1.0), (row + 1, -1.0)):
        if 0 <= k < len(baselines):
            half = (b + baselines[k]) / 2.0
            near = (baselines[k] + sign * 2.0 * a.ppm - oy) * f
            near = max(near, 1.0) if sign > 0 else min(near, height - 1.0)
            out.append(((half - oy) * f, near))
        else:
            out.append(None)
    return out[0], out[1]


def _crossing_columns(path: tuple[np.ndarray, np.ndarray, np.ndarray], limits) -> int:
    """Number of columns whose run reaches past the half-way line to a neighbouring row."""
    up, down = limits
    _, tops, bottoms = path
    crossing = np.zeros(len(tops), bool)
    if up is not None:
        crossing |= tops < up[0]
    if down is not None:
        crossing |= bottoms > down[0]
    return int(crossing.sum())


def _clip_shared(path: tuple[np.ndarray, np.ndarray, np.ndarray], limits,
                 height: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int]:
    """Cut runs that run on into a neighbouring row's trace back to the half-way line between the rows.

    A run that reaches the band of the neighbour's own trace (2 mm around its baseline) is this
    row's wave merged with the neighbour's ink (a tall R of one row printed over the next row): the
    part beyond half-way cannot be told apart, so it is not read, on any resolution alike. Returns
    (path, number of columns cut).
    """
    up, down = limits
    columns, tops, bottoms = path
    # Only runs past a half-way line can need cutting; the rest pass unchanged.
    top = -math.inf if up is None else up[0]
    bottom = math.inf if down is None else down[0]
    beyond = np.flatnonzero((tops < top) | (bottoms > bottom))
    if not len(beyond):
        return path, 0
    tops, bottoms = tops.copy(), bottoms.copy()
    cut = 0
    for i in beyond.tolist():
        run = (int(tops[i]), int(bottoms[i]))
        r0, r1 = run
        if up is not None and r0 <= up[1] and r1 > up[0]:
            r0 = int(math.floor(up[0]))
        if down is not None and r1 >= down[1] and r0 < down[0]:
            r1 = int(math.ceil(down[0]))
        r0, r1 = max(0, min(r0, height - 1)), min(height, max(r1, r0 + 1))
        if (r0, r1) != run:
            cut += 1
        tops[i], bottoms[i] = r0, max(r1, r0 + 1)
    return (columns, tops, bottoms), cut


def _panel_window(a, ink, row: int, x_left: float, x_right: float):
    """(mask, flat, (y0, x0)): the cleaned 0/1 trace ink of one panel and the flattened page under it.

    As ``layout._panel_mask`` but taller (+/- _WINDOW_HALF_MM, at most half-way to the neighbouring
    rows) and without blanking the panel ends: separator columns are erased and bridged instead.
    """
    height, width = a.work.ink.shape
    base = a.rows[row].baseline
    baselines = [r.baseline for r in a.rows]
    # Tall waves reach into the neighbouring rows (6x2 rows are 21.7 mm apart): the window is not
    # cut half-way to them; which ink is this row's is decided by continuity (_cheapest_path).
    top, bottom = a.text_limits
    sy0 = max(0, top, int(base - _WINDOW_HALF_MM * a.ppm))
    sy1 = min(height, bottom, int(math.ceil(base + _WINDOW_HALF_MM * a.ppm)))
    sx0 = max(0, int(math.floor(x_left)))
    sx1 = min(width, max(sx0 + 1, int(math.ceil(x_right))))
    labels = np.zeros((sy1 - sy0, sx1 - sx0), np.int32)
    oy, ox = ink.origin
    lh, lw = ink.labels.shape
    cy0, cy1 = max(oy, sy0), min(oy + lh, sy1)
    cx0, cx1 = max(ox, sx0), min(ox + lw, sx1)
    if cy1 > cy0 and cx1 > cx0:
        labels[cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0] = ink.labels[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
    home = (ink.home == row).view(np.uint8)
    home[0] = 0
    tight0 = int(base - 2 * a.ppm) - sy0
    tight1 = int(math.ceil(base + 2 * a.ppm)) - sy0
    crossing = np.zeros(len(ink.home), np.uint8)
    crossing[labels[max(0, tight0) : max(0, tight1)].ravel()] = 1
    crossing[0] = 0
    core0, core1 = _layout.row_limits(baselines, row, _layout.CORE_HALF_MM * a.ppm, height)
    window = _layout.row_ink(home[labels], (home | crossing)[labels], (core0 - sy0, core1 - sy0),
                              (tight0, tight1))
    carry = set()
    for c0, c1, r0, r1 in ink.erased:
        if r0 < sy1 and r1 > sy0:
            carry.update(c - sx0 for c in range(c0, c1) if sx0 <= c < sx1)
    _layout.clean_label_area(window, base - sy0, a.ppm, carry)
    _layout.bridge(window, carry)
    flat = a.work.flat[sy0:sy1, sx0:sx1]
    return window, flat, (sy0, sx0)


def _cheapest_path(runs: tuple[np.ndarray, np.ndarray, np.ndarray], base: float, max_jump: float):
    """One run per inked column: the cheapest left-to-right path.

    runs: (column, top, end) arrays of every ink run (``layout.ink_runs``: ordered by column, then
    top to bottom). Step cost between runs of consecutive inked columns: their vertical gap (0 when
    they touch), +1000 beyond ``max_jump``, + 1 % of the centre shift (``layout.step_cost``). The
    path may start anywhere; starting far from the baseline costs 2 % of the distance (prefers the
    row's own trace over stray ink). Returns ((column, top, end) arrays of the chosen runs, one per
    inked column, in column order; number of steps that jumped a gap > 1 px).
    """
    run_columns, run_tops, run_ends = runs
    if not len(run_columns):
        return tuple(np.zeros(0, np.int64) for _ in range(3)), 0
    cols, first, count = np.unique(run_columns, return_index=True, return_counts=True)

    def column(k: int) -> list[tuple[int, int]]:
        lo, hi = int(first[k]), int(first[k] + count[k])
        return list(zip(run_tops[lo:hi].tolist(), run_ends[lo:hi].tolist(), strict=True))

    # A column with one run after a column with one run: every path passes both, so the costs
    # restart from 0 there (only differences between states matter) and nothing needs choosing.
    # Most columns of a clean trace are like this; only the others are visited below.
    choosing = (np.flatnonzero((count[1:] > 1) | (count[:-1] > 1)) + 1).tolist()
    costs = [0.02 * abs((r0 + r1) / 2.0 - base) for r0, r1 in column(0)]
    back: dict[int, list[int]] = {}
    last = 0
    current = column(0)
    for k in choosing:
        if k - 1 != last:
            costs = [0.0]  # column k - 1 restarted the costs
            prev = column(k - 1)
        else:
            prev = current
        current = column(k)
        new_costs, choice = [], []
        for run in current:
            best, cost = _layout.cheapest_step(prev, costs, run, max_jump)
            new_costs.append(cost)
            choice.append(best)
        back[k] = choice
        costs, last = new_costs, k
    if last != len(cols) - 1:
        costs = [0.0]
    chosen = np.zeros(len(cols), np.int64)
    chosen[-1] = int(np.argmin(costs))
    for k in sorted(back, reverse=True):
        chosen[k - 1] = back[k][int(chosen[k])]
    index = first + chosen
    tops, ends = run_tops[index], run_ends[index]
    gaps = np.maximum(0, np.maximum(tops[:-1] - ends[1:], tops[1:] - ends[:-1]))
    return (cols, tops, ends), int((gaps > 1).sum())


@dataclass
class _Columns:
    """The inked columns of a panel, as arrays: x (int), centre-line extremes lo (top) .. hi
    (bottom) and the darkness-weighted centre (px)."""

    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    centre: np.ndarray

    @property
    def tall(self) -> np.ndarray:
        return self.hi - self.lo >= 1.0


def _consecutive_runs(flags: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, 2) int array of the index ranges [k, j] (inclusive) of consecutive flagged entries whose
    x values step by 1."""
    index = np.flatnonzero(flags)
    if not len(index):
        return np.zeros((0, 2), np.int64)
    breaks = (np.diff(index) != 1) | (np.diff(x[index]) != 1)
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    ends = np.concatenate([np.flatnonzero(breaks), [len(index) - 1]])
    return np.stack([index[starts], index[ends]], axis=1)


def _column_values(path: tuple[np.ndarray, np.ndarray, np.ndarray], flat: np.ndarray):
    """Sub-pixel trace samples (x, y) in window px from one ink run per column (``path``: column,
    top, end arrays), plus the x where the centre line starts and ends (None without ink).

    Darkness per pixel = (255 - flat) / (255 - ink level), clipped to 0..1, so anti-aliased edge
    pixels count partly; a run's ends are refined by the darkness of its end pixels and of the pixels
    just outside. The line width (a low percentile of the columns' total darkness) is removed from
    every run: its centre line spans [top + width/2, bottom - width/2]. Samples: one per column
    (``_column_samples``: the darkness-weighted centre, or the extreme at a peak or trough), steep
    strokes re-read per row (``_steep_strokes``).
    """
    c_idx, r0, r1 = path
    if not len(c_idx):
        return np.zeros(0), np.zeros(0), None, None
    inked = flat[flat < INK_LEVEL]
    ink_level = float(np.percentile(inked, 5)) if inked.size else 0.0
    dark = _Darkness(flat, max(1.0, 255.0 - ink_level))
    tops = r0 + (1.0 - dark.at(r0, c_idx)) - dark.at(r0 - 1, c_idx)
    bottoms = r1 - (1.0 - dark.at(r1 - 1, c_idx)) + dark.at(r1, c_idx)
    # Each run's total darkness and centre over its rows +/- 1, from those pixels only (one gather
    # and one segmented sum), not from running sums over the whole window.
    lengths = r1 - r0 + 2
    firsts = np.cumsum(lengths) - lengths
    rows = np.repeat(r0 - 1, lengths) + (np.arange(int(lengths.sum())) - np.repeat(firsts, lengths))
    values = dark.at(rows, np.repeat(c_idx, lengths))
    mass = np.add.reduceat(values, firsts)
    moment = np.add.reduceat(values * rows.astype(np.float32), firsts)
    centres = np.where(mass > 0, moment / np.maximum(mass, 1e-9) + 0.5, (r0 + r1) / 2.0)
    # Line width: the darkness of a column crossed by a flat part of the line (1 = one dark pixel);
    # steep parts and noise make columns darker, never lighter, so a low percentile.
    width = float(np.percentile(mass, 20)) if len(mass) >= 5 else float(np.median(mass))
    width = max(width, 0.5)
    columns = _Columns(c_idx, tops + width / 2.0, bottoms - width / 2.0, centres)
    xs = c_idx + 0.5
    ys, extreme = _column_samples(columns)
    run_top = np.zeros(flat.shape[1], np.int64)
    run_end = np.zeros(flat.shape[1], np.int64)
    run_top[c_idx], run_end[c_idx] = r0, r1
    xs, ys = _steep_strokes(columns, extreme, xs, ys, (run_top, run_end), dark, width)
    # Ends of the line: the first/last inked column and the faint column beyond it (anti-aliased,
    # not dark enough to count as ink) count by their share of a full column (the line width), which
    # gives the end of an equivalent square-ended line; a round cap of radius width/2 holds
    # pi/8 * width^2 of ink, so the centre line ends pi/8 * width further in.
    cap = math.pi / 8.0 * width
    head, tail = int(c_idx[0]), int(c_idx[-1])
    start = head + 1.0 - min(1.0, mass[0] / width) - min(1.0, _beyond(dark, (int(r0[0]), int(r1[0])), head - 1) / width)
    end = tail + min(1.0, mass[-1] / width) + min(1.0, _beyond(dark, (int(r0[-1]), int(r1[-1])), tail + 1) / width)
    return xs, ys, start + cap, end - cap


class _Darkness:
    """Darkness of a window's pixels, (255 - flat) / scale clipped to 0..1 (float32), computed only
    where it is asked for; 0 outside the window."""

    def __init__(self, flat: np.ndarray, scale: float) -> None:
        self.flat = flat
        self.scale = scale
        self.shape = flat.shape
        # The darkness of every gray level, by the same float32 arithmetic: a lookup per pixel.
        self.table = np.clip((255.0 - np.arange(256, dtype=np.float32)) / scale, 0.0, 1.0)

    def _of(self, gray: np.ndarray) -> np.ndarray:
        return self.table[gray]

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(n,) float32 darkness at pixels (rows[i], cols[i])."""
        inside = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        out = np.zeros(len(rows), np.float32)
        out[inside] = self._of(self.flat[rows[inside], cols[inside]])
        return out

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """(r1 - r0, c1 - c0) float32 darkness of rows r0..r1-1 and columns c0..c1-1 (0 outside)."""
        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), np.float32)
        y0, y1 = max(0, r0), min(self.shape[0], r1)
        x0, x1 = max(0, c0), min(self.shape[1], c1)
        if y1 > y0 and x1 > x0:
            out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = self._of(self.flat[y0:y1, x0:x1])
        return out

    def column(self, c: int, a: int, b: int) -> np.ndarray:
        """Darkness of column c, rows a..b-1 (clipped to the window)."""
        return self._of(self.flat[max(0, a) : max(0, b), c])


def _beyond(dark: _Darkness, run: tuple[int, int], c: int) -> float:
    """Darkness of column c over the rows of ``run`` +/- 1 (0 outside the window)."""
    if not 0 <= c < dark.shape[1]:
        return 0.0
    return float(dark.column(c, run[0] - 1, run[1] + 1).sum())


def _column_samples(columns: _Columns) -> tuple[np.ndarray, np.ndarray]:
    """y of the trace at the centre of every inked column (window px).

    Mostly the darkness-weighted centre of the column's run: where a flat part, or a steep stroke,
    crosses the middle of the column. But the trace must reach the top of a run that sticks out
    above its neighbours (a peak) and the bottom of one that sticks out below (a trough): those
    columns give their top / bottom, so R and S waves keep their height. A peak is a group of
    consecutive tall columns whose tops agree within 0.5 px (a flat-topped or two-column peak) and
    lie above the tops of the columns on both sides; a stroke straddling two columns (equal tops,
    but a higher column on one side) is no peak. A column that is both (a whole spike in one
    column) gives the extreme farther from its neighbours' centres.
    """
    lo, hi, centre, x = columns.lo, columns.hi, columns.centre, columns.x
    n = len(x)
    tall = columns.tall
    peak = _single_extreme(_extreme_groups(lo, x, tall), lo, x)
    trough = _single_extreme(_extreme_groups(-hi, x, tall), -hi, x)
    ys = centre.copy()
    ys[peak & ~trough] = lo[peak & ~trough]
    ys[trough & ~peak] = hi[trough & ~peak]
    for k in np.flatnonzero(peak & trough).tolist():
        near = [centre[j] for j in (k - 1, k + 1) if 0 <= j < n and abs(x[j] - x[k]) == 1]
        around = float(sum(near) / len(near)) if near else centre[k]  # np.mean's value, without its overhead
        ys[k] = lo[k] if around - lo[k] >= hi[k] - around else hi[k]
    return ys, peak | trough


def _single_extreme(flags: np.ndarray, level: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Keep one column per run of consecutive flagged columns: the one with the smallest level
    (the middle one of ties). A sharp peak drawn with a line of width w has a flat top w wide;
    giving every column of it the peak height would widen the peak, its flanks are read as strokes."""
    out = np.zeros_like(flags)
    runs = _consecutive_runs(flags, x)
    single = runs[:, 0] == runs[:, 1]
    out[runs[single, 0]] = True  # most runs are one column
    runs = runs[~single]
    if not len(runs):
        return out
    lengths = runs[:, 1] - runs[:, 0] + 1
    run_of = np.repeat(np.arange(len(runs)), lengths)
    index = np.repeat(runs[:, 0], lengths) + _ranks(lengths)
    lowest = np.minimum.reduceat(level[index], np.cumsum(lengths) - lengths)
    near_lowest = level[index] <= lowest[run_of] + 0.25
    # The middle one of each run's columns near its lowest level.
    chosen, chosen_run = index[near_lowest], run_of[near_lowest]
    first = np.searchsorted(chosen_run, np.arange(len(runs)))
    count = np.bincount(chosen_run, minlength=len(runs))
    out[chosen[first + count // 2]] = True
    return out


def _steep_strokes(columns: _Columns, extreme: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                   runs: tuple[np.ndarray, np.ndarray], dark: _Darkness, width: float):
    """Read steep strokes row by row instead of column by column; returns (x, y) sorted by x.

    A line of width w drawn steeply darkens every column within w/2 of it over the stroke's whole
    height, so a column's centre puts the stroke up to w/2 too early on its way up and too late on
    its way down: QRS complexes come out wider by about w (~10 ms at 200 dpi). Along a stroke
    (consecutive tall columns that are no peak or trough) each row is crossed once, by a short run
    of ink whose darkness-weighted centre is the stroke's x there. Rows whose ink in the stroke's
    columns (plus one on each side) is not one run of at most 2 w + 2 px (a flat part, or two
    strokes) give no sample; a stroke with fewer than two row samples keeps its column samples.
    runs: (top, end) of every window column's ink run on the trace's path (0, 0 without one).
    """
    run_top, run_end = runs
    steep = columns.tall & ~extreme
    strokes = _consecutive_runs(steep, columns.x)
    if not len(strokes):
        return xs, ys
    limit = 2.0 * width + 2.0
    # Every stroke at once, as arrays: its columns (plus one on each side) and rows, then every
    # stroke row with its own column span.
    k, j = strokes[:, 0], strokes[:, 1]
    c0 = np.maximum(0, columns.x[k].astype(np.int64) - 1)
    c1 = np.minimum(len(run_top), columns.x[j].astype(np.int64) + 2)
    r0 = np.ceil(_segment_extreme(np.minimum, columns.lo, steep, k)).astype(np.int64)
    r1 = np.floor(_segment_extreme(np.maximum, columns.hi, steep, k)).astype(np.int64) + 1
    tall = (r1 - r0) >= limit  # else hardly steeper than the line is wide: the column samples do
    if not tall.any():
        return xs, ys
    k, j, c0, c1, r0, r1 = k[tall], j[tall], c0[tall], c1[tall], r0[tall], r1[tall]
    heights, widths = r1 - r0, c1 - c0
    stroke_of_row = np.repeat(np.arange(len(k)), heights)
    row = np.repeat(r0, heights) + _ranks(heights)
    ok = np.zeros(len(row), bool)
    total = np.ones(len(row), np.float32)
    moment = np.zeros(len(row))
    # Rows of strokes form 2-D blocks (rows x the stroke's columns plus one on each side), read as a
    # single stroke's block would be, sums in the same order: strokes up to _SHARED_BLOCK_WIDTH
    # columns wide share one block padded with empty columns (trailing zeros leave those short
    # sums as they were); each wider width has its own.
    padded = np.where(widths <= _SHARED_BLOCK_WIDTH, min(_SHARED_BLOCK_WIDTH, int(widths.max())), widths)
    for w in np.unique(padded).tolist():
        rows = np.flatnonzero(padded[stroke_of_row] == w)
        r = row[rows][:, None]
        own = np.arange(w) < widths[stroke_of_row[rows]][:, None]
        cols = c0[stroke_of_row[rows]][:, None] + np.arange(w)
        looked_up = np.minimum(cols, len(run_top) - 1)
        # Each column's darkness over the rows of its own ink run only (neighbouring ink is not the stroke).
        in_run = own & (r >= run_top[looked_up]) & (r < run_end[looked_up])
        block = np.zeros(cols.shape, np.float32)
        block[in_run] = dark.at(np.broadcast_to(r, cols.shape)[in_run], cols[in_run])
        inked = block > 0.2
        count = inked.sum(axis=1)
        first = np.argmax(inked, axis=1)
        last = w - 1 - np.argmax(inked[:, ::-1], axis=1)
        weights = np.where(inked, block, np.float32(0.0))
        # One run per row (no gaps), short enough to be a stroke crossing, not a flat part.
        ok[rows] = (count > 0) & (count == last - first + 1) & (count <= limit)
        total[rows] = weights.sum(axis=1)
        moment[rows] = (weights * np.arange(w)).sum(axis=1)
    ok &= total > 0
    # A stroke with fewer than two row samples keeps its column samples.
    read = np.bincount(stroke_of_row[ok], minlength=len(k)) >= 2
    ok &= read[stroke_of_row]
    keep = np.ones(len(columns.x), bool)
    for a, b in zip(k[read].tolist(), j[read].tolist(), strict=True):
        keep[a : b + 1] = False
    row_x = c0[stroke_of_row[ok]] + 0.5 + moment[ok] / total[ok]
    row_y = row[ok] + 0.5
    all_x = np.concatenate([xs[keep], row_x])
    all_y = np.concatenate([ys[keep], row_y])
    order = np.argsort(all_x, kind="stable")
    return all_x[order], all_y[order]


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """0, 1, .., n - 1 for every n in ``lengths``, concatenated: the position inside each segment."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def _segment_extreme(ufunc, values: np.ndarray, flags: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """ufunc (np.minimum / np.maximum) over each run of flagged entries beginning at ``starts``:
    unflagged entries are neutral, so each segment runs on to the next start."""
    neutral = np.inf if ufunc is np.minimum else -np.inf
    return ufunc.reduceat(np.where(flags, values, neutral), starts)


def _extreme_groups(level: np.ndarray, x: np.ndarray, tall: np.ndarray, margin: float = 0.5,
                    reach: int = 2) -> np.ndarray:
    """(n,) bool: tall columns at a local minimum of ``level`` (the top of a peak when level = run
    top; pass -bottom for troughs).

    A column qualifies when its level is within ``margin`` px of the smallest level of the inked
    columns within ``reach`` columns, and the level rises by more than ``margin`` within 3 x reach
    columns on both sides (one side may be missing at a panel end). A stroke straddling two columns
    has equal tops there but a higher column next to them, so it is no peak; a rounded peak several
    columns wide is one.
    """
    n = len(level)
    level = level.astype(float)
    # x is increasing, so the columns within d columns of x[k] are among the d nearest indices:
    # all of them at once, one column per offset (left offsets first).
    offsets = np.concatenate([np.arange(-3 * reach, 0), np.arange(1, 3 * reach + 1)])
    index = np.arange(n)[:, None] + offsets
    valid = (index >= 0) & (index < n)
    other = np.where(valid, index, 0)
    distance = np.abs(x[other] - x[:, None])
    near = valid & (distance <= reach)
    far = valid & (distance <= 3 * reach)
    near_min = np.minimum(level, np.where(near, level[other], np.inf).min(axis=1))
    higher = far & (level[other] > (level + margin)[:, None])
    left = offsets < 0
    has_left, has_right = far[:, left].any(axis=1), far[:, ~left].any(axis=1)
    rises_left, rises_right = higher[:, left].any(axis=1), higher[:, ~left].any(axis=1)
    at_minimum = level <= near_min + margin
    sides_ok = (~has_left | rises_left) & (~has_right | rises_right) & (has_left | has_right)
    return tall & at_minimum & sides_ok


def _resample(trace: _Trace, x0: float, pps: float, px_per_mv: float, t0: float, t1: float,
              fs: float) -> tuple[np.ndarray, float]:
    """Values (mV) of a panel's trace on the sample times of [t0, t1) at fs, and the share covered.

    t = (x - x0) / pps, mV = (baseline - y) / px_per_mv. Gaps up to _MAX_GAP_S are interpolated;
    up to _MAX_GAP_S before the first / after the last trace sample the end value is held (panel
    ends hidden under separators); the rest is NaN.
    """
    i0, i1 = int(round(t0 * fs)), int(round(t1 * fs))
    t = np.arange(i0, i1) / fs
    out = np.full(len(t), np.nan)
    if len(trace.x) < 2:
        return out, 0.0
    tx = (trace.x - x0) / pps
    mv = (trace.baseline - trace.y) / px_per_mv
    values = np.interp(t, tx, mv)
    after = np.clip(np.searchsorted(tx, t), 1, len(tx) - 1)
    gap = tx[after] - tx[after - 1]
    inside = (t >= tx[0]) & (t <= tx[-1])
    keep = (inside & (gap <= _MAX_GAP_S)) | ((t < tx[0]) & (tx[0] - t <= _MAX_GAP_S)) | (
        (t > tx[-1]) & (t - tx[-1] <= _MAX_GAP_S))
    out[keep] = values[keep]
    return out, float(keep.mean())
