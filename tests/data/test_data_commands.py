"""Tests for `ecgdx data index` / `ecgdx data report` (ecgdx.data.commands), through argparse."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ecgdx.data.commands import register
from ecgdx.labels import CLASS_KEYS

MANIFEST_HEADER = "path,relpath,label,template,sha256,md5,width,height,bytes,group,split"


@pytest.fixture(autouse=True)
def without_template_detection(monkeypatch):
    """Templates stay 'unknown' whatever ecgdx.page.preprocessing does: these tests are about the CLI."""
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", None)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ecgdx")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(list(argv))
    return args.func(args)


def write_image(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(60, 80), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    """4 class folders x 5 images, one duplicate pair, one label conflict and a COVID folder."""
    root = tmp_path / "data"
    seed = 0
    for key in CLASS_KEYS:
        for i in range(5):
            seed += 1
            write_image(root / key / f"{i}.png", seed)
    shutil.copyfile(root / "mi" / "0.png", root / "mi" / "0-copy.png")
    shutil.copyfile(root / "normal" / "1.png", root / "history_of_mi" / "from-normal.png")
    write_image(root / "ECG Images of COVID-19 Patients" / "c.png", 999)
    return root


def test_index_then_report_text(data_dir, tmp_path, capsys):
    manifest = tmp_path / "out" / "manifest.csv"
    assert run_cli("data", "index", str(data_dir), "--out", str(manifest)) == 0
    index_err = capsys.readouterr().err
    assert "skipped 1 file in 'ECG Images of COVID-19 Patients': not one of the 4 classes" in index_err
    assert "CONFLICT" in index_err
    assert manifest.read_text().splitlines()[0] == MANIFEST_HEADER
    with manifest.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 20 - 1 + 1  # 20 images, minus normal/1.png (conflict), plus the mi copy
    assert {record["relpath"] for record in records}.isdisjoint(
        {"normal/1.png", "history_of_mi/from-normal.png"}
    )
    assert (tmp_path / "out" / "manifest.conflicts.csv").is_file()

    assert run_cli("data", "report", str(manifest)) == 0
    out = capsys.readouterr().out
    assert "hashes shared between splits: 0" in out
    assert "duplicate groups: 1  extra copies: 1" in out
    assert "conflicts: 1 group(s), 2 file(s) left out" in out
    assert "history_of_mi/from-normal.png" in out
    lines = out.splitlines()
    # per-class rows: mi has 6 rows in 5 groups; normal lost its conflicting image.
    assert any(line.split() == ["mi", "6", "5"] for line in lines)
    assert any(line.split() == ["normal", "4", "4"] for line in lines)
    assert "class x template" in out and "class x split" in out
    assert any(line.split() == ["mi", "0", "0", "6"] for line in lines)  # templates: all unknown here


def test_report_json(data_dir, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    assert run_cli("data", "index", str(data_dir), "--out", str(manifest), "--seed", "3") == 0
    capsys.readouterr()
    assert run_cli("data", "report", str(manifest), "--format", "json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 20
    assert list(summary["classes"]) == list(CLASS_KEYS)
    assert summary["classes"]["mi"] == {
        "rows": 6,
        "groups": 5,
        "templates": {"3x4_grid": 0, "6x2_nogrid": 0, "unknown": 6},
        "splits": summary["classes"]["mi"]["splits"],
    }
    assert sum(summary["classes"]["mi"]["splits"].values()) == 6
    assert summary["duplicates"] == {"groups": 1, "extra_copies": 1}
    assert summary["conflicts"]["groups"] == 1
    assert summary["hashes_shared_between_splits"] == 0
    assert len(summary["fingerprint"]) == 64


def test_report_flags_hashes_shared_between_splits(data_dir, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    assert run_cli("data", "index", str(data_dir), "--out", str(manifest)) == 0
    with manifest.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    copy = next(record for record in records if record["relpath"] == "mi/0-copy.png")
    copy["split"] = "test" if copy["split"] != "test" else "train"  # simulate a leaky split
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (tmp_path / "manifest.conflicts.csv").unlink()
    capsys.readouterr()

    assert run_cli("data", "report", str(manifest)) == 1
    out = capsys.readouterr().out
    assert "hashes shared between splits: 1" in out
    assert copy["sha256"] in out
    assert "conflicts: not recorded" in out


def test_index_exit_codes(data_dir, tmp_path, capsys):
    out = str(tmp_path / "m.csv")
    assert run_cli("data", "index", str(tmp_path / "missing"), "--out", out) == 1
    assert "data folder not found" in capsys.readouterr().err
    assert run_cli("data", "index", str(data_dir), "--out", out, "--split-ratios", "0.7,0.3,0.3") == 2
    assert "sum to 1" in capsys.readouterr().err
    assert run_cli("data", "index", str(data_dir), "--out", out, "--split-ratios", "0.7,0.3") == 2

    bad_labels = tmp_path / "bad.csv"
    bad_labels.write_text("file,label\nmi/0.png,mi\nmi/1.png,angina\n")
    assert run_cli("data", "index", str(data_dir), "--out", out, "--labels", str(bad_labels)) == 1
    assert "line 3: label 'angina'" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("data", "index", str(empty), "--out", out) == 1
    assert "no labelled images" in capsys.readouterr().err
    assert not Path(out).exists()


def test_report_exit_codes(tmp_path, capsys):
    assert run_cli("data", "report", str(tmp_path / "none.csv")) == 1
    assert "manifest not found" in capsys.readouterr().err
    not_a_manifest = tmp_path / "labels.csv"
    not_a_manifest.write_text("file,label\na.png,mi\n")
    assert run_cli("data", "report", str(not_a_manifest)) == 1
    assert "missing column" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["data"], ["data", "index", "dir"], ["data", "report", "m.csv", "--format", "xml"], ["data", "nope"]],
)
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as raised:
        run_cli(*argv)
    assert raised.value.code == 2


def test_commands_module_imports_only_the_standard_library():
    code = (
        "import sys, ecgdx.data.commands; print(sorted({'numpy', 'cv2', 'tqdm', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
