"""`ecgdx predict` and `ecgdx model info`: formats, path joining, per-file errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")  # exporting the test model needs torch

from synthetic import make_page  # noqa: E402
from test_export import export_tiny_model  # noqa: E402

from ecgdx import inference  # noqa: E402
from ecgdx.cli import main  # noqa: E402
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES  # noqa: E402

HEADER = ["path", "label", "prob_normal", "prob_mi", "prob_abnormal_heartbeat", "prob_history_of_mi"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(export_tiny_model(tmp_path_factory.mktemp("cli-model")))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """scans/a.png, scans/sub/b.jpg (ECG pages), scans/notes.txt (ignored), scans/sub/blank.png (no ECG)."""
    root = tmp_path_factory.mktemp("cli") / "scans"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), make_page("3x4_grid", seed=21).image)
    cv2.imwrite(str(root / "sub" / "b.jpg"), make_page("6x2_nogrid", seed=22).image)
    cv2.imwrite(str(root / "sub" / "blank.png"), np.full((786, 1106), 245, np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_header_and_folder_path_joining(model, folder, tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = main(["predict", str(folder), "--model", model, "--format", "csv", "--output", str(out)])
    assert code == 0
    text = out.read_text()
    header = text.splitlines()[0].split(",")
    assert header[:6] == HEADER
    assert {"gate_ok", "gate_score", "error", "model_version"} <= set(header[6:])
    rows = _csv_rows(text)
    assert [r["path"] for r in rows] == [
        os.path.join(str(folder), "a.png"),
        os.path.join(str(folder), "sub/b.jpg"),
        os.path.join(str(folder), "sub/blank.png"),
    ]
    a, b, blank = rows
    assert a["label"] in CLASS_KEYS and a["gate_ok"] == "true" and not a["error"]
    assert sum(float(a[c]) for c in HEADER[2:]) == pytest.approx(1.0, abs=1e-5)
    assert blank["label"] == "" and blank["gate_ok"] == "false" and blank["prob_mi"] == ""
    assert "does not look like a 12-lead ECG page" in capsys.readouterr().err


def test_relative_folder_paths_keep_the_form_given(model, folder, monkeypatch, capsys):
    monkeypatch.chdir(folder.parent)
    assert main(["predict", "scans/sub", "--model", model, "--format", "csv"]) == 0
    paths = [r["path"] for r in _csv_rows(capsys.readouterr().out)]
    assert paths == [os.path.join("scans/sub", "b.jpg"), os.path.join("scans/sub", "blank.png")]


def test_json_format(model, folder, capsys):
    assert main(["predict", str(folder / "a.png"), "--model", model, "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["path"] == str(folder / "a.png") and row["error"] is None
    assert set(row["probabilities"]) == set(CLASS_KEYS) and row["gate"]["ok"] is True
    assert row["model_version"].startswith("seed_cnn-") and "timings_ms" in row


def test_table_format(model, folder, capsys):
    assert main(["predict", str(folder / "a.png"), str(folder / "sub" / "blank.png"), "--model", model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(name in lines[0] for name in DISPLAY_NAMES.values())
    assert lines[1].count("%") == 4 and "not an ECG page" in lines[2]
    # Columns are aligned: the diagnosis starts under its header in every row.
    assert lines[0].index("diagnosis") == lines[1].index(lines[1].split()[1]) == lines[2].index("not an ECG")


def test_force_classifies_refused_pictures(model, folder, capsys):
    assert main(["predict", str(folder / "sub" / "blank.png"), "--model", model, "--format", "csv", "--force"]) == 0
    [row] = _csv_rows(capsys.readouterr().out)
    assert row["label"] in CLASS_KEYS and row["forced"] == "true" and row["gate_ok"] == "false"


def test_exit_codes(model, folder, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    assert main(["predict", str(bad), str(tmp_path / "missing.jpg"), "--model", model, "--format", "csv"]) == 1
    captured = capsys.readouterr()
    rows = _csv_rows(captured.out)
    assert all(r["error"] and not r["label"] for r in rows) and len(rows) == 2
    assert "bad.png" in captured.err and "missing.jpg" in captured.err
    code = main(["predict", str(bad), str(folder / "a.png"), "--model", model, "--format", "csv"])
    assert code == 0
    rows = _csv_rows(capsys.readouterr().out)
    assert rows[0]["error"] and rows[1]["label"] in CLASS_KEYS
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--model", model]) == 1


def test_explain_writes_pngs(model, folder, tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["predict", str(folder), "--model", model, "--format", "json", "--explain", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out)
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2  # the blank page gets no diagnosis, hence nothing to explain
    for row in rows[:2]:
        image = cv2.imread(row["explanation_png"])
        assert image is not None and image.shape[2] == 3
        assert row["explanation"]["method"] == "occlusion"


def test_explanation_title_shows_the_tables_percentages(folder, tmp_path, capsys, monkeypatch):
    """With the bundled model (a decision rule: the table shows balanced-prior percentages), the
    overlay's title gets the same percentages as the table, not the data-mix ones."""
    from ecgdx import explain

    drawn = []
    real_write = explain.write_overlay
    monkeypatch.setattr(explain, "write_overlay",
                        lambda path, e, probabilities=None, title=None: drawn.append(probabilities)
                        or real_write(path, e, probabilities, title))
    assert main(["predict", str(folder / "a.png"), "--format", "json", "--explain", str(tmp_path)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["balanced_probabilities"] and row["balanced_probabilities"] != row["probabilities"]
    assert drawn == [row["balanced_probabilities"]]


def test_model_info(model, capsys, monkeypatch):
    assert main(["model", "info", model]) == 0
    text = capsys.readouterr().out
    for word in ("version:", "seed_cnn-", "classes:", "normal (Normal)", "preprocessing:", "96x96",
                 "temperature:", "1.5000", "test metrics:", "macro_f1", "data fingerprint:"):
        assert word in text
    assert main(["model", "info", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["temperature"] == 1.5
    monkeypatch.setenv(inference.MODEL_ENV, model)
    assert main(["model", "info"]) == 0
    assert model in capsys.readouterr().out
    monkeypatch.delenv(inference.MODEL_ENV)
    monkeypatch.setattr(inference, "BUNDLED_MODEL", "assets/no-such-model.onnx")
    assert main(["model", "info"]) == 2
    assert "ECGDX_MODEL_PATH" in capsys.readouterr().err


def test_measure_weighs_the_st_elevation_finding_into_the_decision(model, folder, tmp_path, capsys):
    pytest.importorskip("neurokit2")
    from ecgdx.decision import DecisionRule
    from ecgdx.inference import Predictor

    rule = tmp_path / "rule.json"
    # An extreme rate table, so that the finding visibly moves the decision.
    rule.write_text(DecisionRule(name="balanced_prior", st_elevation_rates=[0.01, 0.99, 0.01, 0.01]).to_json())
    measuring = tmp_path / "measuring.onnx"
    assert main(["model", "set-rule", model, "--decision-rule", str(rule), "--out", str(measuring)]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(measuring)]) == 0
    assert "99 % of the development pages with a myocardial infarction" in capsys.readouterr().out
    assert main(["predict", str(folder), "--model", str(measuring), "--format", "csv", "--measure"]) == 0
    rows = {Path(r["path"]).name: r for r in _csv_rows(capsys.readouterr().out)}
    predictor = Predictor.from_path(measuring)
    for name in ("a.png", "b.jpg"):
        row = rows[name]
        assert row["st_elevation_criteria"] in ("true", "false") and row["measure_error"] == ""
        assert row["decided_from"] == "picture and measured ST segments"
        met = row["st_elevation_criteria"] == "true"
        alone = predictor.predict(str(folder / ("a.png" if name == "a.png" else "sub/b.jpg")))
        assert row["label"] == predictor.with_st_elevation(alone, met).label
        assert float(row["balanced_mi"]) == pytest.approx(
            predictor.with_st_elevation(alone, met).balanced_probabilities["mi"], abs=1e-6)
    blank = rows["blank.png"]
    assert blank["label"] == "" and blank["st_elevation_criteria"] == "" and "not digitised" in blank["measure_error"]
