"""Shared by the benchmarks that time two source trees (or models) side by side."""

from __future__ import annotations


def round_order(items: dict, k: int) -> list:
    """The (name, value) pairs of ``items`` in running order for round k: reversed on odd rounds.

    With a fixed order (3 December 2026, ``prepare_speed.py``), the tree that ran first was slower in
    all three rounds, by 15 % in a stage whose code was the same in both trees: alternating keeps
    such an effect, or a load that comes and goes with the round, from favouring one tree.
    """
    pairs = list(items.items())
    return pairs if k % 2 == 0 else pairs[::-1]
