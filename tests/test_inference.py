"""Predictor: torch-free ONNX inference with calibrated probabilities, batching and the quality gate."""

from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")  # exporting the test model needs torch; inference itself does not

from synthetic import make_page  # noqa: E402
from test_export import TINY_SPEC, TINY_TEMPERATURE, export_tiny_model  # noqa: E402

from ecgdx import inference  # noqa: E402
from ecgdx.errors import ModelError, NotAnEcgError  # noqa: E402
from ecgdx.export import decode_metadata  # noqa: E402
from ecgdx.inference import Prediction, PredictionFailure, Predictor, softmax  # noqa: E402
from ecgdx.labels import CLASS_KEYS  # noqa: E402
from ecgdx.page.preprocessing import preprocess  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="module")
def predictor(model_path):
    return Predictor.from_path(model_path)


@pytest.fixture(scope="module")
def page_png(tmp_path_factory):
    """A synthetic ECG page saved as PNG (gray, the dataset's 1106 x 786 size)."""
    path = tmp_path_factory.mktemp("pages") / "page.png"
    cv2.imwrite(str(path), make_page("3x4_grid", seed=7).image)
    return path


def test_prediction_fields(predictor, page_png):
    p = predictor.predict(page_png)
    assert isinstance(p, Prediction)
    assert p.gate.ok and p.diagnosed and not p.forced
    assert p.label in CLASS_KEYS and p.display_name
    assert p.source == str(page_png)
    assert p.model_version == predictor.model_version and p.model_version.startswith("seed_cnn-")
    assert set(p.timings_ms) >= {"decode", "preprocess", "gate", "inference", "total"}
    assert p.timings_ms["total"] >= p.timings_ms["inference"] > 0
    assert p.preprocess["crop_method"] == "pulses" and len(p.preprocess["crop_box"]) == 4
    assert p.explanation is None


def test_probabilities_are_calibrated_softmax(predictor, page_png):
    p = predictor.predict(page_png)
    assert list(p.probabilities) == list(CLASS_KEYS)
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    x = preprocess(page_png, TINY_SPEC)[None]
    logits = predictor.session.run(["logits"], {"image": x})[0]
    expected = softmax(logits / TINY_TEMPERATURE)[0]
    np.testing.assert_allclose([p.probabilities[k] for k in CLASS_KEYS], expected, rtol=0, atol=1e-6)
    # ... and not the uncalibrated softmax (the temperature is really applied).
    assert not np.allclose(expected, softmax(logits)[0], rtol=0, atol=1e-9)
    assert p.label == CLASS_KEYS[int(np.argmax(expected))]


def test_explain_class_explains_the_class_asked_for(predictor, page_png):
    decided = predictor.predict(page_png, explain=True, grid=(2, 2))
    assert decided.explanation.target == decided.label
    other = next(k for k in CLASS_KEYS if k != decided.label)
    asked = predictor.predict(page_png, explain=True, grid=(2, 2), explain_class=other)
    assert asked.label == decided.label and asked.explanation.target == other
    assert asked.explanation.base_probability == pytest.approx(asked.balanced_probabilities[other], abs=1e-6) or \
        asked.explanation.base_probability == pytest.approx(asked.probabilities[other], abs=1e-6)
    with pytest.raises(ValueError, match="explain_class"):
        predictor.predict(page_png, explain=True, explain_class="stemi")


def test_path_bytes_file_and_array_agree(predictor, page_png):
    data = page_png.read_bytes()
    array = cv2.imread(str(page_png), cv2.IMREAD_UNCHANGED)
    results = [predictor.predict(s) for s in (page_png, data, io.BytesIO(data), array)]
    for other in results[1:]:
        assert other.probabilities == results[0].probabilities
        assert other.label == results[0].label
    assert results[1].source is None


def test_predict_many_reports_a_bad_file_and_carries_on(predictor, page_png, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(page_png.read_bytes()[:500])  # truncated PNG
    results = predictor.predict_many([page_png, bad, str(tmp_path / "missing.jpg"), page_png], batch_size=3)
    assert [type(r) for r in results] == [Prediction, PredictionFailure, PredictionFailure, Prediction]
    assert "truncated" in results[1].error and results[1].source == str(bad)
    assert "not found" in results[2].error
    single = predictor.predict(page_png)
    np.testing.assert_allclose(list(results[0].probabilities.values()), list(single.probabilities.values()),
                               rtol=0, atol=1e-6)  # batching does not change the answer
    assert results[3].probabilities == results[0].probabilities


def test_predict_many_with_worker_threads(model_path, page_png, tmp_path):
    """The next chunk is preprocessed while the current one is read: results stay in order, bad
    files stay in their place, and every answer is the single-page answer."""
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), make_page("6x2_nogrid", seed=3).image)
    bad = tmp_path / "broken.png"
    bad.write_bytes(page_png.read_bytes()[:500])
    sources = [page_png, other, bad, other, page_png, bad, page_png]
    two = Predictor(model_path, threads=2)
    results = two.predict_many(sources, batch_size=2)
    assert [type(r) for r in results] == [Prediction, Prediction, PredictionFailure, Prediction, Prediction,
                                          PredictionFailure, Prediction]
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, Prediction):
            single = two.predict(source)
            assert result.source == str(source) and result.label == single.label
            np.testing.assert_allclose(list(result.probabilities.values()), list(single.probabilities.values()),
                                       rtol=0, atol=1e-6)
        else:
            assert result.source == str(bad)


def test_gate_refusal_force_and_strict(predictor):
    blank = np.full((786, 1106), 245, np.uint8)
    refused = predictor.predict(blank)
    assert not refused.gate.ok and refused.gate.reasons
    assert refused.label is None and refused.display_name is None and refused.probabilities == {}
    assert refused.timings_ms["inference"] == 0.0
    forced = predictor.predict(blank, force=True)
    assert forced.forced and forced.label in CLASS_KEYS
    assert sum(forced.probabilities.values()) == pytest.approx(1.0)
    with pytest.raises(NotAnEcgError, match="does not look like"):
        predictor.predict(blank, strict=True)


def test_import_and_predict_do_not_import_torch(model_path, page_png):
    code = (
        "import sys\n"
        "from ecgdx.inference import Predictor\n"
        f"p = Predictor({str(model_path)!r})\n"
        f"r = p.predict({str(page_png)!r}, explain=True)\n"
        f"p.predict_many([{str(page_png)!r}])\n"
        "assert r.label and r.explanation is not None\n"
        "bad = sorted(m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_no_model_anywhere_gives_helpful_error(monkeypatch):
    monkeypatch.delenv(inference.MODEL_ENV, raising=False)
    monkeypatch.setattr(inference, "BUNDLED_MODEL", "assets/no-such-model.onnx")
    with pytest.raises(ModelError) as info:
        Predictor()
    message = str(info.value)
    assert "--model" in message and "ECGDX_MODEL_PATH" in message and "ecgdx export" in message


def test_model_path_from_environment(monkeypatch, model_path, tmp_path):
    monkeypatch.setenv(inference.MODEL_ENV, str(model_path))
    assert Predictor().model_version == Predictor(model_path).model_version
    monkeypatch.setenv(inference.MODEL_ENV, str(tmp_path / "gone.onnx"))
    with pytest.raises(ModelError, match="ECGDX_MODEL_PATH"):
        Predictor()


def test_metadata_is_validated(predictor):
    good = {k: v for k, v in predictor.session.get_modelmeta().custom_metadata_map.items()}
    decode_metadata(good)
    shuffled = dict(good, classes='["mi", "normal", "abnormal_heartbeat", "history_of_mi"]')
    with pytest.raises(ModelError, match="classes"):
        decode_metadata(shuffled)
    with pytest.raises(ModelError, match="format"):
        decode_metadata(dict(good, ecgdx_format='"ecgdx-onnx/99"'))


def test_bad_threads_value(model_path):
    with pytest.raises(ValueError, match="threads"):
        Predictor(model_path, threads=0)


# ----------------------------------------------------------------------- the ST-elevation finding


@pytest.fixture(scope="module")
def measuring_model(model_path, tmp_path_factory):
    """The tiny model copied with a balanced-prior rule that weighs the ST-elevation finding."""
    from ecgdx.cli import main
    from ecgdx.decision import DecisionRule

    folder = tmp_path_factory.mktemp("measuring")
    rule = folder / "rule.json"
    rule.write_text(DecisionRule(name="balanced_prior", temperature=1.3,
                                 st_elevation_rates=[0.16, 0.87, 0.21, 0.13]).to_json())
    out = folder / "measuring.onnx"
    assert main(["model", "set-rule", str(model_path), "--decision-rule", str(rule), "--out", str(out),
                 "--version-suffix=-st"]) == 0
    return out


def test_set_rule_keeps_the_weights_and_marks_the_version(model_path, measuring_model):
    plain, measuring = Predictor.from_path(model_path), Predictor.from_path(measuring_model)
    assert measuring.uses_measurements and not plain.uses_measurements
    assert measuring.model_version == plain.model_version + "-st"
    batch = np.random.default_rng(3).random((2, 1, TINY_SPEC.height, TINY_SPEC.width), dtype=np.float32)
    assert np.array_equal(plain.logits(batch), measuring.logits(batch))  # the same network


def test_the_finding_is_weighed_in_predict_and_in_with_st_elevation(measuring_model, page_png):
    predictor = Predictor.from_path(measuring_model)
    alone = predictor.predict(page_png)
    assert alone.st_elevation is None and alone.decided_from == "picture" and len(alone.logits) == 4
    rule = predictor.rule
    z = np.array([alone.logits])
    for met in (True, False):
        direct = predictor.predict(page_png, st_elevation=met)
        later = predictor.with_st_elevation(alone, met)
        expected = rule.balanced_probabilities(z, met)[0]
        for p in (direct, later):
            assert p.st_elevation is met and p.decided_from == "picture and measured ST segments"
            assert list(p.balanced_probabilities.values()) == pytest.approx(expected.tolist())
            assert p.label == CLASS_KEYS[int(rule.decide(z, met)[0])]
            assert p.to_dict()["st_elevation_criteria_met"] is met
    # Met criteria raise the MI probability; unmet ones lower it.
    assert (predictor.predict(page_png, st_elevation=True).balanced_probabilities["mi"]
            > alone.balanced_probabilities["mi"]
            > predictor.predict(page_png, st_elevation=False).balanced_probabilities["mi"])
    assert predictor.with_st_elevation(alone, None).balanced_probabilities == pytest.approx(
        alone.balanced_probabilities)
    many = predictor.predict_many([page_png, page_png, page_png], st_elevation=[True, None, False])
    assert [p.st_elevation for p in many] == [True, None, False]
    with pytest.raises(ValueError, match="2 values for 3 sources"):
        predictor.predict_many([page_png] * 3, st_elevation=[True, False])


def test_the_explanation_is_on_the_scale_of_the_decision_with_the_finding(measuring_model, page_png):
    predictor = Predictor.from_path(measuring_model)
    p = predictor.predict(page_png, st_elevation=True, explain=True, keep_input=True)
    assert p.explanation.base_probability == pytest.approx(p.balanced_probabilities[p.label], abs=1e-6)
    again = predictor.explain_model_input(p.model_input, p.label, canonical=False, st_elevation=True)
    assert again.base_probability == pytest.approx(p.balanced_probabilities[p.label], abs=1e-6)


def test_a_model_without_rates_ignores_the_finding(predictor, page_png):
    alone = predictor.predict(page_png)
    assert predictor.predict(page_png, st_elevation=True).probabilities == alone.probabilities
    assert predictor.with_st_elevation(alone, True) is alone
