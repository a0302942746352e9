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

from typing import Any

import torch
from torch import nn

# The model modules register themselves (ecgdx.models.registry) when imported.
from ecgdx.models import ecg_pagenet, efficientnet_lite, seed_cnn, torchvision_models  # noqa: F401
from ecgdx.models.registry import create_model, list_models, register_model

__all__ = [
    "count_parameters",
    "create_model",
    "estimate_macs",
    "list_models",
    "model_info",
    "register_model",
]


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

