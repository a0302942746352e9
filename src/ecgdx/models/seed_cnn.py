"""SeedCNN: the original project's custom Keras CNN, reproduced layer for layer as the baseline.

Architecture (input 1x384x384):
    4 x [Conv2d 3x3, padding 0 ("valid") + ReLU -> BatchNorm2d -> MaxPool2d 2x2], 32/64/128/256 filters
    (384 -> 382 -> 191 -> 189 -> 94 -> 92 -> 46 -> 44 -> 22)
    -> global average pooling -> Linear 128 + ReLU -> Dropout 0.5 -> Linear num_classes.

Parameter count on 1-channel input: 423,172 counting BatchNorm running mean/var as Keras does
(``count_parameters(model, include_buffers=True)``); the Keras model reported 423,748 on 3-channel
input, the 576 difference being the first conv's two extra input channels (3*3*32*2).

Input contract: float32 (N, in_chans, H, W) in [0, 1], 1.0 = white paper, 0.0 = ink; any H, W >= 46
(global pooling makes the head size-free); output logits (N, num_classes).

Kept deliberately faithful, oddities included (activation before BatchNorm, Keras BN epsilon and
momentum, Glorot init), so that comparisons against it measure the original design, not a tuned one.
"""

from __future__ import annotations

import torch
from torch import nn

from ecgdx.labels import NUM_CLASSES
from ecgdx.models.registry import register_model

__all__ = ["SeedCNN", "seed_cnn"]

# Keras BatchNormalization defaults. Keras "momentum" is the weight of the old running value, so
# its 0.99 is PyTorch's momentum=0.01.
_KERAS_BN_EPS = 1e-3
_KERAS_BN_MOMENTUM = 0.01


class SeedCNN(nn.Module):
    """Four valid-conv blocks, global average pooling and a small MLP head."""

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.5,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_chans
        for width in widths:
            blocks += [
                nn.Conv2d(prev, width, kernel_size=3, padding=0),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM),
                nn.MaxPool2d(2),
            ]
            prev = width
        self.features = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(prev, hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self._init_keras_like()

    def _init_keras_like(self) -> None:
        # Keras initialises Conv2D/Dense kernels with Glorot-uniform and biases with zeros; PyTorch's
        # defaults differ, and a baseline should start where the original did.
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.drop(self.act(self.fc1(x)))
        return self.classifier(x)


@register_model("seed_cnn")
def seed_cnn(num_classes: int = NUM_CLASSES, in_chans: int = 1, dropout: float = 0.5) -> SeedCNN:
    """The original project's CNN (baseline)."""
    return SeedCNN(in_chans=in_chans, num_classes=num_classes, dropout=dropout)
