"""Tests of ecgdx.signals.render: pages drawn from known signals, the exact pixel mapping, distortions.

The real-data tests read ECGDX_DATA_DIR (default <repo>/../shared/data) and are skipped only when
that folder is absent. wfdb and neurokit2 come with the [signal] extra.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from realdata import CINC_DIR, require

from ecgdx.cli import main
from ecgdx.labels import LEADS
from ecgdx.page.layout import find_lead_panels
from ecgdx.page.preprocessing import decode_image
from ecgdx.signals.render import Distortions, load_record, printer_filter, render_page

FS = 500.0


def _levels(values_mv: dict[str, float]) -> np.ndarray:
    """(12, 5000) constant signals: the given mV per lead, 0 elsewhere."""
    signals = np.zeros((12, 5000))
    for lead, value in values_mv.items():
        signals[LEADS.index(lead)] = value
    return signals


def _ink_row(gray: np.ndarray, x: float, y_expected: float, search_px: int = 12) -> float:
    """Darkness-weighted row (continuous coordinates) of the ink in column x near y_expected."""
    c = int(x)
    y0 = int(y_expected) - search_px
    column = 255.0 - gray[y0 : y0 + 2 * search_px, c].astype(float)
    column[column < 60] = 0  # ignore the faint grid
    return y0 + 0.5 + float((np.arange(len(column)) * column).sum() / column.sum())


@pytest.mark.parametrize("layout", ["3x4", "6x2"])
def test_mapping_is_exact_for_constant_levels(layout):
    levels = {"I": 0.5, "aVR": -0.5, "V2": 1.0, "V6": -0.8, "II": 0.25}
    page = render_page(_levels(levels), FS, layout=layout, dpi=200)
    gray = cv2.cvtColor(page.image, cv2.COLOR_BGR2GRAY)
    assert page.px_per_mm == pytest.approx(200 / 25.4)
    for lead, mapping in page.leads.items():
        assert mapping.px_per_s == pytest.approx(25.0 * page.px_per_mm)
        assert mapping.px_per_mv == pytest.approx(10.0 * page.px_per_mm)
        # Middle of the panel, away from the label and the separators.
        t = (mapping.t0 + mapping.t1) / 2
        x, y = mapping.to_pixels(np.array([t]), np.array([levels.get(lead, 0.0)]))
        assert _ink_row(gray, x[0], y[0]) == pytest.approx(y[0], abs=0.6), lead


def test_lead_windows_follow_the_printed_layouts():
    page = render_page(_levels({}), FS, layout="3x4")
    assert (page.leads["aVR"].t0, page.leads["aVR"].t1) == (2.5, 5.0)
    assert (page.leads["V6"].t0, page.leads["V6"].t1) == (7.5, 10.0)
    assert page.leads["I"].baseline_y < page.leads["II"].baseline_y < page.leads["III"].baseline_y
    assert page.leads["aVL"].baseline_y == page.leads["II"].baseline_y
    assert page.rhythm is not None and (page.rhythm.t0, page.rhythm.t1) == (0.0, 10.0)
    page = render_page(_levels({}), FS, layout="6x2", rhythm=False)
    assert (page.leads["V1"].t0, page.leads["V1"].t1) == (5.0, 10.0)
    assert page.leads["aVF"].baseline_y == page.leads["V6"].baseline_y
    assert page.rhythm is None and not page.has_grid


@pytest.mark.parametrize(("layout", "template"), [("3x4", "3x4_grid"), ("6x2", "6x2_nogrid")])
def test_the_layout_finder_reads_rendered_pages_like_real_ones(layout, template):
    signals = printer_filter(np.random.default_rng(0).normal(0, 0.05, (12, 5000)), FS)
    page = render_page(signals, FS, layout=layout, dpi=200, seed=3)
    found = find_lead_panels(decode_image(page.image))
    assert found.template == template
    assert found.px_per_mm == pytest.approx(page.px_per_mm, rel=0.01)
    assert found.px_per_s == pytest.approx(page.leads["I"].px_per_s, rel=0.01)
    for lead in LEADS:
        assert found.panels[lead].baseline_y == pytest.approx(page.leads[lead].baseline_y, abs=1.5)
        assert (found.panels[lead].t0, found.panels[lead].t1) == (page.leads[lead].t0, page.leads[lead].t1)


def test_dpi_scales_the_page_and_the_mapping():
    small = render_page(_levels({}), FS, dpi=100)
    large = render_page(_levels({}), FS, dpi=300)
    assert large.image.shape[1] == pytest.approx(3 * small.image.shape[1], abs=2)
    assert large.leads["V4"].x0 == pytest.approx(3 * small.leads["V4"].x0)


def test_distortions_and_their_homography():
    base = render_page(_levels({}), FS, seed=1)
    tilted = render_page(_levels({}), FS, seed=1, distortions=Distortions(rotation_deg=2.0))
    h = tilted.homography
    assert h.shape == (3, 3) and not np.allclose(h, np.eye(3))
    # The page centre stays put; a point to its right moves up (counter-clockwise rotation).
    height, width = base.image.shape[:2]
    point = h @ np.array([width / 2 + 500, height / 2, 1.0])
    assert point[1] / point[2] < height / 2 - 15
    assert np.allclose(base.homography, np.eye(3))
    mild = Distortions.mild(np.random.default_rng(5))
    assert abs(mild.rotation_deg) <= 2 and mild.jpeg_quality == 50 and mild.blur_sigma > 0
    noisy = render_page(_levels({}), FS, seed=1, distortions=mild)
    assert noisy.image.shape == base.image.shape and not np.array_equal(noisy.image, base.image)


def test_nan_samples_are_not_drawn_and_short_records_leave_blank_paper():
    signals = np.zeros((12, 2500))  # 5 s
    page = render_page(signals, FS, layout="3x4", grid=False)
    assert np.isnan(page.signals[:, 2500:]).all() and page.signals.shape == (12, 5000)
    gray = cv2.cvtColor(page.image, cv2.COLOR_BGR2GRAY)
    m = page.leads["V4"]  # 7.5-10 s: nothing drawn
    x = int(m.x0 + 1.0 * m.px_per_s)
    assert gray[int(m.baseline_y) - 5 : int(m.baseline_y) + 5, x].min() > 200


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"\(12, N\)"):
        render_page(np.zeros((3, 100)), FS)
    with pytest.raises(ValueError, match="layout"):
        render_page(np.zeros((12, 100)), FS, layout="2x6")
    with pytest.raises(ValueError, match="dpi"):
        render_page(np.zeros((12, 100)), FS, dpi=10)


def test_printer_filter_removes_wander_and_high_frequencies():
    t = np.arange(5000) / FS
    drift = 1.0 + 0.5 * np.sin(2 * np.pi * 0.1 * t)
    tone = 0.3 * np.sin(2 * np.pi * 10 * t)
    hum = 0.3 * np.sin(2 * np.pi * 150 * t)
    out = printer_filter(drift + tone + hum, FS, low_hz=0.67, high_hz=40)
    assert abs(out.mean()) < 1e-6
    assert np.std(out - tone) < 0.08  # drift and 150 Hz mostly gone, 10 Hz kept
    assert np.std(out) == pytest.approx(np.std(tone), rel=0.1)


def test_load_record_reads_a_cinc_record_in_lead_order():
    require(CINC_DIR)
    signals, fs = load_record(CINC_DIR / "E07500.hea")
    assert fs == 500 and signals.shape == (12, 5000)
    assert np.abs(signals).max() < 20  # mV, not digital units
    # Einthoven: II = I + III (to the 1 uV resolution of the file).
    assert np.abs(signals[1] - signals[0] - signals[2]).max() < 0.02


def test_render_cli_writes_page_mapping_and_truth(tmp_path):
    np.save(tmp_path / "sig.npy", _levels({"II": 0.4}))
    out = tmp_path / "page.png"
    assert main(["render", str(tmp_path / "sig.npy"), "--fs", "500", "--out", str(out), "--layout", "6x2",
                 "--dpi", "150", "--rotate", "1"]) == 0
    image = cv2.imread(str(out))
    truth = json.loads(out.with_suffix(".json").read_text())
    assert image.shape[:2] == tuple(truth["page_size"])
    assert truth["layout"] == "6x2" and truth["distortions"]["rotation_deg"] == 1.0
    assert set(truth["leads"]) == set(LEADS) and truth["leads"]["V1"]["t0"] == 5.0
    saved = np.load(out.with_suffix(".truth.npz"))
    assert saved["signals"].shape == (12, 5000) and float(saved["fs"]) == 500.0
    assert main(["render", str(tmp_path / "sig.npy"), "--out", str(out)]) == 2  # .npy needs --fs


def test_render_dataset_cli(tmp_path):
    pytest.importorskip("wfdb")
    pytest.importorskip("neurokit2")
    import wfdb

    assert main(["render-dataset", "--out", str(tmp_path), "--simulate", "1", "--layouts", "6x2",
                 "--variants", "clean,mild", "--dpi", "100"]) == 0
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    assert lines[0].startswith("name,source,layout,variant") and len(lines) == 3
    record = wfdb.rdrecord(str(tmp_path / "truth" / "sim0000_6x2_mild"))
    assert record.sig_name == list(LEADS) and record.fs == 500
    assert (tmp_path / "images" / "sim0000_6x2_clean.png").is_file()
