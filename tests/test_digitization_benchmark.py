"""The interval benchmark's own truth (benchmarks/digitization.py) must not count T waves as beats."""

from __future__ import annotations

import numpy as np
from benchmark_modules import load_benchmark

benchmark = load_benchmark("digitization")

FS = 500.0


def _record(rate_bpm: float, steep_t_leads: int) -> np.ndarray:
    """(12, 10 s) mV: a narrow QRS in every lead; in the first ``steep_t_leads`` leads also a tall,
    steep T wave 260 ms after each QRS (as in a fast rhythm with peaked T waves)."""
    t = np.arange(int(10 * FS)) / FS
    signals = np.zeros((12, t.size))
    for beat in np.arange(0.3, 9.8, 60.0 / rate_bpm):
        signals += np.exp(-0.5 * ((t - beat) / 0.008) ** 2)
        signals[:steep_t_leads] += 1.6 * np.exp(-0.5 * ((t - beat - 0.26) / 0.012) ** 2)
    return signals


def test_truth_rate_counts_beats_not_t_waves_steep_in_some_leads():
    assert abs(benchmark.truth_rate(_record(100, 0), FS) - 100) < 1
    # T waves as steep as the QRS in 7 of 12 leads: summed, they pass the sum's own thresholds, but
    # they are not steep in 3/4 of the leads, as every QRS is.
    assert abs(benchmark.truth_rate(_record(100, 7), FS) - 100) < 1


def test_truth_rate_keeps_premature_wide_beats_seen_in_every_lead():
    t = np.arange(int(10 * FS)) / FS
    normal = np.arange(0.4, 9.6, 1.0)
    premature = normal[1::2] + 0.45  # an ectopic beat after every second beat: wide and inverted
    signals = np.zeros((12, t.size))
    for beat in normal:
        signals += np.exp(-0.5 * ((t - beat) / 0.008) ** 2)
    for beat in premature:
        signals -= 1.5 * np.exp(-0.5 * ((t - beat) / 0.02) ** 2)
    beats = np.sort(np.concatenate([normal, premature]))
    expected = 60.0 * (len(beats) - 1) / (beats[-1] - beats[0])
    assert abs(benchmark.truth_rate(signals, FS) - expected) < 1
