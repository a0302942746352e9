"""Digitisation must not get worse: real CinC records drawn and read back as in the SNR benchmark
(benchmarks/digitization.py: same printer band, seeds and layouts) keep the SNR that benchmark run
recorded (tests/fixtures/digitization_snr_reference.json) within 0.5 dB. A deliberate change of the
digitiser that lowers it must update the reference and say why; one that raises it passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_modules import load_benchmark
from realdata import CINC_DIR, DATA_DIR, require

REPO = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((REPO / "tests" / "fixtures" / "digitization_snr_reference.json").read_text())["pages"]
TOLERANCE_DB = 0.5


def test_real_records_read_back_with_the_recorded_snr():
    require(CINC_DIR)
    pytest.importorskip("wfdb")
    from ecgdx.labels import LEADS
    from ecgdx.signals.digitize import digitize
    from ecgdx.signals.render import Distortions, load_record, printer_filter, render_page

    bench = load_benchmark("digitization")
    todo, _ = bench.tasks(DATA_DIR, 0, ["3x4", "6x2"], ["clean", "mild"], 40.0)  # the benchmark's seeds
    worse, checked = [], 0
    for source, _, pages, lowpass in todo:
        name = Path(source).name
        if not any(key.startswith(name + "/") for key in REFERENCE):
            continue
        original, fs = load_record(source)
        signals = printer_filter(original, fs, high_hz=lowpass)
        for layout, variant, seed in pages:
            if variant != "clean":
                continue
            page = render_page(signals, fs, layout=layout, seed=seed, distortions=Distortions())
            result = digitize(page.image)
            snr = []
            for i, lead in enumerate(LEADS):
                m = page.leads[lead]
                i0, i1 = int(round(m.t0 * fs)), int(round(m.t1 * fs))
                snr.append(bench.snr_db(page.signals[i, i0:i1], result.signals[i, i0:i1]))
            rhythm = bench.snr_db(page.signals[LEADS.index("II")], result.rhythm)
            expected = REFERENCE[f"{name}/{layout}"]
            checked += 1
            if np.mean(snr) < expected["mean_snr_db"] - TOLERANCE_DB or rhythm < expected["rhythm_snr_db"] - TOLERANCE_DB:
                worse.append((name, layout, round(float(np.mean(snr)), 2), round(rhythm, 2), expected))
    assert checked == len(REFERENCE) == 8
    assert not worse, worse
