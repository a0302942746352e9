"""Several trained networks as one module: the mean of their log-softmax, for export as one graph.

Not a registered model: it is assembled from trained checkpoints (``ecgdx export A B --out ...``)
and only runs in eval mode. Its output, the mean log-softmax, is a valid logit vector (its softmax
is the members' normalised geometric mean), so temperature scaling and the decision rules
(``ecgdx.decision``) apply to it as to one network's logits, and ``benchmarks/ensemble.py`` scores
the same combination out of fold.

Shared trunk: members of a recipe that keeps the stem and the first k stages frozen
(``efficientnet_lite``'s ``frozen_stages``) carry byte-identical ImageNet tensors there, BatchNorm
statistics included, because training never touches them. Those stages are then computed once per
page and only the fine-tuned rest runs per member; in EfficientNet-Lite0 at 256 x 512 the first
three stages are ~60 % of a forward pass, so two members cost ~1.4x one, not 2x
(``docs/performance.md``). Members whose frozen stages differ in any tensor share nothing.

Input and output contract: as every ecgdx model (``ecgdx.models.registry``): (N, 1, H, W) float32 in
[0, 1] in, (N, num_classes) out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ecgdx.errors import ModelError

__all__ = ["LogSoftmaxMean", "shared_frozen_stages"]


def _trunk_modules(model: nn.Module, stages: int) -> list[nn.Module]:
    return [model.conv_stem, model.bn1, *list(model.blocks)[:stages]]


def _tail_modules(model: nn.Module, stages: int) -> list[nn.Module]:
    # forward_head's dropout is the identity in eval mode, the only mode this module runs in.
    return [*list(model.blocks)[stages:], model.conv_head, model.bn2, model.global_pool, model.classifier]


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    if left.keys() != right.keys():
        return False
    return all(key.endswith("num_batches_tracked") or torch.equal(left[key], right[key]) for key in left)


def shared_frozen_stages(members: Sequence[nn.Module]) -> int:
    """How many leading block stages (with the stem) all ``members`` hold identically and frozen.

    0 when a member has no frozen stages or is not an EfficientNet-style network (``conv_stem``,
    ``bn1``, ``blocks``). The stages must be both frozen (so they are meant to be equal) and equal
    tensor for tensor (so sharing them changes no output).
    """
    stages = min(int(getattr(m, "frozen_stages", 0) or 0) for m in members)
    if stages <= 0 or not all(hasattr(m, "blocks") and hasattr(m, "conv_stem") for m in members):
        return 0
    first = nn.ModuleList(_trunk_modules(members[0], stages))
    for other in members[1:]:
        if not _same_tensors(first, nn.ModuleList(_trunk_modules(other, stages))):
            return 0
    return stages


class LogSoftmaxMean(nn.Module):
    """Mean log-softmax of ``members`` (eval mode only), sharing their identical frozen trunk."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ModelError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.shared_stages = shared_frozen_stages(members)
        if self.shared_stages:
            self.trunk = nn.Sequential(*_trunk_modules(members[0], self.shared_stages))
            self.tails = nn.ModuleList(nn.Sequential(*_tail_modules(m, self.shared_stages)) for m in members)
        else:
            self.trunk = None
            self.tails = nn.ModuleList(members)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D102 - the members were trained apart; this only infers
        if mode:
            raise ModelError("an ensemble is assembled from trained members for inference; train the members")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trunk is not None:
            x = self.trunk(x)
        return torch.stack([torch.log_softmax(tail(x), dim=1) for tail in self.tails]).mean(dim=0)
