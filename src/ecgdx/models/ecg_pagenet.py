"""EcgPageNet: a small CNN shaped around what a cropped 12-lead ECG page looks like.

Architecture (sizes at 384x384; stride relative to the input):
    invert (ink = 1, paper = 0)
    stem    3 x [Conv 3x3 + BN + SiLU, MaxPool 2x2], 16/32/48 channels             -> 48 x 48x48    (/8)
    stage1  2 x inverted residual (expand 3, depthwise 3x5 = wider in time, SE)    -> 80 x 48x48    (/8)
    stage2  2 x inverted residual (expand 4, 3x5, SE), first one stride 2          -> 128 x 24x24   (/16)
    stage3  2 x inverted residual (expand 4, 3x5, SE), stride (2, 1): height only  -> 160 x 12x24   (/32, /16)
    head    Conv 1x1 -> 96 + BN + SiLU, 4x4 grid of average AND max pooling, Dropout, Linear -> logits

Why this shape (the facts about the input it relies on):
* Traces are 1-3 px dark lines on white paper. The input is inverted so that ink is the large value:
  zero padding then means "blank paper" instead of "a black frame" around the page, and max pooling
  keeps a thin line instead of erasing it (on the raw image max pooling favours paper; on the inverted
  one it acts as a min-pool on ink). The first three downsamplings are therefore max pools after a
  conv at the full current resolution, never a strided conv that could step over a 1-px line. The
  stem is dense (not depthwise) because at high resolution CPU time is dominated by activation
  memory traffic, and a narrow dense conv moves less memory than an expand/depthwise/project block.
* Diagnostic detail is mostly along time (width): a QRS is ~2-3 px wide when 10 s span 384 px and a
  beat ~30 px. All depthwise kernels are 3 high x 5 wide (cheap horizontal context), and
  the last downsampling halves only the height, so each final cell covers ~16 px (~0.4 s, under one
  beat) along time while 32 px vertically is still finer than a trace row (4 rows of ~96 px in the
  3x4 layout, 7 rows of ~55 px in the 6x2 layout).
* Position on the page says which lead a trace is (and MI is lead-specific: inferior vs anterior), so
  the head keeps a coarse 4x4 layout - one cell per column of the 3x4 layout, column pairs in the 6x2
  one - and a Linear layer reads every cell with its own weights, instead of global pooling, which
  would throw away which lead a feature came from. Average pooling summarises the typical beat of
  that region; max pooling keeps sporadic events (an ectopic beat in one place of the rhythm strip).
  Left-right and up-down flips are not label preserving (time, polarity), and nothing here assumes
  such a symmetry.
* Cost: once the map is small (/8), inverted-residual (MobileNetV2-style) blocks with
  squeeze-excitation give depth and context per MAC. About 0.85M parameters, 0.76 GMACs at 384x384
  (seed_cnn: 0.42M, 1.90 GMACs) and a slightly lower CPU training time per batch than seed_cnn.
  Residual blocks start as identities (zero-initialised last BN) so the small dataset trains a
  shallow net first.

Input contract: float32 (N, in_chans, H, W) in [0, 1], 1.0 = white paper, 0.0 = ink, any H, W >= 32
(384x384 default; 320x448 etc. work). The head pools exactly (plain avg/max pool) when H/32 and W/16
are multiples of the grid, as at 384x384 (12x24), and otherwise uses adaptive-style bins. Output:
logits (N, num_classes). ONNX-exportable (opset 17, dynamic batch) at a fixed H, W; channels_last ok.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ecgdx.labels import NUM_CLASSES
from ecgdx.models.registry import register_model

__all__ = ["EcgPageNet", "GridPool", "ecg_pagenet"]

# Widths of the dense conv + max-pool stem stages (each halves the resolution).
_STEM_WIDTHS: tuple[int, ...] = (16, 32, 48)
# (out_channels, repeats, first-block stride, depthwise kernel (h, w), expansion, squeeze-excite)
_STAGES: tuple[tuple[int, int, tuple[int, int], tuple[int, int], int, bool], ...] = (
    (80, 2, (1, 1), (3, 5), 3, True),
    (128, 2, (2, 2), (3, 5), 4, True),
    (160, 2, (2, 1), (3, 5), 4, True),
)


class ConvBnAct(nn.Sequential):
    """Conv (no bias: BN follows) + BatchNorm + optional SiLU, 'same' padding for odd kernels."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        super().__init__(
            nn.Conv2d(in_chs, out_chs, (kh, kw), stride, (kh // 2, kw // 2), groups=groups, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled statistics (which feature types are present at all)."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, rd_channels, 1)
        self.act = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(rd_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk (strided here when downsampling) -> SE -> 1x1 project (+ skip)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: tuple[int, int],
        kernel: tuple[int, int],
        expand: int,
        use_se: bool,
    ) -> None:
        super().__init__()
        hidden = in_chs * expand
        self.has_skip = stride == (1, 1) and in_chs == out_chs
        self.conv_pw = ConvBnAct(in_chs, hidden, 1)
        self.conv_dw = ConvBnAct(hidden, hidden, kernel, stride, groups=hidden)
        # SE width from the block input (as in EfficientNet), so it stays small in wide blocks.
        self.se = SqueezeExcite(hidden, max(8, in_chs // 4)) if use_se else nn.Identity()
        self.conv_pwl = ConvBnAct(hidden, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return x + y if self.has_skip else y


class GridPool(nn.Module):
    """Average and max pooling into a fixed gh x gw grid -> (N, 2*C, gh, gw).

    When the grid divides the feature map this is plain avg/max pooling with kernel = stride, which
    exports to ONNX everywhere. Otherwise the bins follow adaptive pooling's rule (floor start,
    ceil end) computed with slicing, because ONNX export refuses adaptive pooling to sizes that do not
    divide the input.
    """

    def __init__(self, grid: Sequence[int] = (4, 4)) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = self.grid
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % gh == 0 and w % gw == 0:
            kernel = (h // gh, w // gw)
            return torch.cat([F.avg_pool2d(x, kernel), F.max_pool2d(x, kernel)], dim=1)
        avg_rows, max_rows = [], []
        for i in range(gh):
            h0, h1 = (i * h) // gh, -((-(i + 1) * h) // gh)
            avg_cells, max_cells = [], []
            for j in range(gw):
                w0, w1 = (j * w) // gw, -((-(j + 1) * w) // gw)
                cell = x[:, :, h0:h1, w0:w1]
                avg_cells.append(cell.mean(dim=(2, 3)))
                max_cells.append(cell.amax(dim=(2, 3)))
            avg_rows.append(torch.stack(avg_cells, dim=-1))
            max_rows.append(torch.stack(max_cells, dim=-1))
        return torch.cat([torch.stack(avg_rows, dim=-2), torch.stack(max_rows, dim=-2)], dim=1)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


class EcgPageNet(nn.Module):
    """Thin-line-friendly stem, anisotropic inverted-residual body, layout-preserving grid head."""

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.3,
        head_grid: Sequence[int] = (4, 4),
        head_dim: int = 96,
        stem_widths: Sequence[int] = _STEM_WIDTHS,
        stage_specs: Sequence[tuple] = _STAGES,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = []
        prev = in_chans
        for width in stem_widths:
            stem += [ConvBnAct(prev, width, 3), nn.MaxPool2d(2)]
            prev = width
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        for out_chs, repeats, stride, kernel, expand, use_se in stage_specs:
            blocks = []
            for r in range(repeats):
                blocks.append(
                    InvertedResidual(prev, out_chs, stride if r == 0 else (1, 1), kernel, expand, use_se)
                )
                prev = out_chs
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head_conv = ConvBnAct(prev, head_dim, 1)
        self.pool = GridPool(head_grid)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * head_dim * self.pool.grid[0] * self.pool.grid[1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        # Residual branches start at zero, so every block is an identity at initialisation.
        for module in self.modules():
            if isinstance(module, InvertedResidual) and module.has_skip:
                nn.init.zeros_(module.conv_pwl[1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Ink becomes the large value: see the module docstring (padding and pooling favour traces).
        x = 1.0 - x
        x = self.stem(x)
        return self.head_conv(self.stages(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.drop(x))


@register_model("ecg_pagenet")
def ecg_pagenet(
    num_classes: int = NUM_CLASSES,
    in_chans: int = 1,
    dropout: float = 0.3,
    head_grid: Sequence[int] = (4, 4),
) -> EcgPageNet:
    """EcgPageNet with the default widths (~0.85M parameters)."""
    return EcgPageNet(in_chans=in_chans, num_classes=num_classes, dropout=dropout, head_grid=tuple(head_grid))
