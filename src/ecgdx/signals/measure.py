"""ECG interval and amplitude measurements from (digitised) 12-lead signals.

``measure(signals, fs) -> Measurements``: heart rate, RR variability (SDNN, RMSSD), PR, QRS, QT,
QTc (Bazett and Fridericia), frontal QRS axis and the ST level of every lead.

How the intervals are found (a printed page gives each lead only 2.5 s or 5 s, i.e. 2-6 beats, and
its traces carry the reading noise of a digitised line, so single-beat, single-lead delineation is
not good enough):

1. R peaks (``neurokit2.ecg_peaks``) on one "rhythm" signal: the 10 s lead-II strip when there is
   one, else the lead with the longest stretch of signal. The printed panels share the strip's time
   axis, so its beats locate the complexes of every short panel.
2. Beats that do not look like the dominant beat on the rhythm signal (ectopics, artefacts) are left
   out, and the rest are aligned on the rhythm signal by cross-correlation.
3. A **median beat per lead** from that lead's own beats. Samples near the ends of a printed window
   are not used (a panel starts under its printed label and ends at a separator line) and a beat
   only counts where its QRS lies fully inside the window.
4. **Global QRS onset and offset** across leads: the sum over leads of the absolute slope of the
   median beats (a spatial velocity); the QRS is the stretch where it stays above a threshold set
   between its noise floor and its peak.
5. **T end** by the tangent method (steepest descent of the T wave after its peak, extended to the
   isoelectric level) on every lead with a clear T wave; QT ends at the median of those T ends.
6. **P onset** by the tangent method on the rising limb of the P wave in the mean absolute deviation
   of all leads from their PR-segment level (P waves of both polarities add up); no clear P wave (atrial fibrillation, a P too small to read) gives
   no PR.

Every quantity is a float or None; a None always has a reason in ``Measurements.reasons``. Every
scalar also has a plausibility flag in ``Measurements.flags`` (``ok``, ``uncertain``, ``implausible``
or ``not measured``) and, for every flag, a plain-words reason in ``Measurements.flag_reasons``. An
implausible value (outside physiological limits: a measuring error, not a finding) is reported as
None. An uncertain one is kept but should be shown as such: its boundaries are not sharp (the
interval changes by more than a tolerance when the detection threshold changes), too few beats or
leads were usable, or the wave is too small to place reliably. Nothing here raises on bad signals
except a malformed argument (wrong shape, fs).

Definitions: PR = P onset to QRS onset; QRS = QRS onset to QRS offset; QT = QRS onset to T end
(global, across leads); QTc_Bazett = QT / sqrt(RR / 1 s); QTc_Fridericia = QT / (RR / 1 s)^(1/3)
with RR the mean RR interval; axis = atan2(net QRS of aVF, net QRS of I) in degrees (-180..180],
net = (max - baseline) + (min - baseline) over the QRS; ST = signal at J + 20 ms minus the PR-segment
baseline, J = QRS offset. Units: ms, bpm, degrees, mV.

Needs neurokit2 (``pip install 'ecgdx[signal]'``) for R peaks, imported on first use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecgdx.labels import LEADS

__all__ = ["FIELDS", "FLAG_IMPLAUSIBLE", "FLAG_OK", "FLAG_UNCERTAIN", "FLAG_UNMEASURED", "Measurements", "measure"]

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
FLAG_OK = "ok"
FLAG_UNCERTAIN = "uncertain"
FLAG_IMPLAUSIBLE = "implausible"
FLAG_UNMEASURED = "not measured"

# Physiological limits: a value outside is a measuring error, reported as None (flag implausible).
# An RR interval at either end of the strip this far (fraction) from the median RR is an edge artefact.
EDGE_RR_TOLERANCE = 0.25
_RANGES = {
    "heart_rate_bpm": (20.0, 300.0),
    "pr_ms": (70.0, 400.0),
    "qrs_ms": (50.0, 200.0),
    "qt_ms": (200.0, 650.0),
    "qtc_bazett_ms": (280.0, 650.0),
    "qtc_fridericia_ms": (280.0, 650.0),
}
# The rhythm signal needs this much contiguous signal (s) for rate and delineation.
_MIN_RHYTHM_S = 4.0
_ST_OFFSET_S = 0.02
# Median beats: samples within this distance (s) of a printed window's ends are not used.
_EDGE_GUARD_S = 0.04
# A beat counts in a lead only if this span around its R peak (s) is fully printed: the whole QRS.
_CORE_S = (-0.16, 0.20)
# Rhythm-signal beats correlating less than this with the median beat are not dominant beats.
_DOMINANT_CORRELATION = 0.8
# QRS threshold: noise floor + this fraction of (peak - noise floor) of the spatial velocity; the
# second fraction checks that the boundaries are sharp.
_QRS_FRACTION = 0.10
_QRS_CHECK_FRACTION = 0.20
# Interval changes (ms) beyond which a boundary counts as not sharp.
_SHARPNESS_MS = {"qrs_ms": 20.0, "qt_ms": 30.0, "pr_ms": 30.0}
# Smallest T and P waves (mV) that can be placed reliably on a digitised page (~0.5 mm and 0.4 mm).
_MIN_T_MV = 0.05
_MIN_P_MV = 0.04
# The least beats / leads behind an interval that is not flagged uncertain.
_MIN_BEATS = 3
_MIN_LEADS = 3


@dataclass
class Measurements:
    """Measured values (None = not measurable; see ``reasons``). Units in the field names.

    st_mv: lead -> ST level (mV) or None. beats: R peaks found in the rhythm signal.
    r_peaks: their sample indices on the record's time axis (refined, missed beats searched back):
    the beats every other measurement (Q waves in ``ecgdx.signals.findings``) should use.
    qrs_bounds: (onset, offset) sample indices of every dominant beat's QRS on the record's time
    axis, from the global boundaries; empty when the QRS boundaries were not found (the beats Q waves
    are measured in, ``ecgdx.signals.findings.measure_q_waves``).
    rhythm_source: which signal gave rate, RR and intervals ('rhythm' = the strip, or a lead name).
    reasons: field name (or 'st:<lead>') -> why it is None.
    flags: scalar field name -> FLAG_OK, FLAG_UNCERTAIN, FLAG_IMPLAUSIBLE or FLAG_UNMEASURED.
    flag_reasons: scalar field name -> why it has its flag, in plain words.
    leads_used: the signals whose median beat entered the interval measurement.
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
    r_peaks: list[int] = field(default_factory=list)
    qrs_bounds: list[tuple[int, int]] = field(default_factory=list)
    rhythm_source: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    flag_reasons: dict[str, str] = field(default_factory=dict)
    leads_used: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats rounded: 0.1 ms/bpm/deg, 1 uV)."""
        out = asdict(self)
        for name, _, _ in FIELDS:
            if out[name] is not None:
                out[name] = round(float(out[name]), 1)
        out["st_mv"] = {k: None if v is None else round(float(v), 3) for k, v in self.st_mv.items()}
        return out

    def rows(self) -> list[dict[str, Any]]:
        """[{key, label, value, unit, reason, flag, flag_reason}] of the scalar measurements, for tables."""
        return [
            {"key": name, "label": label, "value": getattr(self, name), "unit": unit,
             "reason": self.reasons.get(name, ""), "flag": self.flags.get(name, FLAG_UNMEASURED),
             "flag_reason": self.flag_reasons.get(name, "")}
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
    source, segment, offset = rhythm_signal(leads, fs)
    if source is None:
        result.reasons.update({name: f"no signal of at least {_MIN_RHYTHM_S:g} s to find beats in"
                               for name, _, _ in FIELDS})
        result.reasons.update({f"st:{lead}": "no beats found" for lead in LEADS})
        return _finish(result)
    result.rhythm_source = source
    import neurokit2 as nk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cleaned = nk.ecg_clean(segment, sampling_rate=int(round(fs)))
            _, info = nk.ecg_peaks(cleaned, sampling_rate=int(round(fs)))
        peaks = np.asarray(info["ECG_R_Peaks"], int)
    except Exception as exc:  # noqa: BLE001 - neurokit2 raises assorted errors on flat or odd signals
        result.reasons.update({name: f"R-peak detection failed ({type(exc).__name__})" for name, _, _ in FIELDS})
        return _finish(result)
    peaks = _search_back(cleaned, _refine_peaks(cleaned, peaks, fs), fs)
    result.beats = int(len(peaks))
    result.r_peaks = [int(p) + int(offset) for p in peaks]
    _rate(result, peaks, fs)
    delineation = _delineate(leads, source, peaks + offset, fs, result)
    _intervals(result, delineation, peaks, fs)
    beats = _beats(delineation, fs)
    if delineation is not None and delineation.qrs_on is not None and delineation.qrs_off is not None:
        result.qrs_bounds = [(b.onset, b.offset) for b in beats]
    _axis(result, leads, beats, fs)
    _st(result, leads, beats, fs)
    return _finish(result)


# --------------------------------------------------------------------------------------------------
# Input and rate
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


def rhythm_signal(leads: dict[str, np.ndarray], fs: float) -> tuple[str | None, np.ndarray, int]:
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


def _refine_peaks(x: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """Each detected peak more than 60 ms from the steepest point within 150 ms moved to the largest
    deflection within 40 ms of that point; duplicates (< 250 ms apart) merged. On some digitised strips with thin QRS
    spikes the detector marks P waves; the QRS is where the slope is."""
    if not len(peaks):
        return peaks
    slope = _smooth(np.abs(np.gradient(x)), fs, 0.02)
    reach, near = int(round(0.15 * fs)), int(round(0.04 * fs))
    moved: list[int] = []
    for p in peaks:
        lo, hi = max(0, int(p) - reach), min(len(x), int(p) + reach + 1)
        steep = lo + int(np.nanargmax(slope[lo:hi]))
        a, b = max(0, steep - near), min(len(x), steep + near + 1)
        part = x[a:b]
        q = a + int(np.argmax(np.abs(part - np.median(x[lo:hi]))))
        if abs(q - int(p)) <= int(round(0.06 * fs)):
            q = int(p)  # on the QRS already: keep the detector's consistent choice of point
        if moved and q - moved[-1] < int(round(0.25 * fs)):
            continue
        moved.append(q)
    return np.asarray(moved, int)


def _search_back(x: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """peaks without the ones too small to be QRS complexes, plus the beats the detector missed: in
    an RR interval over 1.5 times the median, the place most like the median QRS (correlation
    >= 0.9, >= 60 % of its swing), if any. Irregular rhythms (atrial fibrillation) are where
    detectors miss beats, and a missed beat lowers the rate."""
    if len(peaks) < 3:
        return peaks
    half = int(round(0.05 * fs))
    inside = [int(p) for p in peaks if half <= p < len(x) - half]
    if len(inside) < 3:
        return peaks
    template = np.median([x[p - half : p + half + 1] for p in inside], axis=0)
    swing = float(np.ptp(template))
    median_rr = float(np.median(np.diff(peaks)))
    refractory = int(round(0.25 * fs))
    # a small "beat" unlike the QRS is a T wave or a reading artefact (a big unlike one is an ectopic)
    found = [int(p) for p in peaks if not half <= p < len(x) - half or _qrs_like(x[p - half : p + half + 1], template)]
    peaks = np.asarray(found, int)
    median_rr = float(np.median(np.diff(peaks))) if len(peaks) >= 2 else median_rr
    for a, b in zip(peaks[:-1], peaks[1:], strict=True):
        if b - a < 1.5 * median_rr:
            continue
        centres = np.arange(max(int(a) + refractory, half), min(int(b) - refractory, len(x) - 1 - half) + 1)
        if not len(centres):
            continue
        parts = _windows(x, centres - half, 2 * half + 1)
        r = _correlations(parts, template)
        # The first best-correlated place above 0.9 that swings like a QRS.
        candidate = (r > 0.9) & (np.ptp(parts, axis=1) >= 0.6 * swing)
        if candidate.any():
            found.append(int(centres[np.argmax(np.where(candidate, r, -np.inf))]))
    return np.asarray(sorted(found), int)


def _qrs_like(part: np.ndarray, template: np.ndarray) -> bool:
    swing = float(np.ptp(template))
    return float(np.ptp(part)) >= 0.6 * swing or (float(np.ptp(part)) >= 0.3 * swing and _correlation(part, template) >= 0.5)


def _without_edge_artefacts(rr: np.ndarray, result: Measurements) -> np.ndarray:
    """RR intervals (for the variability) without those at the strip's ends that differ from the median RR by more than
    EDGE_RR_TOLERANCE (at most 2 per end, never fewer than 3 left): a beat cut by the start or end of
    the printed strip, or a spurious peak on the window's edge, gives one short first or last interval,
    which alone made regular normal pages look irregular. Says how many were left out (reasons)."""
    if len(rr) < 5:
        return rr
    median = float(np.median(rr))
    start, stop = 0, len(rr)
    for _ in range(2):
        if stop - start > 3 and abs(rr[start] - median) > EDGE_RR_TOLERANCE * median:
            start += 1
        if stop - start > 3 and abs(rr[stop - 1] - median) > EDGE_RR_TOLERANCE * median:
            stop -= 1
    dropped = start + len(rr) - stop
    if dropped:
        result.reasons["rr_edges"] = (f"{dropped} RR interval(s) at the ends of the strip left out: more than "
                                      f"{100 * EDGE_RR_TOLERANCE:.0f} % from the median RR (a beat cut by the edge)")
    return rr[start:stop]


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
        result.flags["heart_rate_bpm"] = FLAG_IMPLAUSIBLE
    else:
        result.heart_rate_bpm = rate
    if len(rr) < 3:
        for name in ("rr_sdnn_ms", "rr_rmssd_ms"):
            result.reasons[name] = f"{len(rr)} RR interval(s); at least 3 are needed"
        return
    # Variability without edge artefacts; the rate keeps every interval (that is what the benchmark's
    # independent truth counts too: trimming the rate as well lost 6-8 points of HR within 2 bpm).
    rr = _without_edge_artefacts(rr, result)
    result.rr_sdnn_ms = float(np.std(rr, ddof=1))
    result.rr_rmssd_ms = float(np.sqrt(np.mean(np.diff(rr) ** 2)))


# --------------------------------------------------------------------------------------------------
# Median beats and global delineation
# --------------------------------------------------------------------------------------------------


@dataclass
class _Delineation:
    """Global wave boundaries, in samples relative to the beats' fiducial point (the aligned R peak).

    fiducials: record sample index of every dominant beat. Boundaries are None when not found;
    *_check: the same boundary at the stricter threshold (for the sharpness check).
    """

    fiducials: np.ndarray
    rr_s: float
    beats_used: int
    leads_used: list[str]
    qrs_on: float | None = None
    qrs_off: float | None = None
    qrs_check: float | None = None  # QRS duration (samples) at the stricter threshold
    t_end: float | None = None
    t_end_spread: float | None = None  # samples between the T ends of the leads with clear T waves
    t_amplitude: float = 0.0
    p_on: float | None = None
    p_on_spread: float | None = None  # samples between the tangent onset and the quarter-height point
    p_amplitude: float = 0.0
    t_meets_p: bool = False  # the T wave runs into the next beat's P wave
    notes: dict[str, str] = field(default_factory=dict)


def _delineate(leads: dict[str, np.ndarray], source: str, peaks: np.ndarray, fs: float,
               result: Measurements) -> _Delineation | None:
    """Median beats of every lead and the global QRS, T end and P onset (None: too few beats)."""
    if len(peaks) < 2:
        for name in ("pr_ms", "qrs_ms", "qt_ms"):
            result.reasons[name] = "too few beats to delineate"
        return None
    rr_s = float(np.median(np.diff(peaks))) / fs
    pre = int(round(min(0.42, 0.55 * rr_s) * fs))
    post = int(round(min(0.70, 0.90 * rr_s) * fs))
    fiducials = _dominant_beats(_guarded(leads[source], fs), peaks, pre, post, fs)
    if len(fiducials) < 2:
        for name in ("pr_ms", "qrs_ms", "qt_ms"):
            result.reasons[name] = "fewer than 2 beats look alike on the rhythm signal"
        return None
    medians: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for name, x in leads.items():
        if name == "II" and source == "rhythm":
            continue  # the strip is lead II with more beats; counting II twice would weight it double
        beat, count = _median_beat(_guarded(x, fs), fiducials, pre, post, fs)
        if beat is not None:
            medians[name], counts[name] = beat, count
    d = _Delineation(fiducials=fiducials, rr_s=rr_s, beats_used=max(counts.values(), default=0),
                     leads_used=sorted(medians, key=lambda n: -1 if n == "rhythm" else LEADS.index(n)))
    result.leads_used = list(d.leads_used)
    if not medians:
        for name in ("pr_ms", "qrs_ms", "qt_ms"):
            result.reasons[name] = "no lead has a complete QRS complex inside its printed window"
        return None
    _qrs_bounds(d, medians, pre, fs)
    if d.qrs_on is not None and d.qrs_off is not None:
        _t_end(d, medians, pre, fs)
        _p_onset(d, medians, pre, fs)
    return d


def _guarded(x: np.ndarray, fs: float) -> np.ndarray:
    """x with the samples near the ends of every finite run set to NaN (window-edge artefacts)."""
    guard = int(round(_EDGE_GUARD_S * fs))
    finite = np.isfinite(x)
    if guard <= 0 or not finite.any():
        return x
    width = 2 * guard + 1
    inside = np.convolve(finite.astype(np.int32), np.ones(width, np.int32), mode="same") == width
    return np.where(inside, x, np.nan)


def _segments(x: np.ndarray, fiducials: np.ndarray, pre: int, post: int, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(beats, pre + post + 1) samples around each fiducial (NaN outside x), and the fiducials
    kept: only beats whose core span (the whole QRS) lies inside x and is finite."""
    f = np.asarray(fiducials)
    if f.ndim != 1 or (f.size and not np.issubdtype(f.dtype, np.integer)):
        raise TypeError(f"fiducials must be a 1-D array of sample indices, got {f.dtype} of shape {f.shape}")
    f = f.astype(np.int64)
    n = len(x)
    core0, core1 = int(round(_CORE_S[0] * fs)), int(round(_CORE_S[1] * fs))
    f = f[(f + core0 >= 0) & (f + core1 < n)]
    # Non-finite samples before each index: a beat's core is finite when none lie inside it.
    missing = np.concatenate([[0], np.cumsum(~np.isfinite(x))])
    f = f[missing[f + core1 + 1] == missing[f + core0]]
    index = f[:, None] + np.arange(-pre, post + 1)
    inside = (index >= 0) & (index < n)
    rows = np.where(inside, x[np.clip(index, 0, max(n - 1, 0))].astype(np.float64), np.nan)
    if len(f):
        # Baseline wander shifts whole beats; their median over the QRS span lines them up.
        rows -= np.median(x[f[:, None] + np.arange(core0, core1 + 1)], axis=1)[:, None]
    return rows, f


def _median_beat(x: np.ndarray, fiducials: np.ndarray, pre: int, post: int, fs: float) -> tuple[np.ndarray | None, int]:
    """The sample-wise median of the lead's beats (NaN where no beat has a sample) and the count."""
    rows, _ = _segments(x, fiducials, pre, post, fs)
    if not len(rows):
        return None, 0
    return _column_medians(rows), len(rows)


def _column_medians(rows: np.ndarray) -> np.ndarray:
    """``np.nanmedian(rows, axis=0)`` (NaN where a column has no number), the same values at a
    quarter of its cost on (beats, samples) arrays: one sort, then the middle finite entries."""
    ordered = np.sort(rows, axis=0)  # NaN sorts last
    count = np.count_nonzero(~np.isnan(rows), axis=0)
    columns = np.arange(rows.shape[1])
    low = ordered[np.maximum((count - 1) // 2, 0), columns]
    high = ordered[np.minimum(count // 2, rows.shape[0] - 1), columns]
    return np.where(count > 0, (low + high) / 2.0, np.nan)


def _dominant_beats(x: np.ndarray, peaks: np.ndarray, pre: int, post: int, fs: float) -> np.ndarray:
    """The fiducials (record samples) of the beats shaped like the median beat, aligned to it."""
    rows, kept = _segments(x, peaks, pre, post, fs)
    core = _core_slice(pre, fs)
    if len(rows) < 2:
        return np.asarray(kept, int)
    shift_max = int(round(0.012 * fs))
    template = _column_medians(rows)[core]
    out = []
    shifts = np.arange(-shift_max, shift_max + 1)
    shifts = shifts[(core.start + shifts >= 0) & (core.stop + shifts <= rows.shape[1])]
    for p, row in zip(kept.tolist(), rows, strict=True):
        if not len(shifts):
            continue
        r = _correlations(_windows(row, core.start + shifts, core.stop - core.start), template)
        best = int(np.argmax(r))  # the first best shift
        if r[best] >= _DOMINANT_CORRELATION:
            out.append(p + int(shifts[best]))
    return np.asarray(out, int)


def _core_slice(pre: int, fs: float) -> slice:
    return slice(pre + int(round(_CORE_S[0] * fs)), pre + int(round(_CORE_S[1] * fs)) + 1)


def _windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) contiguous copy of x[s : s + length] for every start s (all inside x)."""
    return x[starts[:, None] + np.arange(length)]


def _correlations(parts: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``_correlation`` of every row of a C-contiguous (n, m) array with the template: each row is
    reduced on its own, by the same pairwise sums as the 1-D call, so the values are the same (0
    where a row or the template is flat or holds NaN)."""
    a = parts - parts.mean(axis=1, keepdims=True)
    b = template - template.mean()
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b))
    num = np.sum(a * b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0 else 0.0


def _smooth(x: np.ndarray, fs: float, seconds: float) -> np.ndarray:
    """Moving average over ~seconds (odd length; NaN-aware: mean of the finite samples)."""
    width = max(1, int(round(seconds * fs)) | 1)
    if width == 1:
        return x.copy()
    ok = np.isfinite(x)
    kernel = np.ones(width)
    total = np.convolve(np.where(ok, x, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, total / count, np.nan)


def _slope(x: np.ndarray, fs: float) -> np.ndarray:
    """Derivative (mV/s) over a 12 ms base: steady against the pixel steps of a digitised line."""
    k = max(1, int(round(0.006 * fs)))
    out = np.full(len(x), np.nan)
    out[k:-k] = (x[2 * k :] - x[: -2 * k]) * fs / (2 * k)
    return out


def _qrs_bounds(d: _Delineation, medians: dict[str, np.ndarray], pre: int, fs: float) -> None:
    """Global QRS onset/offset: where the summed absolute slope of all leads leaves its noise floor."""
    core = _core_slice(pre, fs)
    velocity = np.zeros(core.stop - core.start)
    for beat in medians.values():
        velocity += np.abs(np.nan_to_num(_slope(beat, fs)[core]))
    velocity = _smooth(velocity, fs, 0.008)
    peak = int(np.argmax(velocity))
    floor = float(np.percentile(velocity, 10))
    span = velocity[peak] - floor
    if span <= 0:
        d.notes["qrs_ms"] = "the leads show no QRS slope"
        return
    on, off = _above_span(velocity, peak, floor + _QRS_FRACTION * span, int(round(0.02 * fs)))
    check_on, check_off = _above_span(velocity, peak, floor + _QRS_CHECK_FRACTION * span, int(round(0.02 * fs)))
    d.qrs_on, d.qrs_off = on + core.start - pre, off + core.start - pre
    d.qrs_check = check_off - check_on


def _above_span(v: np.ndarray, peak: int, threshold: float, gap: int) -> tuple[float, float]:
    """Sub-sample [first, last] of the run of v above threshold around peak (gaps <= gap merged)."""
    above = np.flatnonzero(v > threshold)
    groups = np.split(above, np.flatnonzero(np.diff(above) > gap) + 1)
    group = next(g for g in groups if g[0] <= peak <= g[-1])
    first, last = int(group[0]), int(group[-1])
    on = float(first)
    if first > 0 and v[first] != v[first - 1]:
        on = first - (v[first] - threshold) / (v[first] - v[first - 1])
    off = float(last)
    if last + 1 < len(v) and v[last] != v[last + 1]:
        off = last + (v[last] - threshold) / (v[last] - v[last + 1])
    return on, off


def _isoelectric(beat: np.ndarray, qrs_on: float, pre: int, fs: float) -> float | None:
    """The PR-segment level: median over 20-4 ms before QRS onset (None if not printed)."""
    a, b = int(round(pre + qrs_on - 0.020 * fs)), int(round(pre + qrs_on - 0.004 * fs)) + 1
    part = beat[max(0, a) : max(0, b)]
    part = part[np.isfinite(part)]
    return float(np.median(part)) if len(part) >= 3 else None


def _t_end(d: _Delineation, medians: dict[str, np.ndarray], pre: int, fs: float) -> None:
    """Tangent-method T end in every lead with a clear T wave; the median of them."""
    assert d.qrs_on is not None and d.qrs_off is not None
    start = int(round(pre + d.qrs_off + 0.06 * fs))
    stop = int(round(pre + d.qrs_on + min(0.50 * math.sqrt(d.rr_s), d.rr_s - 0.12) * fs))
    ends: list[tuple[float, float]] = []  # (|T amplitude|, T end)
    for beat in medians.values():
        base = _isoelectric(beat, d.qrs_on, pre, fs)
        if base is None or stop - start < int(0.06 * fs) or stop >= len(beat):
            continue
        smooth = _smooth(beat, fs, 0.02) - base
        window = smooth[start:stop]
        if not np.isfinite(window).all():
            continue
        i = int(np.argmax(np.abs(window)))
        if i == 0 or i == len(window) - 1:
            continue  # no T peak inside the window: an ST shift or a wave cut off
        t_peak, amplitude = start + i, float(window[i])
        if abs(amplitude) < _MIN_T_MV:
            continue
        end = _tangent_crossing(smooth, t_peak, int(round(min(0.25, 0.4 * d.rr_s) * fs)), fs, after=True)
        if end is not None:
            ends.append((abs(amplitude), end - pre))
    if not ends:
        d.notes["qt_ms"] = f"no lead has a T wave of at least {_MIN_T_MV:g} mV with a clear end"
        return
    biggest = max(a for a, _ in ends)
    clear = [t for a, t in ends if a >= 0.4 * biggest]
    d.t_end = float(np.median(clear))
    d.t_end_spread = float(np.percentile(clear, 75) - np.percentile(clear, 25)) if len(clear) >= 3 else 0.0
    d.t_amplitude = biggest


def _tangent_crossing(y: np.ndarray, peak: int, reach: int, fs: float, *, after: bool) -> float | None:
    """Where the tangent at the steepest point between a wave's peak and reach samples beyond it
    (after the peak, or before it) meets the zero line; None when the limb does not head for zero."""
    slope = _slope(y, fs)
    lo, hi = (peak, min(len(y), peak + reach)) if after else (max(0, peak - reach), peak + 1)
    part = slope[lo:hi]
    if not len(part) or not np.isfinite(part).any():
        return None
    toward = -np.sign(y[peak]) * (1 if after else -1)  # the slope sign that heads for zero
    score = np.where(np.isfinite(part), toward * part, -np.inf)
    j = int(np.argmax(score))
    if score[j] <= 0:
        return None
    k = lo + j
    crossing = k - y[k] / slope[k] * fs
    if after and not peak <= crossing <= peak + 2 * reach:
        return None
    if not after and not peak - 2 * reach <= crossing <= peak:
        return None
    return float(crossing)


def _p_onset(d: _Delineation, medians: dict[str, np.ndarray], pre: int, fs: float) -> None:
    """Tangent-method P onset on the mean absolute deviation of all leads from their PR-segment
    level: P waves of either polarity add up, reading noise averages out (a tangent on one small,
    noisy P wave can land 40 ms out)."""
    assert d.qrs_on is not None
    stop = int(round(pre + d.qrs_on - 0.03 * fs))
    earliest = d.qrs_on - min(0.34, 0.6 * d.rr_s) * fs
    if d.t_end is not None:  # do not take the previous beat's T wave for a P wave
        earliest = max(earliest, d.t_end - d.rr_s * fs + 0.04 * fs)
    start = max(0, int(round(pre + earliest)))
    if stop - start < int(0.04 * fs):
        d.notes["pr_ms"] = "no room for a P wave between the previous T wave and the QRS"
        d.t_meets_p = d.t_end is not None
        return
    envelope = np.zeros(stop - start)
    amplitudes, leads = [], 0
    for beat in medians.values():
        base = _isoelectric(beat, d.qrs_on, pre, fs)
        if base is None:
            continue
        window = (_smooth(beat, fs, 0.016) - base)[start:stop]
        if not np.isfinite(window).all():
            continue
        envelope += np.abs(window)
        amplitudes.append(float(np.max(np.abs(window))))
        leads += 1
    if not leads:
        d.notes["pr_ms"] = "no lead shows the stretch before the QRS where the P wave lies"
        return
    envelope /= leads
    # Reading noise lifts the whole envelope; measured from zero, the tangent would start the P wave early.
    floor = float(np.percentile(envelope, 10))
    i = int(np.argmax(envelope))
    if i < int(0.02 * fs) or i == len(envelope) - 1 or max(amplitudes) < _MIN_P_MV or envelope[i] < 0.5 * _MIN_P_MV:
        d.notes["pr_ms"] = (f"no clear P wave (at least {_MIN_P_MV:g} mV) before the QRS: atrial fibrillation, "
                            "a junctional rhythm, or a P wave too small to read")
        return
    onset = _tangent_crossing(envelope - floor, i, int(round(0.08 * fs)), fs, after=False)
    if onset is None:
        d.notes["pr_ms"] = "the P wave has no clear onset"
        return
    d.p_on = onset + start - pre
    d.p_amplitude = float(max(amplitudes))
    # How sharp: the onset where the rising limb leaves a quarter of the peak, against the tangent's.
    rising = np.flatnonzero(envelope[: i + 1] - floor < 0.25 * (envelope[i] - floor))
    d.p_on_spread = abs(float(rising[-1]) - onset) if len(rising) else None


# --------------------------------------------------------------------------------------------------
# Intervals and their flags
# --------------------------------------------------------------------------------------------------


def _intervals(result: Measurements, d: _Delineation | None, peaks: np.ndarray, fs: float) -> None:
    """PR, QRS, QT and the two QTc from the global delineation, each with its flag and reason."""
    if d is None:
        for name in ("qtc_bazett_ms", "qtc_fridericia_ms"):
            result.reasons[name] = "no QT interval"
        return
    ms = 1000.0 / fs
    values: dict[str, float | None] = {"pr_ms": None, "qrs_ms": None, "qt_ms": None}
    doubts: dict[str, list[str]] = {name: [] for name in values}
    if d.qrs_on is not None and d.qrs_off is not None:
        values["qrs_ms"] = (d.qrs_off - d.qrs_on) * ms
        if d.qrs_check is not None and abs(values["qrs_ms"] - d.qrs_check * ms) > _SHARPNESS_MS["qrs_ms"]:
            doubts["qrs_ms"].append(f"its boundaries are not sharp (a stricter threshold gives {d.qrs_check * ms:.0f} ms)")
        if d.t_end is not None:
            values["qt_ms"] = (d.t_end - d.qrs_on) * ms
            if d.t_amplitude < 2 * _MIN_T_MV:
                doubts["qt_ms"].append(f"the largest T wave is only {d.t_amplitude:.2f} mV")
            if d.t_end_spread is not None and d.t_end_spread * ms > _SHARPNESS_MS["qt_ms"]:
                doubts["qt_ms"].append(f"the leads' T ends differ by {d.t_end_spread * ms:.0f} ms")
        if d.p_on is not None and d.t_end is not None:
            # at fast rates the T wave runs into the next P wave and its end cannot be seen
            gap = (d.rr_s * fs + d.p_on - d.t_end) * ms
            d.t_meets_p = d.t_meets_p or gap < 20.0
        if d.t_meets_p and values["qt_ms"] is not None:
            doubts["qt_ms"].append("the T wave runs into the next beat's P wave, so its end is hidden")
        if d.p_on is not None:
            values["pr_ms"] = (d.qrs_on - d.p_on) * ms
            if d.p_amplitude < 1.5 * _MIN_P_MV:
                doubts["pr_ms"].append(f"the largest P wave is only {d.p_amplitude:.2f} mV")
            if d.p_on_spread is not None and d.p_on_spread * ms > _SHARPNESS_MS["pr_ms"]:
                doubts["pr_ms"].append(f"the P wave's onset is not sharp (its tangent and its quarter-height "
                                           f"point differ by {d.p_on_spread * ms:.0f} ms)")
    for name in values:
        if d.beats_used < _MIN_BEATS:
            doubts[name].append(f"only {d.beats_used} beat(s) per lead could be used")
        if len(d.leads_used) < _MIN_LEADS:
            doubts[name].append(f"only {len(d.leads_used)} lead(s) had a complete beat")
    for name, value in values.items():
        if value is None:
            result.reasons[name] = d.notes.get(name) or d.notes.get("qrs_ms") or "the wave boundaries were not found"
            continue
        _accept(result, name, value, doubts[name])
    if result.qt_ms is None or len(peaks) < 2:
        for name in ("qtc_bazett_ms", "qtc_fridericia_ms"):
            result.reasons[name] = "no QT interval" if result.qt_ms is None else "no RR interval"
        return
    rr_s = float(np.mean(np.diff(peaks))) / fs
    inherited = ["the QT interval is uncertain"] if result.flags.get("qt_ms") == FLAG_UNCERTAIN else []
    _accept(result, "qtc_bazett_ms", result.qt_ms / math.sqrt(rr_s), list(inherited))
    _accept(result, "qtc_fridericia_ms", result.qt_ms / rr_s ** (1.0 / 3.0), list(inherited))


def _accept(result: Measurements, name: str, value: float, doubts: list[str]) -> None:
    """Store value with its flag: implausible outside _RANGES (value None), uncertain with doubts."""
    lo, hi = _RANGES[name]
    if not lo <= value <= hi:
        why = f"{value:.0f} ms was measured, outside the physiological {lo:.0f}-{hi:.0f} ms: a measuring error"
        result.reasons[name] = why
        result.flags[name], result.flag_reasons[name] = FLAG_IMPLAUSIBLE, why
        return
    setattr(result, name, value)
    if doubts:
        result.flags[name], result.flag_reasons[name] = FLAG_UNCERTAIN, "; ".join(doubts)


def _finish(result: Measurements) -> Measurements:
    """Give every scalar field a flag and a reason (the defaults for those no step flagged)."""
    for name, _, _ in FIELDS:
        value = getattr(result, name)
        if value is None:
            result.flags.setdefault(name, FLAG_UNMEASURED)
            result.flag_reasons.setdefault(name, result.reasons.get(name, "not measured"))
            result.reasons.setdefault(name, result.flag_reasons[name])
        elif name not in result.flags:
            result.flags[name] = FLAG_OK
            result.flag_reasons[name] = _ok_reason(name, result)
    return result


def _ok_reason(name: str, result: Measurements) -> str:
    if name in ("heart_rate_bpm", "rr_sdnn_ms", "rr_rmssd_ms"):
        return f"from {result.beats} R peaks on the {'rhythm strip' if result.rhythm_source == 'rhythm' else result.rhythm_source}"
    if name == "axis_deg":
        return "from the net QRS of leads I and aVF"
    lo, hi = _RANGES[name]
    return (f"within the physiological {lo:.0f}-{hi:.0f} ms, sharp boundaries, from the median beats of "
            f"{len(result.leads_used)} signals")


# --------------------------------------------------------------------------------------------------
# Axis and ST, beat by beat on each lead's own window
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Beat:
    """One beat on the record's time axis (sample indices): QRS onset/offset and PR-baseline window."""

    onset: int
    offset: int
    base0: int
    base1: int


def _beats(d: _Delineation | None, fs: float) -> list[_Beat]:
    """The dominant beats with the global QRS boundaries (QRS = R -/+ 50 ms when not found);
    the PR baseline is 40 to 10 ms before the onset."""
    if d is None:
        return []
    half = 0.05 * fs
    on = d.qrs_on if d.qrs_on is not None else -half
    off = d.qrs_off if d.qrs_off is not None else half
    beats = []
    for f in d.fiducials:
        onset, offset = int(round(f + on)), int(round(f + off))
        beats.append(_Beat(onset, offset, onset - int(round(0.04 * fs)), onset - int(round(0.01 * fs))))
    return beats


def _lead_beats(x: np.ndarray, beats: list[_Beat], fs: float) -> list[_Beat]:
    """The beats whose baseline window, QRS and J + 20 ms all lie on finite samples of x."""
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
    """ST level (mV) per lead: J + 20 ms minus the PR-segment baseline, median over the lead's beats."""
    after = int(round(_ST_OFFSET_S * fs))
    for lead in LEADS:
        x = leads.get(lead)
        if x is None:
            result.reasons[f"st:{lead}"] = "lead not given"
            continue
        own = _lead_beats(x, beats, fs)
        if not own:
            result.reasons[f"st:{lead}"] = "no complete beat (PR segment to J + 20 ms) in this lead's window"
            continue
        values = [float(x[b.offset + after]) - float(np.median(x[b.base0 : b.base1 + 1])) for b in own]
        result.st_mv[lead] = float(np.median(values))
