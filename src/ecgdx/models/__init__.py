"""Model registry: every network is created by name, and describes itself well enough to be rebuilt.

Usage::

    from ecgdx.models import create_model, list_models
    model = create_model("ecg_pagenet")               # defaults: in_chans=1, num_classes=4
    clone = create_model(**model.ecgdx_config)        # same architecture, e.g. to load a checkpoint

Input contract shared by every registered model: a float32 tensor (N, in_chans, H, W) with values in
[0, 1], 1.0 = white paper and 0.0 = ink (the cropped trace area of the page, 384x384 by default);
output: logits (N, num_classes), class order ``ecgdx.labels.CLASS_KEYS``.

Importing this package imports torch and torchvision. That is deliberate and confined to training
code: inference goes through ONNX and never imports ``ecgdx.models``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "count_parameters",
    "create_model",
    "estimate_macs",
    "list_models",
    "model_info",
    "register_model",
]

_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}

# Kwargs that only say how the weights were initialised, not what the architecture is. They are
# recorded on the module as provenance (``pretrained_source``) but reset to None in
# ``ecgdx_config``: a checkpoint's own state_dict supersedes them, and rebuilding from a config must
# not depend on a weights file that may not exist on the machine that loads the checkpoint.
_INIT_ONLY_KWARGS: tuple[str, ...] = ("pretrained",)

# Every factory must accept these, so training code can build any model the same way.
_REQUIRED_KWARGS: tuple[str, ...] = ("num_classes", "in_chans")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory under ``name``.

    The wrapped factory stamps ``model.ecgdx_config = {"name": name, "kwargs": {...}}`` (every
    argument, defaults included, so the config stays valid if a default changes later) and
    ``model.pretrained_source`` (None unless the factory set it). Doing this here rather than in
    each factory keeps the bookkeeping identical for all models.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODEL_FACTORIES:
            raise ValueError(f"model name {name!r} is already registered")
        signature = inspect.signature(fn)
        missing = [k for k in _REQUIRED_KWARGS if k not in signature.parameters]
        if missing:
            raise TypeError(f"factory for {name!r} must accept {', '.join(missing)}")

        @functools.wraps(fn)
        def factory(**kwargs: Any) -> nn.Module:
            try:
                bound = signature.bind(**kwargs)
            except TypeError as exc:
                raise TypeError(f"bad arguments for model {name!r}: {exc}") from None
            bound.apply_defaults()
            model = fn(*bound.args, **bound.kwargs)
            config_kwargs = dict(bound.arguments)
            for key in _INIT_ONLY_KWARGS:
                if key in config_kwargs:
                    config_kwargs[key] = None
            model.ecgdx_config = {"name": name, "kwargs": config_kwargs}
            if not hasattr(model, "pretrained_source"):
                model.pretrained_source = None
            return model

        _MODEL_FACTORIES[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODEL_FACTORIES)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    ``create_model(**model.ecgdx_config)`` also works: a ``kwargs`` mapping is unpacked into the
    factory's arguments (explicit keyword arguments win), so a checkpoint's stored config rebuilds
    the model without special casing. Unknown names raise ValueError listing the known ones.
    """
    if name not in _MODEL_FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    nested = kwargs.pop("kwargs", None)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise TypeError(f"'kwargs' must be a mapping, got {type(nested).__name__}")
        kwargs = {**nested, **kwargs}
    return _MODEL_FACTORIES[name](**kwargs)


def _is_bn_statistic(buffer_name: str) -> bool:
    # running_mean/running_var are real per-channel numbers (Keras counts them as non-trainable
    # params); num_batches_tracked is a step counter, not a model parameter.
    return not buffer_name.endswith("num_batches_tracked")


def count_parameters(model: nn.Module, include_buffers: bool = False, trainable_only: bool = False) -> int:
    """Number of parameter elements.

    ``include_buffers=True`` adds floating-point buffers such as BatchNorm running mean/var
    (never ``num_batches_tracked``), which reproduces Keras' "Total params".
    """
    total = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if include_buffers:
        total += sum(
            b.numel() for n, b in model.named_buffers() if b.is_floating_point() and _is_bn_statistic(n)
        )
    return total


def estimate_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 1, 384, 384)) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_size`` (whole batch).

    Counts convolutions (any dimensionality, grouped/depthwise included) and Linear layers, which
    carry essentially all the compute of these networks; biases, norms, activations and pooling are
    ignored, as in the usual MAC tables. Conv: out_elements * in_channels/groups * kernel area.
    Linear: out_elements * in_features.
    """
    counts: list[int] = []

    def conv_hook(module: nn.modules.conv._ConvNd, _inputs: tuple, output: torch.Tensor) -> None:
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        counts.append(output.numel() * (module.in_channels // module.groups) * kernel)

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        counts.append(output.numel() * module.in_features)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    was_training = model.training
    try:
        # eval(): batch-1 inputs would break BatchNorm in train mode and must not touch its stats.
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return int(sum(counts))


def model_info(model: nn.Module, input_size: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Facts for reports and checkpoints: name, kwargs, parameter counts, weight provenance.

    ``pretrained_source`` is the local weights file the model was initialised from, or None when
    it was trained from scratch. MACs are only computed when ``input_size`` is given (one forward).
    """
    config = getattr(model, "ecgdx_config", None) or {}
    info: dict[str, Any] = {
        "name": config.get("name", type(model).__name__),
        "kwargs": dict(config.get("kwargs", {})),
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "params_with_buffers": count_parameters(model, include_buffers=True),
        "pretrained": getattr(model, "pretrained_source", None) is not None,
        "pretrained_source": getattr(model, "pretrained_source", None),
    }
    if input_size is not None:
        info["input_size"] = tuple(input_size)
        info["macs"] = estimate_macs(model, input_size)
    return info


# Model modules register themselves on import; they need register_model defined above first.
from ecgdx.models import ecg_pagenet, efficientnet_lite, seed_cnn, torchvision_models  # noqa: E402, F401, I001
