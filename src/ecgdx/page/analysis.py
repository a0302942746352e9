"""One analysis of a page at the working scale, computed once and read by every step that needs it.

The trace-area crop (``preprocessing``) and the lead layout (``layout``: panels, the canonical page)
both start from the same facts about a page: the page shrunk to about ``WORK_WIDTH`` px by an integer
factor, its paper flattened, its ink thresholded, the ink's connected components and, among them,
the calibration pulses. ``PageAnalysis`` computes each of these once, when it is first asked for,
and keeps it, so a page read by the crop and then by the layout is shrunk, flattened and segmented
once instead of twice. The results are exactly those each step computed on its own before.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ecgdx.page.primitives import (
    WORK_WIDTH,
    as_gray,
    component_boxes,
    find_pulses,
    flatten_background,
    shrink,
)
from ecgdx.page.primitives import ink_level as _ink_level

__all__ = ["PageAnalysis"]


class PageAnalysis:
    """The working-scale facts of one page, each computed on first use.

    gray: (H, W) uint8 page as read (any resolution). factor: page px per working px (integer).
    flat: (h, w) uint8 background-flattened working page (paper ~255). ink: (h, w) uint8 0/1,
    ``flat < ink_level``: 63 % of the local paper brightness (``INK_LEVEL``), since the flattening
    divides by it (pink grid lines turn ~185-240 gray, printed ink < 120); higher, up to 75 %, on a
    blurred or faded picture whose darkest ink is grey (``primitives.ink_level``; a sharp page keeps
    63 % exactly). boxes: (n, 4) x, y, w, h of the ink's
    8-connected components. pulses: (calibration-pulse boxes sorted by y, trace rows they mark).
    """

    def __init__(self, gray: Any) -> None:
        self.gray = as_gray(gray)
        self.factor = max(1, round(self.gray.shape[1] / WORK_WIDTH))

    @classmethod
    def of(cls, page: Any) -> PageAnalysis:
        """``page`` itself when it already is one (so callers can pass either), else its analysis."""
        return page if isinstance(page, PageAnalysis) else cls(page)

    @cached_property
    def flat(self) -> np.ndarray:
        return flatten_background(shrink(self.gray, self.factor))

    @cached_property
    def ink_level(self) -> float:
        return _ink_level(self.flat)

    @cached_property
    def ink(self) -> np.ndarray:
        return (self.flat < self.ink_level).view(np.uint8)

    @cached_property
    def boxes(self) -> np.ndarray:
        return component_boxes(self.ink)

    @cached_property
    def pulses(self) -> tuple[np.ndarray, int]:
        return find_pulses(self.boxes, self.ink)
