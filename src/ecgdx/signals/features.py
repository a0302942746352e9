"""Measured evidence as a feature vector: what a reader measures on the 12 digitised leads.

``page_features(ecg)`` turns one ``ecgdx.signals.digitize.DigitizedECG`` into a fixed-order dict of floats
(NaN = not measurable), for a gradient-boosted classifier (``benchmarks/measurement_model.py``):

- rhythm and intervals (``ecgdx.signals.measure``): heart rate (bpm), RR irregularity (SDNN / mean RR), PR,
  QRS, QT, QTc (ms), frontal axis (degrees);
- per lead: ST level at J+20 ms (mV), Q depth (mV) and width (ms), R height (mV)
  (``ecgdx.signals.findings.measure_q_waves``), and the trace's upper and lower excursions (95th percentile
  minus median, median minus 5th percentile, mV), which carry R/S amplitudes and T inversion.

Every feature is in physical units (mV, ms, bpm, degrees), read through the page's own calibration
(pulses and time scale), never in pixels, so a page scanned at another resolution gives the same
numbers; ``tests/signals/test_features.py`` checks this on the full-resolution JPEGs and their 50 % PNG twins.
No count of beats or samples is used: those differ between the 2.5 s and 5 s lead windows of the two
print templates and would let a model recognise the template instead of the ECG. Torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecgdx.labels import LEADS

__all__ = ["FEATURE_NAMES", "page_features"]

_GLOBAL = ("heart_rate_bpm", "rr_irregularity", "pr_ms", "qrs_ms", "qt_ms", "qtc_bazett_ms", "axis_deg")
_PER_LEAD = ("st_mv", "q_depth_mv", "q_ms", "r_mv", "up_mv", "down_mv")
FEATURE_NAMES: tuple[str, ...] = _GLOBAL + tuple(f"{name}_{lead}" for lead in LEADS for name in _PER_LEAD)


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


def page_features(ecg: Any) -> dict[str, float]:
    """Feature dict (keys ``FEATURE_NAMES``, in that order) of one digitised page."""
    from ecgdx.signals.findings import measure_q_waves
    from ecgdx.signals.measure import measure

    values = measure(ecg, ecg.fs)
    out = {name: float("nan") for name in FEATURE_NAMES}
    for name in ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_bazett_ms", "axis_deg"):
        out[name] = _number(getattr(values, name, None))
    rate, sdnn = _number(values.heart_rate_bpm), _number(values.rr_sdnn_ms)
    if rate > 0 and np.isfinite(sdnn):
        out["rr_irregularity"] = sdnn / (60000.0 / rate)
    st = values.st_mv or {}
    leads = ecg.leads_dict()
    try:
        q_waves = measure_q_waves(leads, ecg.fs, values.qrs_bounds)
    except Exception:  # a page whose beats cannot be found still has its other features
        q_waves = {}
    for i, lead in enumerate(LEADS):
        out[f"st_mv_{lead}"] = _number(st.get(lead))
        q = q_waves.get(lead)
        if q is not None:
            out[f"q_depth_mv_{lead}"] = q.depth_mv
            out[f"q_ms_{lead}"] = q.duration_ms
            out[f"r_mv_{lead}"] = q.r_mv
        x = np.asarray(ecg.signals[i], float)
        x = x[np.isfinite(x)]
        if len(x) >= ecg.fs:  # at least 1 s of trace
            p5, p50, p95 = np.percentile(x, [5, 50, 95])
            out[f"up_mv_{lead}"] = float(p95 - p50)
            out[f"down_mv_{lead}"] = float(p50 - p5)
    return out
