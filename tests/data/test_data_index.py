"""Tests for ecgdx.data.index: folder labels, labels files, hashing, duplicates, conflicts, manifests."""

from __future__ import annotations

import csv
import importlib
import shutil
import sys
import types
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from realdata import DATA_DIR, DEV_DIR

from ecgdx.data import index
from ecgdx.data.index import (
    MANIFEST_COLUMNS,
    build_manifest,
    label_from_folder_name,
    label_from_folders,
    manifest_fingerprint,
    read_labels_file,
    read_manifest,
    write_manifest,
)
from ecgdx.data.split import SPLITS
from ecgdx.errors import DataError, InvalidImageError
from ecgdx.labels import CLASS_KEYS

V2_FOLDERS = {
    "Normal Person ECG Images (284x12=3408)": "normal",
    "ECG Images of Myocardial Infarction Patients (240x12=2880)": "mi",
    "ECG Images of Patient that have abnormal heartbeat (233x12=2796)": "abnormal_heartbeat",
    "ECG Images of Patient that have History of MI (172x12=2064)": "history_of_mi",
}
V1_FOLDERS = {
    "Normal Person ECG Images (859)": "normal",
    "ECG Images of Myocardial Infarction Patients (77)": "mi",
    "ECG Images of Patient that have abnormal heart beats (548)": "abnormal_heartbeat",
    "ECG Images of Patient that have History of MI (203)": "history_of_mi",
}
FILE_PREFIX = {"normal": "Normal", "mi": "MI", "abnormal_heartbeat": "HB", "history_of_mi": "PMI"}
COVID_FOLDER = "ECG Images of COVID-19 Patients (250)"

_counter = iter(range(1, 1_000_000))


@pytest.fixture(autouse=True)
def without_template_detection(monkeypatch):
    """Keep these tests independent of ecgdx.page.preprocessing: importing it raises ImportError.

    Tests about template detection install their own module (or restore the real one).
    """
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", None)


def write_image(path: Path, width: int = 80, height: int = 60) -> Path:
    """Write a small noise image (unique content per call) with the format given by the suffix."""
    rng = np.random.default_rng(next(_counter))
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix.lower(), pixels)
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def make_mendeley_tree(root: Path, folders: dict[str, str], per_class: int = 3) -> None:
    """Mendeley-style folders with files named like 'MI(1).jpg'."""
    for folder, label in folders.items():
        for i in range(1, per_class + 1):
            name = f"{FILE_PREFIX[label]}({i}).jpg"
            write_image(root / folder / name)


def collect_messages() -> tuple[list[str], Callable[[str], None]]:
    """A list that receives build_manifest's reports, and the reporter that fills it."""
    messages: list[str] = []
    return messages, messages.append


def labels_by_relpath(rows) -> dict[str, str]:
    return {row.relpath: row.label for row in rows}


# ---------------------------------------------------------------------------------------------
# Folder names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "label"), [*V2_FOLDERS.items(), *V1_FOLDERS.items()])
def test_both_mendeley_layouts_map_to_class_keys(folder, label):
    assert label_from_folder_name(folder) == label


@pytest.mark.parametrize("key", CLASS_KEYS)
def test_class_key_folders_map_to_themselves(key):
    assert label_from_folder_name(key) == key
    assert label_from_folder_name(key.upper()) == key


@pytest.mark.parametrize(
    ("folder", "label"),
    [
        ("history of MI", "history_of_mi"),
        ("ECG  Images of patient that have  HISTORY-OF-MI", "history_of_mi"),
        ("MI", "mi"),
        ("mi (12)", "mi"),
        ("Abnormal Heart-Beats", "abnormal_heartbeat"),
        ("abnormal", None),
        ("ECG Images of COVID-19 Patients (250)", None),
        ("COVID-19 patients with abnormal heartbeat", None),
        ("ECG Images dataset of Cardiac and COVID-19 Patients", None),
        ("ECG Images dataset of Cardiac Patients", None),
        ("misc", None),
        ("images", None),
        ("", None),
    ],
)
def test_folder_keywords_are_specific(folder, label):
    assert label_from_folder_name(folder) == label


def test_nearest_labelled_folder_wins_and_other_diagnosis_stops_the_search():
    dataset = "ECG Images dataset of Cardiac Patients"
    assert label_from_folders(f"{dataset}/Normal Person ECG Images (284x12=3408)/Normal(1).jpg") == "normal"
    assert label_from_folders("normal/history_of_mi/x.png") == "history_of_mi"
    assert label_from_folders("normal/COVID-19/x.png") is None
    assert label_from_folders("x.png") is None
    # The file name is not a folder: 'MI(1).jpg' alone labels nothing.
    assert label_from_folders("unsorted/MI(1).jpg") is None


@pytest.mark.parametrize("folders", [V2_FOLDERS, V1_FOLDERS], ids=["v2", "v1"])
def test_index_labels_both_layouts_and_skips_covid_and_unlabelled(tmp_path, folders):
    root = tmp_path / "ECG Images dataset of Cardiac Patients"
    make_mendeley_tree(root, folders, per_class=3)
    mi_folder = next(folder for folder, label in folders.items() if label == "mi")
    write_image(root / mi_folder / "MI (10).jpg")  # spaced name, as in the dataset
    write_image(root / COVID_FOLDER / "Binder1_Page_01.jpg")
    write_image(root / COVID_FOLDER / "Binder1_Page_02.jpg")
    write_image(root / "stray.png")
    messages, report = collect_messages()

    result = build_manifest(root, report=report)

    labels = labels_by_relpath(result.rows)
    assert Counter(labels.values()) == {"normal": 3, "mi": 4, "abnormal_heartbeat": 3, "history_of_mi": 3}
    for relpath, label in labels.items():
        assert folders[relpath.split("/")[0]] == label
    assert not any("COVID" in relpath for relpath in labels)
    text = "\n".join(messages)
    assert f"skipped 2 files in '{COVID_FOLDER}': not one of the 4 classes" in text
    assert "skipped 1 file in '.': not one of the 4 classes" in text
    assert result.label_source == "folder names"


def test_index_reads_class_key_folders_and_image_facts(tmp_path):
    for key in CLASS_KEYS:
        write_image(tmp_path / key / "a.png", width=80, height=60)
        write_image(tmp_path / key / "nested" / "B.JPG", width=50, height=40)
    write_image(tmp_path / "normal" / "c.Jpeg")
    write_image(tmp_path / "normal" / "d.webp")
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / "normal" / "._a.png").write_bytes(b"macOS resource fork")

    result = build_manifest(tmp_path, report=lambda message: None)

    assert len(result.rows) == 2 * len(CLASS_KEYS) + 2
    row = next(row for row in result.rows if row.relpath == "mi/a.png")
    assert (row.width, row.height) == (80, 60)
    assert row.bytes == (tmp_path / "mi" / "a.png").stat().st_size
    assert row.path == str((tmp_path / "mi" / "a.png").resolve())
    assert len(row.sha256) == 64 and len(row.md5) == 32
    assert row.group == row.sha256[:16]
    nested = next(row for row in result.rows if row.relpath == "mi/nested/B.JPG")
    assert (nested.width, nested.height) == (50, 40)
    assert nested.label == "mi"
    assert all(row.split in SPLITS for row in result.rows)


def test_hashes_match_hashlib(tmp_path):
    import hashlib

    path = write_image(tmp_path / "x.png")
    data = path.read_bytes()
    assert index.hash_file(path) == (
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
        len(data),
    )


def test_unreadable_images_are_reported_and_left_out(tmp_path):
    write_image(tmp_path / "normal" / "good.png")
    (tmp_path / "normal" / "garbage.png").write_bytes(b"this is not a png")
    (tmp_path / "normal" / "empty.jpg").write_bytes(b"")
    truncated = write_image(tmp_path / "mi" / "whole.jpg").read_bytes()
    (tmp_path / "mi" / "truncated.jpg").write_bytes(truncated[:40])
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report)

    assert sorted(row.relpath for row in result.rows) == ["mi/whole.jpg", "normal/good.png"]
    text = "\n".join(messages)
    assert "skipped 2 files in 'normal': unreadable image" in text
    assert "skipped 1 file in 'mi': unreadable image" in text
    assert "truncated.jpg" in text


# ---------------------------------------------------------------------------------------------
# Labels files
# ---------------------------------------------------------------------------------------------


def write_labels(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(rows[0])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_labels_csv_in_folder_is_used_with_its_templates(tmp_path):
    folder = next(iter(V1_FOLDERS))
    make_mendeley_tree(tmp_path, {folder: "normal"}, per_class=4)
    write_image(tmp_path / "loose" / "x.png")
    write_labels(
        tmp_path / "labels.csv",
        [
            {"file": f"{folder}/Normal(1).jpg", "label": "normal", "template": "3x4_grid"},
            {"file": f"{folder}/Normal(2).jpg", "label": "mi", "template": "6x2_nogrid"},
            {"file": f"{folder}\\Normal(3).jpg", "label": "history_of_mi", "template": ""},
            {"file": "loose/x.png", "label": "abnormal_heartbeat", "template": "3x4_grid"},
            {"file": "gone/missing.png", "label": "normal", "template": "3x4_grid"},
        ],
    )
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report)

    by_relpath = {row.relpath: row for row in result.rows}
    # The labels file wins over the folder name.
    assert by_relpath[f"{folder}/Normal(2).jpg"].label == "mi"
    assert by_relpath[f"{folder}/Normal(2).jpg"].template == "6x2_nogrid"
    assert by_relpath[f"{folder}/Normal(3).jpg"].label == "history_of_mi"
    assert by_relpath["loose/x.png"].label == "abnormal_heartbeat"
    assert f"{folder}/Normal(4).jpg" not in by_relpath
    text = "\n".join(messages)
    assert "using labels from" in text and "labels.csv" in text
    assert f"skipped 1 file in '{folder}': not listed in labels.csv" in text
    assert "1 file(s) listed in labels.csv not found" in text


def test_explicit_labels_file_overrides_the_one_in_the_folder(tmp_path):
    write_image(tmp_path / "normal" / "a.png")
    write_labels(tmp_path / "labels.csv", [{"file": "normal/a.png", "label": "normal"}])
    explicit = write_labels(
        tmp_path.parent / f"{tmp_path.name}-other.csv", [{"file": "normal/a.png", "label": "mi"}]
    )

    result = build_manifest(tmp_path, labels_path=explicit, report=lambda message: None)

    assert [row.label for row in result.rows] == ["mi"]
    assert result.label_source == str(explicit)


def test_bad_label_in_labels_file_names_value_and_line(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    labels = write_labels(
        tmp_path / "mine.csv",
        [{"file": "a.png", "label": "normal"}, {"file": "b.png", "label": "heart failure"}],
    )
    with pytest.raises(DataError, match=r"line 3: label 'heart failure'"):
        build_manifest(tmp_path, labels_path=labels, report=lambda message: None)


def test_other_diagnosis_label_is_skipped_and_reported(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    labels = write_labels(
        tmp_path / "mine.csv", [{"file": "a.png", "label": "mi"}, {"file": "b.png", "label": "COVID-19"}]
    )
    messages, report = collect_messages()

    result = build_manifest(tmp_path, labels_path=labels, report=report)

    assert [row.relpath for row in result.rows] == ["a.png"]
    assert "skipped 1 file in '.': labelled as another diagnosis in mine.csv" in messages


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"path": "a.png", "label": "mi"}], "missing column"),
        ([{"file": "a.png", "label": "mi", "template": "12x1"}], "line 2: template '12x1'"),
        ([{"file": "a.png", "label": "mi"}, {"file": "a.png", "label": "normal"}], "listed again"),
        ([{"file": "", "label": "mi"}], "line 2: empty 'file'"),
    ],
)
def test_invalid_labels_files_are_errors(tmp_path, rows, message):
    labels = write_labels(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError, match=message):
        read_labels_file(labels)


def test_missing_labels_file_and_missing_folder_are_errors(tmp_path):
    with pytest.raises(DataError, match="labels file not found"):
        build_manifest(tmp_path, labels_path=tmp_path / "nope.csv", report=lambda message: None)
    with pytest.raises(DataError, match="data folder not found"):
        build_manifest(tmp_path / "nope", report=lambda message: None)


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------


def test_template_is_unknown_when_preprocessing_cannot_be_imported(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", None)  # makes the import raise ImportError
    write_image(tmp_path / "mi" / "a.png")
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report)

    assert [row.template for row in result.rows] == ["unknown"]
    assert any("template detection unavailable" in message for message in messages)


def test_template_is_unknown_when_preprocessing_lacks_the_functions(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", types.ModuleType("ecgdx.page.preprocessing"))
    write_image(tmp_path / "mi" / "a.png")
    assert [row.template for row in build_manifest(tmp_path, report=lambda m: None).rows] == ["unknown"]


def test_template_detection_is_used_only_without_a_labels_template(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("ecgdx.page.preprocessing")
    fake.decode_image = lambda path: calls.append(Path(path).name) or np.zeros((60, 80), np.uint8)
    fake.detect_template = lambda gray: "6x2_nogrid"
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", fake)
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    write_labels(
        tmp_path / "labels.csv",
        [
            {"file": "a.png", "label": "mi", "template": "3x4_grid"},
            {"file": "b.png", "label": "mi", "template": ""},
        ],
    )

    result = build_manifest(tmp_path, report=lambda message: None)

    assert {row.relpath: row.template for row in result.rows} == {"a.png": "3x4_grid", "b.png": "6x2_nogrid"}
    assert calls == ["b.png"]


def test_images_refused_by_preprocessing_are_reported_and_left_out(tmp_path, monkeypatch):
    fake = types.ModuleType("ecgdx.page.preprocessing")

    def decode_image(path):
        if Path(path).name == "tiny.png":
            raise InvalidImageError("the image is only 80x60 pixels")
        return np.zeros((60, 80), np.uint8)

    fake.decode_image = decode_image
    fake.detect_template = lambda gray: "3x4_grid"
    monkeypatch.setitem(sys.modules, "ecgdx.page.preprocessing", fake)
    write_image(tmp_path / "mi" / "tiny.png")
    write_image(tmp_path / "mi" / "page.png")
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report)

    assert [(row.relpath, row.template) for row in result.rows] == [("mi/page.png", "3x4_grid")]
    assert "skipped 1 file in 'mi': refused by ecgdx.page.preprocessing" in messages


def test_with_the_real_preprocessing_module(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "ecgdx.page.preprocessing")
    try:
        importlib.import_module("ecgdx.page.preprocessing")
    except ImportError:
        pytest.skip("ecgdx.page.preprocessing not available yet")
    write_image(tmp_path / "mi" / "page.png", width=400, height=300)
    write_image(tmp_path / "mi" / "tiny.png", width=20, height=15)

    result = build_manifest(tmp_path, report=lambda message: None)

    assert [row.relpath for row in result.rows] == ["mi/page.png"]
    assert result.rows[0].template in index.VALID_TEMPLATES
    assert result.skipped == [("mi/tiny.png", "refused by ecgdx.page.preprocessing")]


# ---------------------------------------------------------------------------------------------
# Duplicates, conflicts, splits
# ---------------------------------------------------------------------------------------------


def test_identical_files_share_a_group_and_a_split(tmp_path):
    # Many duplicate groups, so a splitter that ignored groups would almost surely separate copies.
    for key in CLASS_KEYS:
        for i in range(12):
            original = write_image(tmp_path / key / f"{i}.png")
            for copy in range(i % 3):  # 0, 1 or 2 extra copies
                copy_folder = tmp_path / key / f"copies{copy}"
                copy_folder.mkdir(exist_ok=True)
                shutil.copyfile(original, copy_folder / f"{i}.png")
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report, seed=4)

    splits_by_hash = defaultdict(set)
    groups_by_hash = defaultdict(set)
    for row in result.rows:
        splits_by_hash[row.sha256].add(row.split)
        groups_by_hash[row.sha256].add(row.group)
    assert len(result.rows) == 4 * (12 + 4 * 1 + 4 * 2)
    assert all(len(splits) == 1 for splits in splits_by_hash.values())
    assert all(len(groups) == 1 for groups in groups_by_hash.values())
    assert len({group for groups in groups_by_hash.values() for group in groups}) == 4 * 12
    assert index.hashes_shared_between_splits(result.rows) == []
    assert index.duplicate_stats(result.rows) == (4 * 8, 4 * 12)
    assert "32 duplicate group(s), 48 extra copies" in "\n".join(messages)
    # Every class has 12 groups, so every class reaches every split.
    for key in CLASS_KEYS:
        assert {row.split for row in result.rows if row.label == key} == set(SPLITS)


def test_same_bytes_under_two_labels_is_a_conflict_left_out(tmp_path):
    original = write_image(tmp_path / "normal" / "shared.png")
    (tmp_path / "mi").mkdir()
    shutil.copyfile(original, tmp_path / "mi" / "shared-copy.png")
    duplicate = write_image(tmp_path / "mi" / "dup.png")
    shutil.copyfile(duplicate, tmp_path / "mi" / "dup-copy.png")
    write_image(tmp_path / "normal" / "fine.png")
    messages, report = collect_messages()

    result = build_manifest(tmp_path, report=report)

    assert sorted(row.relpath for row in result.rows) == ["mi/dup-copy.png", "mi/dup.png", "normal/fine.png"]
    assert sorted((c.relpath, c.label) for c in result.conflicts) == [
        ("mi/shared-copy.png", "mi"),
        ("normal/shared.png", "normal"),
    ]
    assert len({c.group for c in result.conflicts}) == 1
    text = "\n".join(messages)
    assert "CONFLICT: 1 group(s)" in text and "mi/shared-copy.png" in text


def test_index_is_deterministic_and_seed_changes_split(tmp_path):
    for key in CLASS_KEYS:
        for i in range(10):
            write_image(tmp_path / key / f"{i}.png")
    quiet = {"report": lambda message: None}
    first = build_manifest(tmp_path, seed=0, **quiet).rows
    again = build_manifest(tmp_path, seed=0, workers=1, **quiet).rows
    other = build_manifest(tmp_path, seed=1, **quiet).rows
    assert first == again
    assert [row.split for row in first] != [row.split for row in other]


def test_ratios_are_validated(tmp_path):
    write_image(tmp_path / "mi" / "a.png")
    with pytest.raises(ValueError, match="sum to 1"):
        build_manifest(tmp_path, ratios=(0.7, 0.3, 0.3), report=lambda message: None)


# ---------------------------------------------------------------------------------------------
# Manifest files
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def indexed(tmp_path):
    data = tmp_path / "data"
    for key in CLASS_KEYS:
        for i in range(4):
            write_image(data / key / f"{i}.png")
    rows = build_manifest(data, report=lambda message: None).rows
    manifest = tmp_path / "out" / "manifest.csv"
    write_manifest(rows, manifest)
    return data, manifest, rows


def test_manifest_round_trip_and_exact_columns(indexed):
    _, manifest, rows = indexed
    with manifest.open(newline="") as handle:
        assert next(csv.reader(handle)) == list(MANIFEST_COLUMNS)
    assert MANIFEST_COLUMNS == (
        "path", "relpath", "label", "template", "sha256", "md5", "width", "height", "bytes", "group", "split",
    )  # fmt: skip
    assert read_manifest(manifest) == sorted(rows, key=lambda row: row.relpath)
    assert isinstance(read_manifest(manifest)[0].width, int)


def rewrite_manifest(manifest: Path, change) -> None:
    with manifest.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    columns = list(records[0])
    change(records, columns)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda records, columns: columns.remove("sha256"), "missing column"),
        (lambda records, columns: records[1].update(label="covid"), "line 3: label 'covid'"),
        (lambda records, columns: records[0].update(split="holdout"), "line 2: split 'holdout'"),
        (lambda records, columns: records[0].update(template="1x12"), "template '1x12'"),
        (lambda records, columns: records[2].update(width="wide"), "line 4: width 'wide'"),
        (lambda records, columns: records[0].update(sha256="abc"), "sha256 'abc'"),
    ],
)
def test_read_manifest_reports_invalid_content(indexed, change, message):
    _, manifest, _ = indexed
    rewrite_manifest(manifest, change)
    with pytest.raises(DataError, match=message):
        read_manifest(manifest)


def test_read_manifest_of_missing_file(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")


def test_fingerprint_ignores_location_but_not_labels_or_splits(indexed, tmp_path):
    data, _, rows = indexed
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(data, moved)
    moved_rows = build_manifest(moved, report=lambda message: None).rows
    assert [row.path for row in moved_rows] != [row.path for row in rows]
    assert manifest_fingerprint(moved_rows) == manifest_fingerprint(rows)
    assert manifest_fingerprint(reversed(rows)) == manifest_fingerprint(rows)

    import dataclasses

    relabelled = [dataclasses.replace(rows[0], label="mi" if rows[0].label != "mi" else "normal"), *rows[1:]]
    resplit = [dataclasses.replace(rows[0], split="test" if rows[0].split != "test" else "train"), *rows[1:]]
    assert manifest_fingerprint(relabelled) != manifest_fingerprint(rows)
    assert manifest_fingerprint(resplit) != manifest_fingerprint(rows)


def test_conflicts_sidecar_round_trip(tmp_path):
    manifest = tmp_path / "m.csv"
    assert index.conflicts_path_for(manifest) == tmp_path / "m.conflicts.csv"
    assert index.read_conflicts(manifest) is None
    conflicts = [
        index.ConflictRow("a.png", "mi", "0" * 64, "0" * 16),
        index.ConflictRow("b.png", "normal", "0" * 64, "0" * 16),
    ]
    index.write_conflicts(conflicts, manifest)
    assert index.read_conflicts(manifest) == conflicts
    index.write_conflicts([], manifest)
    assert index.read_conflicts(manifest) == []


# ---------------------------------------------------------------------------------------------
# Real data (shared/data/mendeley-v1-dev): skipped only when the folder is absent
# ---------------------------------------------------------------------------------------------

REAL_DATA_DIR = DATA_DIR
REAL_DEV = DEV_DIR


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DEV.is_dir(), reason=f"real data not found at {REAL_DEV}")
def test_real_mendeley_v1_dev_index():
    messages, report = collect_messages()
    result = build_manifest(REAL_DEV, report=report)
    rows = result.rows

    assert len(rows) == 1190
    assert Counter(row.label for row in rows) == {
        "normal": 716,
        "mi": 45,
        "abnormal_heartbeat": 313,
        "history_of_mi": 116,
    }
    assert result.conflicts == []
    assert any("using labels from" in message for message in messages)
    with (REAL_DEV / "labels.csv").open(newline="") as handle:
        expected = {
            record["file"]: (record["label"], record["template"]) for record in csv.DictReader(handle)
        }
    assert {row.relpath: (row.label, row.template) for row in rows} == expected
    assert index.hashes_shared_between_splits(rows) == []
    strata = {(row.label, row.template) for row in rows}
    assert len(strata) == 7
    for stratum in strata:
        assert {row.split for row in rows if (row.label, row.template) == stratum} == set(SPLITS), stratum
