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


def test_batchnorm_recalibration_replaces_stale_running_statistics():
    from ecgdx.training import recalibrate_batchnorm

    torch.manual_seed(0)
    layer = torch.nn.BatchNorm2d(3, momentum=0.01)  # seed_cnn's Keras momentum
    frozen = torch.nn.BatchNorm2d(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), layer, frozen)
    model.train()
    frozen.eval()  # a frozen stage keeps its statistics
    frozen_before = frozen.running_var.clone()
    batches = [torch.randn(8, 1, 6, 6) * 0.01 for _ in range(5)]  # tiny activations, like a first conv's
    for x in batches:  # a few momentum-0.01 steps leave the initial variance of 1.0 dominant
        model(x)
    with torch.no_grad():
        true_var = torch.cat([model[0](x) for x in batches]).var(dim=(0, 2, 3))
    assert (layer.running_var / true_var).min() > 10
    model.train()
    frozen.eval()
    # recalibrate_batchnorm calls model.train(); a model that freezes layers overrides train()
    model.train = lambda mode=True: model  # noqa: ARG005
    assert recalibrate_batchnorm(model, batches, max_batches=5) == 1
    torch.testing.assert_close(layer.running_var, true_var, rtol=0.05, atol=0)
    assert layer.momentum == 0.01
    torch.testing.assert_close(frozen.running_var, frozen_before)


def test_batchnorm_recalibration_in_training_changes_statistics_not_the_training_stream(tmp_path):
    runs = {}
    for name, batches in (("plain", 0), ("recal", 3)):
        cfg = load_config(SMOKE, [f"out_dir={tmp_path}", f"name={name}", "train.epochs=2",
                                  f"train.bn_recalibration_batches={batches}"])
        train(cfg, progress=False, final_evaluation=False)
        runs[name] = (json.loads((tmp_path / name / "history.json").read_text()),
                      torch.load(tmp_path / name / "last.pt", weights_only=False)["state_dict"])
    (plain_history, plain_state), (recal_history, recal_state) = runs["plain"], runs["recal"]
    # Same losses in epoch 2: the recalibration after epoch 1 drew nothing from the training stream
    # and BatchNorm statistics do not enter training-mode forward passes.
    assert [r["train_loss"] for r in recal_history] == pytest.approx([r["train_loss"] for r in plain_history], rel=1e-5)
    conv_weights = [k for k in plain_state if k.endswith("weight") and plain_state[k].ndim == 4]
    for key in conv_weights:
        torch.testing.assert_close(recal_state[key], plain_state[key])
    stats = [k for k in plain_state if k.endswith("running_var")]
    assert stats and any(not torch.allclose(recal_state[k], plain_state[k]) for k in stats)


def test_photo_variants_replace_clean_samples_at_the_configured_rate():
    from ecgdx.training import SplitData, make_torch_dataset

    clean = [np.full((8, 8), 200, np.uint8) for _ in range(40)]
    photos = [[np.full((8, 8), 10, np.uint8), np.full((8, 8), 20, np.uint8)] for _ in range(40)]
    split = SplitData(clean, np.zeros(40, np.int64), ["3x4_grid"] * 40, [str(i) for i in range(40)], photos)
    plain = make_torch_dataset(split, seed=0)
    assert all(float(plain[i][0].mean()) == pytest.approx(200 / 255) for i in range(40))
    mixed = make_torch_dataset(split, seed=0, photo_p=0.5)
    values = [round(float(mixed[i][0].mean()) * 255) for i in range(40)]
    assert set(values) <= {200, 10, 20}
    assert 8 <= sum(v != 200 for v in values) <= 32
    assert {10, 20} <= set(values)
    mixed.set_epoch(1)  # another epoch draws again
    assert [round(float(mixed[i][0].mean()) * 255) for i in range(40)] != values
    subset = split.subset([3, 5])
    assert subset.names == ["3", "5"] and subset.variants == [photos[3], photos[5]]
    with pytest.raises(ConfigError, match="data.photo_variants"):
        make_torch_dataset(SplitData(clean, split.labels, split.templates, split.names), photo_p=0.5)


def test_photo_variants_of_synthetic_pages_are_refused(tmp_path):
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}", "data.photo_variants=2"])
    with pytest.raises(ConfigError, match="real pages"):
        train(cfg, progress=False)
