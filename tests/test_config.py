import pytest

from ecgdx.config import ExperimentConfig, apply_override, load_config
from ecgdx.errors import ConfigError


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.name == "seed_cnn"
    assert cfg.preprocess.height == 384


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 3\nmodel:\n  kwargs: {dropout: 0.2}\n")
    cfg = load_config(path, ["train.epochs=7", "train.lr=0.01", "augment.enabled=false"])
    assert cfg.name == "x"
    assert cfg.train.epochs == 7
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.augment.enabled is False
    assert cfg.model.kwargs == {"dropout": 0.2}


def test_int_is_accepted_for_float_but_not_the_reverse(tmp_path):
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=2.5"])


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key"),
    ("trian.epochs=3", "unknown key"),
    ("train.epochs", "key=value"),
    ("augment.enabled=maybe", "expected true/false"),
    ("model.name=[1, 2]", "expected text"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_file_names_the_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "epocs" in str(info.value) and "epochs" in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_override_creates_nested_sections():
    data = {}
    apply_override(data, "data.seed_copies={normal: 2}")
    assert data == {"data": {"seed_copies": {"normal": 2}}}


def test_preprocess_section_converts_to_a_spec():
    spec = load_config(None, ["preprocess.height=200", "preprocess.width=300"]).preprocess
    assert (spec.height, spec.width) == (200, 300)
    assert spec.to_dict()["height"] == 200


def test_invalid_preprocess_values_are_config_errors():
    with pytest.raises(ConfigError, match="preprocess"):
        load_config(None, ["preprocess.height=-5"])
