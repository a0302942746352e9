"""The bundled default model: loads without torch, reads every example page, and its metadata
matches the headline numbers in MODEL_CARD.md (which `ecgdx evaluate` produced)."""

import re
from pathlib import Path

import pytest
from realdata import DATA_DIR, FULLRES_DIR

from ecgdx.export import read_model_metadata
from ecgdx.inference import Predictor, default_model_path
from ecgdx.labels import CLASS_KEYS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.png"))


def _card_headline() -> dict[str, float]:
    text = (ROOT / "MODEL_CARD.md").read_text()
    section = text.split("### Headline", 1)[1].split("| | value", 1)[0]
    return {name: float(value) for name, value in re.findall(r"^\| (\w+) \| ([0-9.]+) \|$", section, re.M)}


def test_bundled_model_is_present_and_small():
    path = Path(default_model_path())
    assert path.is_file()
    assert path.stat().st_size < 16 * 2**20  # EfficientNet-Lite0: 12.8 MiB


def test_bundled_model_metadata_matches_the_model_card():
    meta = read_model_metadata(default_model_path())
    assert list(meta["classes"]) == list(CLASS_KEYS)
    card = _card_headline()
    assert set(card) == {"accuracy", "macro_f1", "balanced_accuracy", "ece", "mi_sensitivity"}
    for name, value in card.items():
        assert round(meta["test_metrics"][name], 3) == pytest.approx(value, abs=1e-9), name
    assert meta["model_version"] in (ROOT / "MODEL_CARD.md").read_text()
    assert meta["data_fingerprint"] in (ROOT / "MODEL_CARD.md").read_text()


def test_bundled_model_reads_every_example_page():
    predictor = Predictor()
    assert len(EXAMPLES) == 4
    for path in EXAMPLES:
        prediction = predictor.predict(path)
        assert prediction.gate.ok, (path, prediction.gate.reasons)
        assert prediction.label in CLASS_KEYS
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.preprocess["layout_method"] == "canonical"


def test_bundled_model_gives_the_stored_golden_outputs_on_the_examples():
    """Not that the answers are right (the examples were chosen without looking at them, see
    examples/README.md), but that the bundled pipeline still gives what it gave when it shipped.
    Regenerate with `ecgdx predict examples --format csv --output examples/golden.csv` when the
    model changes on purpose."""
    import csv

    with open(ROOT / "examples" / "golden.csv", newline="") as handle:
        golden = {row["path"]: row for row in csv.DictReader(handle)}
    assert sorted(golden) == sorted(str(p.relative_to(ROOT)) for p in EXAMPLES)
    predictor = Predictor()
    for path in EXAMPLES:
        row = golden[str(path.relative_to(ROOT))]
        prediction = predictor.predict(path)
        assert prediction.model_version == row["model_version"], path
        assert prediction.label == row["label"], path
        for key in CLASS_KEYS:
            assert prediction.probabilities[key] == pytest.approx(float(row[f"prob_{key}"]), abs=2e-4), (path, key)
            assert prediction.balanced_probabilities[key] == pytest.approx(float(row[f"balanced_{key}"]),
                                                                           abs=2e-4), (path, key)


def test_bundled_model_weighs_the_st_elevation_finding_and_gives_the_stored_golden_outputs(capsys):
    """The bundled model's whole decision, as the web app makes it: the examples digitised, their
    ST-elevation finding weighed. Regenerate with `ecgdx predict examples --measure --format csv
    --output examples/golden-measured.csv` when the model or the measurements change on purpose."""
    import csv
    import io

    pytest.importorskip("neurokit2")
    from ecgdx.cli import main

    assert Predictor().uses_measurements
    with open(ROOT / "examples" / "golden-measured.csv", newline="") as handle:
        golden = {row["path"]: row for row in csv.DictReader(handle)}
    assert main(["predict", str(ROOT / "examples"), "--measure", "--format", "csv"]) == 0
    rows = {str(Path(r["path"]).resolve().relative_to(ROOT)): r
            for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert sorted(rows) == sorted(golden) == sorted(str(p.relative_to(ROOT)) for p in EXAMPLES)
    for name, row in rows.items():
        want = golden[name]
        assert row["st_elevation_criteria"] == want["st_elevation_criteria"] != "", name
        assert row["decided_from"] == "picture and measured ST segments", name
        assert (row["label"], row["model_version"]) == (want["label"], want["model_version"]), name
        for key in CLASS_KEYS:
            for prefix in ("prob_", "balanced_"):
                assert float(row[prefix + key]) == pytest.approx(float(want[prefix + key]), abs=2e-4), (name, key)


@pytest.mark.skipif(not FULLRES_DIR.is_dir(), reason=f"data folder {FULLRES_DIR} not found (set ECGDX_DATA_DIR)")
def test_full_resolution_colour_jpeg_gets_the_same_answer_as_its_png_twin():
    """What users upload (2213x1572 colour JPEG) against what the model was trained on (50 % gray PNG)."""
    import csv

    predictor = Predictor()
    with open(FULLRES_DIR / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 11
    gaps = []
    for row in rows:
        jpeg = predictor.predict(FULLRES_DIR / row["file"])
        png = predictor.predict(DATA_DIR / row["same_ecg_as"])
        assert jpeg.label == png.label, row["file"]
        gaps.append(max(abs(jpeg.probabilities[k] - png.probabilities[k]) for k in CLASS_KEYS))
    assert max(gaps) < 0.02, gaps  # measured: 0.003 at most
