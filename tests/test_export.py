"""ONNX export: parity with PyTorch, one self-contained file, metadata round trip, dynamic batch.

``make_checkpoint`` and ``export_tiny_model`` are also used by the inference, CLI and explain tests.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from ecgdx import __version__  # noqa: E402
from ecgdx.errors import ModelError  # noqa: E402
from ecgdx.export import (  # noqa: E402
    INPUT_NAME,
    METADATA_KEYS,
    ONNX_FORMAT,
    OUTPUT_NAME,
    export_checkpoint,
    open_session,
    read_model_metadata,
)
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES  # noqa: E402
from ecgdx.page.preprocessing import PreprocessSpec  # noqa: E402

TINY_SPEC = PreprocessSpec(height=96, width=96)
TINY_TEMPERATURE = 1.5
TINY_METRICS = {"accuracy": 0.5, "macro_f1": 0.25, "n": 10}


def make_checkpoint(path: Path, seed: int = 0, spec: PreprocessSpec = TINY_SPEC,
                    temperature: float = TINY_TEMPERATURE) -> Path:
    """A seed_cnn checkpoint with random weights in training.py's format, saved to path."""
    from ecgdx.models import count_parameters, create_model
    from ecgdx.training import CHECKPOINT_FORMAT

    torch.manual_seed(seed)
    model = create_model("seed_cnn")
    # Non-trivial BatchNorm statistics, so parity also covers eval-mode BatchNorm.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "ecgdx_version": __version__,
        "model": dict(model.ecgdx_config),
        "pretrained_source": None,
        "classes": list(CLASS_KEYS),
        "display_names": dict(DISPLAY_NAMES),
        "preprocess": spec.to_dict(),
        "config": {"name": "tiny-test"},
        "data_fingerprint": "sha256:tiny-test-fingerprint",
        "parameters": count_parameters(model),
        "state_dict": model.state_dict(),
        "temperature": temperature,
        "test_metrics": dict(TINY_METRICS),
        "best_epoch": 1,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def export_tiny_model(folder: Path, seed: int = 0, **kwargs) -> Path:
    """Checkpoint + ONNX export in ``folder``; returns the ONNX path."""
    ckpt = make_checkpoint(folder / "run" / "best.pt", seed=seed, **kwargs)
    out = folder / "tiny.onnx"
    export_checkpoint(ckpt, out, verbose=False)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(folder / "run" / "best.pt")
    out = folder / "out" / "tiny.onnx"
    result = export_checkpoint(ckpt, out, verbose=False)
    return {"ckpt": ckpt, "out": out, "result": result}


def test_parity_is_checked_and_small(exported, capsys, tmp_path):
    assert exported["result"]["max_abs_diff"] <= 1e-4
    assert exported["result"]["parity_inputs"] >= 4
    export_checkpoint(exported["ckpt"], tmp_path / "again.onnx")  # verbose: prints the diff
    assert re.search(r"max \|logit diff\| = \d\.\d+e[-+]\d+", capsys.readouterr().out)


def test_export_is_one_self_contained_file(exported):
    out = exported["out"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]  # no side files, no .tmp
    proto = onnx.load(str(out), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
    assert len(proto.graph.initializer) > 0
    [inp] = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == INPUT_NAME and dims[0].dim_param  # dynamic batch axis
    assert [d.dim_value for d in dims[1:]] == [1, 96, 96]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]


def test_metadata_round_trip(exported):
    meta = read_model_metadata(exported["out"])
    assert set(meta) == set(METADATA_KEYS)
    assert meta["ecgdx_format"] == ONNX_FORMAT
    assert meta["classes"] == list(CLASS_KEYS)
    assert meta["display_names"] == DISPLAY_NAMES
    assert PreprocessSpec.from_dict(meta["preprocess"]) == TINY_SPEC
    assert meta["model"]["name"] == "seed_cnn" and meta["model"]["kwargs"]["num_classes"] == 4
    assert meta["temperature"] == TINY_TEMPERATURE
    assert meta["test_metrics"] == TINY_METRICS
    assert meta["data_fingerprint"] == "sha256:tiny-test-fingerprint"
    assert meta["parameters"] > 100_000
    assert meta["ecgdx_version"] == __version__
    assert re.fullmatch(r"seed_cnn-\d{8}-[0-9a-f]{8}", meta["model_version"])
    dt.datetime.fromisoformat(meta["exported_at"])


def test_model_version_changes_with_the_weights(exported, tmp_path):
    other = export_tiny_model(tmp_path, seed=1)
    assert read_model_metadata(other)["model_version"] != read_model_metadata(exported["out"])["model_version"]


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_matches_pytorch(exported, batch):
    from ecgdx.training import load_checkpoint

    model, _ = load_checkpoint(exported["ckpt"])
    x = np.random.default_rng(batch).uniform(0, 1, (batch, 1, 96, 96)).astype(np.float32)
    got = open_session(exported["out"]).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert got.shape == (batch, len(CLASS_KEYS))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_broken_export_raises_and_writes_nothing(exported, tmp_path, monkeypatch):
    """An export whose graph holds other weights than the checkpoint must fail the parity check."""
    from ecgdx import export as export_module
    from ecgdx.models import create_model

    original = export_module._export_bytes
    torch.manual_seed(123)
    impostor = create_model("seed_cnn").eval()
    monkeypatch.setattr(export_module, "_export_bytes", lambda model, meta, opset: original(impostor, meta, opset))
    out = tmp_path / "broken.onnx"
    with pytest.raises(ModelError, match="disagrees"):
        export_checkpoint(exported["ckpt"], out, verbose=False)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_tolerance_is_enforced(exported, tmp_path):
    with pytest.raises(ModelError, match="logit diff"):
        export_checkpoint(exported["ckpt"], tmp_path / "x.onnx", tolerance=-1.0, verbose=False)


def test_run_directory_and_real_images_are_accepted(exported, tmp_path):
    from synthetic import make_page

    page = make_page("3x4_grid", seed=2).image
    result = export_checkpoint(exported["ckpt"].parent, tmp_path / "m.onnx", check_images=[page, page],
                               verbose=False)
    assert result["parity_inputs"] == 6


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
def test_foreign_onnx_file_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2).eval(), (torch.zeros(1, 3),), str(path), dynamo=False)
    with pytest.raises(ModelError, match="not an ecgdx model"):
        read_model_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_model_metadata(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="no model file"):
        read_model_metadata(tmp_path / "missing.onnx")


def test_read_model_metadata_needs_neither_torch_nor_onnx(exported):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "from ecgdx.export import read_model_metadata\n"
        f"meta = read_model_metadata({str(exported['out'])!r})\n"
        "print(meta['model_version'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == read_model_metadata(exported["out"])["model_version"]


def test_export_cli(exported, tmp_path, capsys):
    from ecgdx.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", str(exported["ckpt"].parent), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parity" in text and "model version seed_cnn-" in text
    assert json.loads(json.dumps(read_model_metadata(out)))["classes"] == list(CLASS_KEYS)
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
