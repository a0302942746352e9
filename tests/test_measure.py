"""Tests of ecgdx.measure on neurokit2-simulated ECGs with known heart rate, and on bad signals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

nk = pytest.importorskip("neurokit2")

from ecgdx.labels import LEADS  # noqa: E402
from ecgdx.measure import FIELDS, Measurements, measure  # noqa: E402

FS = 500.0


def simulated(rate: float, seed: int = 7, seconds: float = 10.0) -> np.ndarray:
    """Single-lead ECGSYN simulation (mV-like units) at a known heart rate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(nk.ecg_simulate(duration=seconds, sampling_rate=int(FS), heart_rate=rate,
                                          heart_rate_std=1, random_state=seed), float)


def r_peaks(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=int(FS)), sampling_rate=int(FS))[1]["ECG_R_Peaks"])


@pytest.mark.parametrize("rate", [50, 75, 110])
def test_heart_rate_and_intervals_of_a_simulation(rate):
    m = measure({"II": simulated(rate)}, FS)
    assert m.heart_rate_bpm == pytest.approx(rate, abs=2)
    assert m.rhythm_source == "II" and m.beats >= int(rate * 10 / 60) - 1
    assert 0 <= m.rr_sdnn_ms < 60 and 0 <= m.rr_rmssd_ms < 80
    assert 40 <= m.qrs_ms <= 250 and 200 <= m.qt_ms <= 700 and 60 <= m.pr_ms <= 400
    rr = 60.0 / m.heart_rate_bpm
    assert m.qtc_bazett_ms == pytest.approx(m.qt_ms / math.sqrt(rr), rel=0.02)
    assert m.qtc_fridericia_ms == pytest.approx(m.qt_ms / rr ** (1 / 3), rel=0.02)
    if rate < 60:
        assert m.qtc_bazett_ms < m.qtc_fridericia_ms < m.qt_ms  # slow: both corrections shorten QT
    else:
        assert m.qtc_bazett_ms > m.qtc_fridericia_ms > m.qt_ms


def test_rr_variability_grows_with_heart_rate_variability():
    steady = measure({"II": simulated(70, seed=2)}, FS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        varied = np.asarray(nk.ecg_simulate(duration=10, sampling_rate=500, heart_rate=70, heart_rate_std=8,
                                            random_state=2), float)
    assert measure({"II": varied}, FS).rr_sdnn_ms > 2 * steady.rr_sdnn_ms


def test_frontal_axis_from_leads_i_and_avf():
    x = simulated(70, seed=3)
    for angle in (-30.0, 0.0, 60.0, 120.0):
        a = math.radians(angle)
        leads = {"II": x, "I": x * math.cos(a), "aVF": x * math.sin(a)}
        assert measure(leads, FS).axis_deg == pytest.approx(angle, abs=5), angle


def test_st_level_per_lead():
    x = simulated(70, seed=4)
    peaks = r_peaks(x)
    raised = x.copy()
    for r in peaks:  # lift the ST segment (QRS end to T) by 0.2 mV
        raised[r + int(0.05 * FS) : r + int(0.2 * FS)] += 0.2
    m = measure({"II": x, "V2": raised, "V3": x}, FS)
    assert m.st_mv["V2"] - m.st_mv["V3"] == pytest.approx(0.2, abs=0.05)
    assert m.st_mv["I"] is None and "st:I" in m.reasons


def test_printed_windows_and_the_rhythm_strip():
    """Leads printed 2.5 s each (NaN elsewhere) use the strip's beats, which share their time axis."""
    x = simulated(80, seed=5)
    leads = {}
    for i, lead in enumerate(LEADS):
        y = np.full_like(x, np.nan)
        i0 = (i // 3) * 1250  # 3x4: column = i // 3 (I II III, aVR aVL aVF, ...)
        y[i0 : i0 + 1250] = x[i0 : i0 + 1250]
        leads[lead] = y
    m = measure(leads, FS, rhythm=x)
    assert m.rhythm_source == "rhythm" and m.heart_rate_bpm == pytest.approx(80, abs=2)
    assert all(m.st_mv[lead] is not None for lead in LEADS)
    without = measure(leads, FS)  # 2.5 s panels only: too short to count beats in
    assert without.heart_rate_bpm is None and "4 s" in without.reasons["heart_rate_bpm"]


def test_array_input_and_to_dict():
    x = simulated(65, seed=6)
    m = measure(np.tile(x, (12, 1)), FS)
    d = m.to_dict()
    assert isinstance(m, Measurements) and d["heart_rate_bpm"] == round(m.heart_rate_bpm, 1)
    assert set(d["st_mv"]) == set(LEADS)
    assert [r["key"] for r in m.rows()] == [name for name, _, _ in FIELDS]


@pytest.mark.parametrize("signal", [
    np.full(5000, np.nan),  # nothing printed
    np.zeros(5000),  # flat line
    np.random.default_rng(0).normal(0, 0.01, 1000),  # 2 s of noise
])
def test_unmeasurable_signals_give_none_and_a_reason(signal):
    m = measure({"II": signal}, FS)
    for name, _, _ in FIELDS:
        value = getattr(m, name)
        assert value is None or np.isfinite(value)
        if value is None:
            assert m.reasons[name], name
    assert m.heart_rate_bpm is None


def test_noise_does_not_crash():
    noise = np.random.default_rng(1).normal(0, 0.3, 5000)
    m = measure({"II": noise}, FS)  # whatever neurokit2 makes of it: numbers or None + reason
    for name, _, _ in FIELDS:
        assert getattr(m, name) is not None or name in m.reasons


def test_bad_arguments():
    with pytest.raises(ValueError, match="fs"):
        measure({"II": np.zeros(100)}, 10)
    with pytest.raises(ValueError, match=r"\(12, N\)"):
        measure(np.zeros((3, 100)), FS)
