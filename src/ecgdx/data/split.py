"""Group-aware, stratified train/val/test split.

Whole duplicate groups move together, so identical bytes can never sit in two splits. Groups are
stratified by (label, template) because the print template is confounded with the label in the
Mendeley data: a split that drops a small stratum from test would hide exactly the failure we need
to measure. The split is a pure function of (groups, ratios, seed): it sorts before shuffling and
uses numpy's PCG64 generator, which gives the same stream on every machine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecgdx.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_RATIOS: tuple[float, float, float] = (0.7, 0.15, 0.15)

# Ratios are written by people as decimals ("0.7,0.15,0.15"); allow float rounding, nothing more.
_RATIO_SUM_TOLERANCE = 1e-6


def validate_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Return (train, val, test) ratios as floats, or raise ValueError saying what is wrong.

    Valid ratios are exactly three finite, non-negative numbers summing to 1.
    """
    values = tuple(ratios)
    if len(values) != len(SPLITS):
        raise ValueError(f"split ratios need 3 numbers (train, val, test), got {len(values)}: {values}")
    try:
        floats = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"split ratios must be numbers, got {values}") from None
    if any(not math.isfinite(value) or value < 0 for value in floats):
        raise ValueError(f"split ratios must be finite and non-negative, got {floats}")
    if abs(sum(floats) - 1.0) > _RATIO_SUM_TOLERANCE:
        raise ValueError(f"split ratios must sum to 1, got {floats} (sum {sum(floats):g})")
    return floats  # type: ignore[return-value]


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse '0.7,0.15,0.15' (the CLI form) into validated ratios; raise ValueError if invalid."""
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(
            f"split ratios must be 3 comma-separated numbers like 0.7,0.15,0.15, got {text!r}"
        ) from None
    return validate_ratios(numbers)


def split_counts(n_groups: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """How many of n_groups go to (train, val, test), by largest-remainder rounding.

    Plain rounding of small strata loses val/test entirely (8 groups x 0.15 = 1.2 -> 1, but 3 x 0.15
    rounds to 0). So after largest-remainder rounding, every split with a positive ratio that got
    nothing takes one group from the largest split, as long as there are enough groups to go round.
    """
    train_ratio, val_ratio, test_ratio = validate_ratios(ratios)
    quotas = [n_groups * ratio for ratio in (train_ratio, val_ratio, test_ratio)]
    counts = [math.floor(quota) for quota in quotas]
    # Hand out what flooring left over, largest fractional part first; ties go to the later split
    # (test before val before train) because evaluation splits are the ones starved by rounding.
    by_remainder = sorted(range(len(SPLITS)), key=lambda i: (quotas[i] - counts[i], i), reverse=True)
    for index in by_remainder[: n_groups - sum(counts)]:
        counts[index] += 1

    wanted = [i for i, ratio in enumerate((train_ratio, val_ratio, test_ratio)) if ratio > 0]
    if n_groups >= len(wanted):
        for index in wanted:
            if counts[index] == 0:
                donor = max(range(len(SPLITS)), key=lambda i: (counts[i], -i))
                counts[donor] -= 1
                counts[index] += 1
    return counts[0], counts[1], counts[2]


def _field(row: Any, name: str) -> str:
    """Read a field from a dataclass-like row or a mapping (e.g. a csv.DictReader row)."""
    if isinstance(row, Mapping):
        return str(row[name])
    return str(getattr(row, name))


def _stratum_seed(seed: int, label: str, template: str) -> list[int]:
    """Seed material for one stratum: the user seed plus a stable hash of the stratum's name.

    Seeding each stratum on its own means adding images of one class does not reshuffle the others;
    hashlib (not hash()) keeps it identical across processes and machines.
    """
    digest = hashlib.sha256(f"{label}\x1f{template}".encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], "big")]


def _groups_by_stratum(rows: Sequence[Any]) -> dict[tuple[str, str], list[str]]:
    """Map (label, template) to the sorted ids of its groups; a group must have one label."""
    group_label: dict[str, str] = {}
    group_template: dict[str, str] = {}
    for row in rows:
        group, label, template = _field(row, "group"), _field(row, "label"), _field(row, "template")
        known_label = group_label.setdefault(group, label)
        if known_label != label:
            raise DataError(
                f"duplicate group {group} carries two labels ({known_label!r} and {label!r}); "
                "conflicting groups must be removed before splitting"
            )
        # Identical bytes cannot really differ in template; if a labels file says so, take the
        # alphabetically first so the outcome does not depend on row order.
        group_template[group] = min(template, group_template.get(group, template))

    strata: dict[tuple[str, str], list[str]] = {}
    for group in sorted(group_label):
        strata.setdefault((group_label[group], group_template[group]), []).append(group)
    return strata


def assign_group_splits(
    rows: Sequence[Any], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0
) -> dict[str, str]:
    """Map each group id to 'train', 'val' or 'test' (see assign_splits)."""
    validated = validate_ratios(ratios)
    split_of_group: dict[str, str] = {}
    for (label, template), groups in sorted(_groups_by_stratum(rows).items()):
        rng = np.random.default_rng(_stratum_seed(seed, label, template))
        shuffled = [groups[i] for i in rng.permutation(len(groups))]
        start = 0
        for split, count in zip(SPLITS, split_counts(len(groups), validated), strict=True):
            for group in shuffled[start : start + count]:
                split_of_group[group] = split
            start += count
    return split_of_group


def assign_splits(rows: Sequence[Any], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> list[str]:
    """Split names ('train'/'val'/'test') for rows, in row order.

    Rows are objects or mappings with `group`, `label` and `template`. Whole groups are assigned,
    stratified by (label, template), with largest-remainder counts per stratum (see split_counts).
    Deterministic for a given seed, independent of row order and machine.
    """
    split_of_group = assign_group_splits(rows, ratios, seed)
    return [split_of_group[_field(row, "group")] for row in rows]


def assign_group_folds(rows: Sequence[Any], k: int = 5, seed: int = 0) -> list[int]:
    """Cross-validation fold (0..k-1) of every row, in row order.

    Whole duplicate groups go to one fold, stratified by (label, template): each stratum's groups
    are shuffled with the stratum's own seed and dealt out in turn. The dealing carries on from
    stratum to stratum, so the many strata with fewer groups than folds (e.g. 8 MI pages on 3x4)
    do not all fill the first folds. Deterministic for a given seed, independent of row order.
    """
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    fold_of_group: dict[str, int] = {}
    turn = 0
    for (label, template), groups in sorted(_groups_by_stratum(rows).items()):
        rng = np.random.default_rng(_stratum_seed(seed, label, template))
        for i in rng.permutation(len(groups)):
            fold_of_group[groups[i]] = turn % k
            turn += 1
    return [fold_of_group[_field(row, "group")] for row in rows]
