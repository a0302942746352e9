"""Smoke training on synthetic pages: the whole pipeline in seconds, plus checkpoint and resume contracts."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ecgdx.cli import main  # noqa: E402
from ecgdx.config import load_config  # noqa: E402
from ecgdx.errors import ConfigError, ModelError  # noqa: E402
from ecgdx.training import load_checkpoint, predict_logits, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(SMOKE, [f"out_dir={out}", "train.epochs=2"])
    result = train(cfg, progress=False)
    return cfg, result


def test_smoke_run_writes_a_complete_run_directory(smoke_run):
    _, result = smoke_run
    run_dir = Path(result["run_dir"])
    for name in ("config.yaml", "history.csv", "history.json", "best.pt", "last.pt", "training_curves.png",
                 "eval-test/report.json", "eval-test/report.md", "eval-test/confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in history)


def test_checkpoint_describes_itself_and_reloads_identically(smoke_run):
    cfg, result = smoke_run
    model, ckpt = load_checkpoint(result["run_dir"])
    assert ckpt["classes"] == ["normal", "mi", "abnormal_heartbeat", "history_of_mi"]
    assert ckpt["model"]["name"] == "seed_cnn"
    assert ckpt["preprocess"]["height"] == 96
    assert ckpt["temperature"] > 0
    assert set(ckpt["test_metrics"]) >= {"accuracy", "macro_f1", "ece", "mi_sensitivity"}
    images = [np.random.default_rng(i).integers(0, 256, (96, 96), dtype=np.uint8) for i in range(3)]
    first = predict_logits(model, images)
    again, _ = load_checkpoint(Path(result["run_dir"]) / "best.pt")
    np.testing.assert_array_equal(first, predict_logits(again, images))


def test_rerunning_into_an_existing_run_is_refused(smoke_run):
    cfg, _ = smoke_run
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)


def test_resume_continues_from_the_last_epoch(smoke_run, tmp_path):
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}", "train.epochs=1"])
    train(cfg, progress=False)
    cfg.train.epochs = 2
    train(cfg, resume=True, progress=False)
    history = json.loads((tmp_path / cfg.name / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]


def test_training_is_reproducible_with_the_same_seed(tmp_path):
    losses = []
    for name in ("a", "b"):
        cfg = load_config(SMOKE, [f"out_dir={tmp_path}", f"name={name}", "train.epochs=1"])
        train(cfg, progress=False)
        losses.append(json.loads((tmp_path / name / "history.json").read_text())[0]["train_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_cli_train_and_evaluate(tmp_path, capsys):
    assert main(["train", "--config", str(SMOKE), "--set", f"out_dir={tmp_path}", "--set", "train.epochs=1"]) == 0
    run_dir = tmp_path / "smoke"
    assert main(["evaluate", str(run_dir), "--split", "val", "--n-boot", "50"]) == 0
    assert (run_dir / "eval-val" / "report.json").is_file()
    assert "macro-F1" in capsys.readouterr().out


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    assert main(["train", "--config", str(SMOKE), "--set", "train.epoch=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_loading_a_non_checkpoint_is_a_clear_error(tmp_path):
    bogus = tmp_path / "best.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable ecgdx checkpoint"):
        load_checkpoint(bogus)
    with pytest.raises(ModelError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
