"""ECG interval and amplitude measurements from (digitised) 12-lead signals, via neurokit2.

``measure(signals, fs) -> Measurements``: heart rate, RR variability (SDNN, RMSSD), PR, QRS, QT,
QTc (Bazett and Fridericia), frontal QRS axis and the ST level of every lead. R peaks come from
``neurokit2.ecg_peaks`` and the wave boundaries from ``neurokit2.ecg_delineate`` (discrete wavelet
method) on one "rhythm" signal: the 10 s lead-II rhythm strip when there is one, else the lead with
the longest stretch of signal (lead II preferred). The printed panels share the strip's time axis,
so its beats also locate the QRS complexes of the short 2.5 s panels (axis, ST).

Every quantity is a float or None; a None always has a reason in ``Measurements.reasons`` (too
few beats, delineation failed, a value outside the physiological range, ...). Nothing here raises
on bad signals except a malformed argument (wrong shape, fs).

Definitions (medians over beats): PR = P onset to QRS onset; QRS = QRS onset to QRS offset;
QT = QRS onset to T offset; QTc_Bazett = QT / sqrt(RR / 1 s); QTc_Fridericia = QT / (RR / 1 s)^(1/3)
with RR the mean RR interval; axis = atan2(net QRS of aVF, net QRS of I) in degrees (-180..180],
net = (max - baseline) + (min - baseline) over the QRS; ST = signal at J + 60 ms minus the PR-segment
baseline, J = QRS offset. Units: ms, bpm, degrees, mV.

Needs neurokit2 (``pip install 'ecgdx[signal]'``), imported on first use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecgdx.labels import LEADS

__all__ = ["FIELDS", "Measurements", "measure"]

# (attribute, label, unit) of the scalar measurements, in display order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("heart_rate_bpm", "Heart rate", "bpm"),
    ("rr_sdnn_ms", "RR SDNN", "ms"),
    ("rr_rmssd_ms", "RR RMSSD", "ms"),
    ("pr_ms", "PR interval", "ms"),
    ("qrs_ms", "QRS duration", "ms"),
    ("qt_ms", "QT interval", "ms"),
    ("qtc_bazett_ms", "QTc (Bazett)", "ms"),
    ("qtc_fridericia_ms", "QTc (Fridericia)", "ms"),
    ("axis_deg", "Frontal QRS axis", "deg"),
)
# Plausible ranges: values outside are reported as None (a delineation error, not a finding).
_RANGES = {
    "heart_rate_bpm": (20.0, 300.0),
    "pr_ms": (60.0, 400.0),
    "qrs_ms": (40.0, 250.0),
    "qt_ms": (200.0, 700.0),
}
# The rhythm signal needs this much contiguous signal (s) for rate and delineation.
_MIN_RHYTHM_S = 4.0
# A short panel (2.5 s) needs this much signal (s) around a beat to measure its axis / ST.
_ST_OFFSET_S = 0.06


@dataclass
class Measurements:
    """Measured values (None = not measurable; see ``reasons``). Units in the field names.

    st_mv: lead -> ST level (mV) or None. beats: R peaks found in the rhythm signal.
    rhythm_source: which signal gave rate, RR and intervals ('rhythm' = the strip, or a lead name).
    reasons: field name (or 'st:<lead>') -> why it is None.
    """

    heart_rate_bpm: float | None = None
    rr_sdnn_ms: float | None = None
    rr_rmssd_ms: float | None = None
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_bazett_ms: float | None = None
    qtc_fridericia_ms: float | None = None
    axis_deg: float | None = None
    st_mv: dict[str, float | None] = field(default_factory=dict)
    beats: int = 0
    rhythm_source: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats rounded: 0.1 ms/bpm/deg, 1 uV)."""
        out = asdict(self)
        for name, _, _ in FIELDS:
            if out[name] is not None:
                out[name] = round(float(out[name]), 1)
        out["st_mv"] = {k: None if v is None else round(float(v), 3) for k, v in self.st_mv.items()}
        return out

    def rows(self) -> list[dict[str, Any]]:
        """[{key, label, value, unit, reason}] of the scalar measurements, for tables."""
        return [
            {"key": name, "label": label, "value": getattr(self, name), "unit": unit,
             "reason": self.reasons.get(name, "")}
            for name, label, unit in FIELDS
        ]


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def measure(signals: Any, fs: float, *, rhythm: np.ndarray | None = None) -> Measurements:
    """Measure a 12-lead ECG.

    Args:
        signals: lead name -> (N,) mV (NaN = not recorded; the key 'rhythm' = a lead-II rhythm
            strip), or a (12, N) array in ``LEADS`` order, or a ``DigitizedECG``.
        fs: sampling rate (Hz), >= 100.
        rhythm: (N,) mV lead-II rhythm strip (overrides a 'rhythm' key).

    Returns:
        ``Measurements``; never raises for unmeasurable signals.

    Raises:
        ValueError: fs out of range, or signals of the wrong shape.
    """
    if not 100 <= fs <= 10000:
        raise ValueError(f"fs must be 100..10000 Hz, got {fs}")
    leads = _as_leads(signals)
    if rhythm is not None:
        leads["rhythm"] = np.asarray(rhythm, float)
    result = Measurements(st_mv={lead: None for lead in LEADS})
    source, segment, offset = _rhythm_signal(leads, fs)
    if source is None:
        result.reasons.update({name: f"no signal of at least {_MIN_RHYTHM_S:g} s to find beats in"
                               for name, _, _ in FIELDS})
        result.reasons.update({f"st:{lead}": "no beats found" for lead in LEADS})
        return result
    result.rhythm_source = source
    import neurokit2 as nk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cleaned = nk.ecg_clean(segment, sampling_rate=int(round(fs)))
            _, info = nk.ecg_peaks(cleaned, sampling_rate=int(round(fs)))
        peaks = np.asarray(info["ECG_R_Peaks"], int)
    except Exception as exc:  # neurokit2 raises assorted errors on flat or odd signals
        result.reasons.update({name: f"R-peak detection failed ({type(exc).__name__})" for name, _, _ in FIELDS})
        return result
    result.beats = int(len(peaks))
    _rate(result, peaks, fs)
    waves = _delineate(nk, cleaned, peaks, fs, result)
    _intervals(result, waves, peaks, fs)
    beats = _beats(waves, peaks, offset, fs)
    _axis(result, leads, beats, fs)
    _st(result, leads, beats, fs)
    return result


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def _as_leads(signals: Any) -> dict[str, np.ndarray]:
    """lead name (and 'rhythm') -> float array, from any accepted input."""
    if hasattr(signals, "leads_dict"):
        return {k: np.asarray(v, float) for k, v in signals.leads_dict().items()}
    if isinstance(signals, Mapping):
        return {str(k): np.asarray(v, float).reshape(-1) for k, v in signals.items()}
    array = np.asarray(signals, float)
    if array.ndim != 2 or array.shape[0] != len(LEADS):
        raise ValueError(f"signals must be a lead -> array mapping or (12, N) in LEADS order, got {array.shape}")
    return {lead: array[i] for i, lead in enumerate(LEADS)}


def _longest_finite(x: np.ndarray) -> tuple[int, int]:
    """[start, end) of the longest run of finite samples (0, 0 when none)."""
    ok = np.isfinite(x)
    if not ok.any():
        return 0, 0
    edges = np.diff(np.concatenate(([0], ok.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def _rhythm_signal(leads: dict[str, np.ndarray], fs: float) -> tuple[str | None, np.ndarray, int]:
    """(name, contiguous samples, index of its first sample) of the signal to find beats in.

    The rhythm strip when it has >= _MIN_RHYTHM_S of signal, else the lead with the longest run
    (ties: II, then the standard order); (None, empty, 0) when nothing is long enough.
    """
    order = ["rhythm", "II", *[lead for lead in LEADS if lead != "II"]]
    best: tuple[str | None, int, int] = (None, 0, 0)
    for name in order:
        if name not in leads:
            continue
        start, end = _longest_finite(leads[name])
        flat = end > start and float(np.nanstd(leads[name][start:end])) < 1e-6
        if flat:
            continue
        if name == "rhythm" and end - start >= _MIN_RHYTHM_S * fs:
            return name, leads[name][start:end], start
        if end - start > best[2] - best[1]:
            best = (name, start, end)
    name, start, end = best
    if name is None or end - start < _MIN_RHYTHM_S * fs:
        return None, np.zeros(0), 0
    return name, leads[name][start:end], start


def _rate(result: Measurements, peaks: np.ndarray, fs: float) -> None:
    """Heart rate and RR variability from R-peak sample indices."""
    if len(peaks) < 2:
        for name in ("heart_rate_bpm", "rr_sdnn_ms", "rr_rmssd_ms"):
            result.reasons[name] = f"{len(peaks)} R peak(s) found; at least 2 are needed"
        return
    rr = np.diff(peaks) / fs * 1000.0  # ms
    rate = 60000.0 / float(rr.mean())
    lo, hi = _RANGES["heart_rate_bpm"]
    if not lo <= rate <= hi:
        result.reasons["heart_rate_bpm"] = f"{rate:.0f} bpm is outside {lo:.0f}-{hi:.0f}: beats were missed or doubled"
    else:
        result.heart_rate_bpm = rate
    if len(rr) < 3:
        for name in ("rr_sdnn_ms", "rr_rmssd_ms"):
            result.reasons[name] = f"{len(rr)} RR interval(s); at least 3 are needed"
        return
    result.rr_sdnn_ms = float(np.std(rr, ddof=1))
    result.rr_rmssd_ms = float(np.sqrt(np.mean(np.diff(rr) ** 2)))


def _delineate(nk, cleaned: np.ndarray, peaks: np.ndarray, fs: float, result: Measurements) -> dict | None:
    """neurokit2's DWT delineation (dict of per-beat sample indices, NaN = not found) or None."""
    if len(peaks) < 2:
        for name in ("pr_ms", "qrs_ms", "qt_ms"):
            result.reasons[name] = "too few beats to delineate"
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, waves = nk.ecg_delineate(cleaned, peaks, sampling_rate=int(round(fs)), method="dwt")
    except Exception as exc:  # noqa: BLE001 - neurokit2 fails in many ways on short/odd signals
        for name in ("pr_ms", "qrs_ms", "qt_ms"):
            result.reasons[name] = f"wave delineation failed ({type(exc).__name__})"
        return None
    return {k: np.array([np.nan if v is None else float(v) for v in vals]) for k, vals in waves.items()}


def _median_interval(waves: dict, start_key: str, end_key: str, fs: float) -> tuple[float | None, int]:
    """Median of (end - start) in ms over beats where both exist and end > start; and the count."""
    a, b = waves.get(start_key), waves.get(end_key)
    if a is None or b is None:
        return None, 0
    n = min(len(a), len(b))
    d = (b[:n] - a[:n]) / fs * 1000.0
    d = d[np.isfinite(d) & (d > 0)]
    return (float(np.median(d)), len(d)) if len(d) else (None, 0)


def _intervals(result: Measurements, waves: dict | None, peaks: np.ndarray, fs: float) -> None:
    """PR, QRS, QT and the two QTc from the delineation."""
    if waves is None:
        for name in ("qtc_bazett_ms", "qtc_fridericia_ms"):
            result.reasons[name] = "no QT interval"
        return
    for name, (a, b) in {"pr_ms": ("ECG_P_Onsets", "ECG_R_Onsets"), "qrs_ms": ("ECG_R_Onsets", "ECG_R_Offsets"),
                         "qt_ms": ("ECG_R_Onsets", "ECG_T_Offsets")}.items():
        value, count = _median_interval(waves, a, b, fs)
        lo, hi = _RANGES[name]
        if value is None:
            result.reasons[name] = f"the delineation found no beat with both {a[4:].lower()} and {b[4:].lower()}"
        elif not lo <= value <= hi:
            result.reasons[name] = f"{value:.0f} ms is outside {lo:.0f}-{hi:.0f} ms: the delineation is unreliable here"
        else:
            setattr(result, name, value)
    if result.qt_ms is None or len(peaks) < 2:
        for name in ("qtc_bazett_ms", "qtc_fridericia_ms"):
            result.reasons[name] = "no QT interval" if result.qt_ms is None else "no RR interval"
        return
    rr_s = float(np.mean(np.diff(peaks))) / fs
    result.qtc_bazett_ms = result.qt_ms / math.sqrt(rr_s)
    result.qtc_fridericia_ms = result.qt_ms / rr_s ** (1.0 / 3.0)


@dataclass(frozen=True)
class _Beat:
    """One beat on the record's time axis (sample indices): QRS onset/offset and PR-baseline window."""

    onset: int
    offset: int
    base0: int
    base1: int


def _beats(waves: dict | None, peaks: np.ndarray, offset: int, fs: float) -> list[_Beat]:
    """Beats in record samples. Without delineation, QRS = R -/+ 50 ms; PR baseline = the P offset
    to QRS onset when the delineation gives a gap of >= 10 ms there, else 40 to 10 ms before onset."""
    beats = []
    half = int(round(0.05 * fs))
    for i, r in enumerate(peaks):
        on = _wave(waves, "ECG_R_Onsets", i)
        off = _wave(waves, "ECG_R_Offsets", i)
        on = r - half if on is None or not r - 3 * half <= on < r else on
        off = r + half if off is None or not r < off <= r + 3 * half else off
        p_off = _wave(waves, "ECG_P_Offsets", i)
        if p_off is not None and on - p_off >= 0.01 * fs and on - p_off <= 0.2 * fs:
            b0, b1 = p_off, on
        else:
            b0, b1 = on - int(round(0.04 * fs)), on - int(round(0.01 * fs))
        beats.append(_Beat(on + offset, off + offset, b0 + offset, b1 + offset))
    return beats


def _wave(waves: dict | None, key: str, i: int) -> int | None:
    if waves is None or key not in waves or i >= len(waves[key]) or not np.isfinite(waves[key][i]):
        return None
    return int(waves[key][i])


def _lead_beats(x: np.ndarray, beats: list[_Beat], fs: float) -> list[_Beat]:
    """The beats whose baseline window, QRS and J + 60 ms all lie on finite samples of x."""
    n = len(x)
    after = int(round(_ST_OFFSET_S * fs))
    out = []
    for b in beats:
        lo, hi = b.base0, b.offset + after + 1
        if lo >= 0 and hi <= n and np.isfinite(x[lo:hi]).all():
            out.append(b)
    return out


def _axis(result: Measurements, leads: dict[str, np.ndarray], beats: list[_Beat], fs: float) -> None:
    """Frontal axis from the net QRS amplitudes of I and aVF (median over each lead's own beats)."""
    nets = {}
    for lead in ("I", "aVF"):
        x = leads.get(lead)
        own = [] if x is None else _lead_beats(x, beats, fs)
        if not own:
            result.reasons["axis_deg"] = f"no complete QRS complex in lead {lead}"
            return
        values = []
        for b in own:
            base = float(np.median(x[b.base0 : b.base1 + 1]))
            qrs = x[b.onset : b.offset + 1]
            values.append((qrs.max() - base) + (qrs.min() - base))
        nets[lead] = float(np.median(values))
    if abs(nets["I"]) < 1e-3 and abs(nets["aVF"]) < 1e-3:
        result.reasons["axis_deg"] = "net QRS of I and aVF are both ~0 (indeterminate axis)"
        return
    result.axis_deg = math.degrees(math.atan2(nets["aVF"], nets["I"]))


def _st(result: Measurements, leads: dict[str, np.ndarray], beats: list[_Beat], fs: float) -> None:
    """ST level (mV) per lead: J + 60 ms minus the PR-segment baseline, median over the lead's beats."""
    after = int(round(_ST_OFFSET_S * fs))
    for lead in LEADS:
        x = leads.get(lead)
        if x is None:
            result.reasons[f"st:{lead}"] = "lead not given"
            continue
        own = _lead_beats(x, beats, fs)
        if not own:
            result.reasons[f"st:{lead}"] = "no complete beat (PR segment to J + 60 ms) in this lead's window"
            continue
        values = [float(x[b.offset + after]) - float(np.median(x[b.base0 : b.base1 + 1])) for b in own]
        result.st_mv[lead] = float(np.median(values))
