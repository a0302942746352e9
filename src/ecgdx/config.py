"""One configuration mechanism: typed dataclasses loaded from YAML, with ``--set key=value`` overrides.

Unknown keys are errors everywhere (in the file and in overrides), so a typo never silently
falls back to a default. ``ExperimentConfig`` is what ``ecgdx train`` reads; the resolved
config is written into every run directory and checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecgdx.errors import ConfigError
from ecgdx.page.preprocessing import PreprocessSpec


@dataclass
class DataConfig:
    """Where the images come from and how they are split."""

    manifest: str = ""  # CSV written by `ecgdx data index`; empty with synthetic > 0
    synthetic: int = 0  # >0: generate this many synthetic pages per class (CI smoke runs)
    protocol: str = "honest"  # "honest" = manifest's duplicate-aware split; "seed" = augment-then-split
    seed_copies: dict[str, int] = field(
        default_factory=lambda: {"normal": 5, "mi": 10, "abnormal_heartbeat": 10, "history_of_mi": 12}
    )
    seed_test_fraction: float = 0.2
    cache_dir: str = "cache"  # preprocessed images are cached here, keyed by spec and content hash
    # >0: also make this many simulated photos of every page (ecgdx.data.photo), normalised and
    # preprocessed as uploads are, cached beside the clean inputs; augment.photo_p draws from them.
    photo_variants: int = 0


@dataclass
class ModelConfig:
    name: str = "seed_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # local ImageNet state_dict for resnet50/mobilenetv2; never downloaded


@dataclass
class AugmentConfig:
    """On-the-fly training augmentation (Albumentations). No flips: left-right is time, up-down is polarity."""

    enabled: bool = True
    rotate_deg: float = 3.0
    shift: float = 0.03  # fraction of the image size
    scale: float = 0.05
    perspective: float = 0.03
    brightness_contrast: float = 0.2
    noise_std: float = 0.03  # fraction of the intensity range
    blur_p: float = 0.2
    jpeg_quality_min: int = 40
    shadow_p: float = 0.15
    p: float = 0.8  # probability that the geometric block is applied at all
    # Probability that a training sample is one of its page's photo variants (data.photo_variants)
    # instead of the clean scan; the augmentation above is applied to either.
    photo_p: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    balance: str = "sampler"  # "sampler" (weighted sampler), "class_weights" (weighted loss) or "none"
    early_stopping_patience: int = 8
    num_workers: int = 2
    threads: int = 0  # torch intra-op threads; 0 = all cores
    channels_last: bool = True
    # "bf16" runs forward passes under bfloat16 autocast (weights stay float32): about 2x faster for
    # seed_cnn on CPUs with AMX/AVX512-BF16, slower for depthwise-heavy models. Evaluation is float32.
    precision: str = "fp32"
    device: str = "cpu"  # "cpu" or "cuda"
    seed: int = 0
    max_batches_per_epoch: int = 0  # >0 caps an epoch (smoke tests only)
    # Which checkpoint a run keeps: "best_val" (highest validation macro-F1, with early stopping) or
    # "last" (the final epoch; cross-validation uses it, so the held-out fold never picks a checkpoint).
    select: str = "best_val"
    # >0: before each validation, BatchNorm running statistics are recomputed as a plain average over
    # this many augmented training batches, with the weights frozen ("precise BN", Wu & Johnson 2021,
    # arXiv:2105.07576). Needed by seed_cnn's Keras momentum 0.01: after 378 steps its running
    # variance still carried 0.99**378 = 2% of the initial 1.0, 27-124x the true variance, and every
    # held-out page was called Normal (docs/evaluation.md).
    bn_recalibration_batches: int = 0


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The preprocessing spec itself (ecgdx.page.preprocessing.PreprocessSpec): one definition, validated
    # there, and it travels unchanged into checkpoints and ONNX metadata.
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; int -> float is the only silent conversion."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected text, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(names))}"
        )
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass that validates itself (PreprocessSpec)
        raise ConfigError(f"{where}: {exc}") from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML (``3``, ``true``, ``[1,2]``)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value, e.g. train.epochs=5")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {assignment!r} has an empty key")
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {assignment!r}: {key!r} is not a section")
    try:
        target[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {assignment!r}: cannot parse value: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment config from YAML (or defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    for assignment in overrides or []:
        apply_override(data, assignment)
    return from_dict(ExperimentConfig, data, where=str(path) if path else "config")


def dump_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
