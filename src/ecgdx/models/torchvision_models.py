"""ResNet-50 and MobileNetV2 from torchvision, with a single-channel stem and local-only pretraining.

Architecture: torchvision's own constructors (``resnet50``, ``mobilenet_v2``) built with
``weights=None`` - nothing is ever downloaded - and ``num_classes`` set; only the first convolution
is replaced by one taking ``in_chans`` channels (ResNet-50: 7x7 stride 2 -> 64; MobileNetV2: 3x3
stride 2 -> 32). Global average pooling makes both size-free; 224x224 is their native size, 384x384
is the ecgdx default.

Pretraining: ``pretrained`` may name a local ImageNet state_dict (.pth, e.g. torchvision's
``resnet50-*.pth``). It is loaded strictly except for the classifier head (ImageNet's 1000-way layer
is dropped; ours stays freshly initialised). The 3-channel stem kernel is adapted by summing it over
the RGB axis: a grayscale page fed as R = G = B = g gives sum_c(W_c * g) = (sum_c W_c) * g, so the
summed 1-channel kernel computes exactly what the pretrained stem would compute on the gray image
replicated to RGB. ImageNet mean/std normalisation is not folded in; the BatchNorm right after the
stem absorbs the resulting offset and (nearly uniform, std ~0.226) scale once it is fine-tuned.
``model.pretrained_source`` records the file (None = trained from scratch) so reports can state it.

Input contract: float32 (N, in_chans, H, W) in [0, 1], 1.0 = white paper, 0.0 = ink (not inverted,
not ImageNet-normalised); output logits (N, num_classes). ONNX-exportable, channels_last friendly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torchvision
from torch import nn

from ecgdx.errors import ModelError
from ecgdx.labels import NUM_CLASSES
from ecgdx.models.registry import register_model

__all__ = ["adapt_stem_weight", "load_pretrained", "mobilenetv2", "read_state_dict", "resnet50"]


def adapt_stem_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Turn an RGB stem kernel (out, 3, kh, kw) into one for ``in_chans`` inputs.

    1 channel: sum over RGB (see the module docstring). 3 channels: unchanged. Otherwise the RGB
    mean is repeated and rescaled by 3/in_chans, so a constant input gives the same response.
    """
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3:
        raise ModelError(f"cannot adapt a {weight.shape[1]}-channel stem to {in_chans} channels")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.mean(dim=1, keepdim=True).repeat(1, in_chans, 1, 1) * (3.0 / in_chans)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    try:
        # weights_only: a .pth is untrusted input; only tensors and plain containers are unpickled.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"pretrained weights file not found: {os.fspath(path)}") from None
    except Exception as exc:
        raise ModelError(f"cannot read pretrained weights {os.fspath(path)}: {exc}") from exc
    # Training checkpoints often wrap the weights; accept the common wrappers, nothing cleverer.
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{os.fspath(path)} does not contain a state_dict of tensors")
    return dict(obj)


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str],
    stem_key: str,
    head_prefix: str,
    in_chans: int,
) -> None:
    """Load a local ImageNet state_dict: strict except the head, stem adapted to ``in_chans``."""
    state = read_state_dict(path)
    if stem_key not in state:
        raise ModelError(f"{os.fspath(path)} has no {stem_key!r}: not weights for this architecture")
    state[stem_key] = adapt_stem_weight(state[stem_key], in_chans)
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelError(f"pretrained weights {os.fspath(path)} do not fit: {exc}") from exc
    missing_body = [k for k in missing if not k.startswith(head_prefix)]
    if missing_body or unexpected:
        raise ModelError(
            f"pretrained weights {os.fspath(path)} do not match the architecture; "
            f"missing: {missing_body[:5]}, unexpected: {list(unexpected)[:5]}"
        )
    model.pretrained_source = os.fspath(path)


def _new_stem(old: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    stem = nn.Conv2d(
        in_chans,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        bias=old.bias is not None,
    )
    # Same init torchvision uses for these convs, so from-scratch training is unchanged.
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    return stem


@register_model("resnet50")
def resnet50(num_classes: int = NUM_CLASSES, in_chans: int = 1, pretrained: str | None = None) -> nn.Module:
    """torchvision ResNet-50 (~23.5M parameters) with an ``in_chans`` 7x7 stem."""
    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    model.conv1 = _new_stem(model.conv1, in_chans)
    if pretrained is not None:
        load_pretrained(model, pretrained, "conv1.weight", "fc.", in_chans)
    return model


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int = NUM_CLASSES,
    in_chans: int = 1,
    pretrained: str | None = None,
    dropout: float = 0.2,
) -> nn.Module:
    """torchvision MobileNetV2 (~2.2M parameters) with an ``in_chans`` 3x3 stem."""
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes, dropout=dropout)
    model.features[0][0] = _new_stem(model.features[0][0], in_chans)
    if pretrained is not None:
        load_pretrained(model, pretrained, "features.0.0.weight", "classifier.", in_chans)
    return model
