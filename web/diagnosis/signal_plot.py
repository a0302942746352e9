"""Inline SVG re-plot of digitised leads, in the arrangement the page printed them (no matplotlib).

Paper scale: 100 px per second (the 10 s record is 1000 px wide) and 40 px per mV, i.e. 4 px per
mm at the printer's 25 mm/s and 10 mm/mV; a light 5 mm grid (0.2 s x 0.5 mV). Each row of the
printed layout is one polyline per lead over that lead's own window, labelled at its start; the
rhythm strip is the last row, labelled with its printed lead (or "rhythm strip" when unread). Samples are thinned to 125 Hz keeping each block's extreme (QRS
peaks survive). The SVG is built from numbers only (no user text), so it is safe to inline.
"""

from __future__ import annotations

import numpy as np

from ecgdx.labels import LEADS

PX_PER_S = 100.0
PX_PER_MV = 40.0
ROW_MV = 3.0  # height of a row in mV (+/- 1.5 mV around its baseline)
_LABEL_PAD = 30.0  # px left of the traces for the row labels
_ROWS = {
    "3x4": (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    "6x2": (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
}


def thin_samples(t: np.ndarray, x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep one sample per block of ``step``: the one farthest from the block's mean (peaks survive)."""
    n = (len(x) // step) * step
    if n == 0:
        return t, x
    blocks = x[:n].reshape(-1, step)
    pick = np.argmax(np.abs(blocks - blocks.mean(axis=1, keepdims=True)), axis=1)
    index = np.arange(0, n, step) + pick
    return t[index], x[index]


def _polyline(t: np.ndarray, x: np.ndarray, y0: float, fs: float) -> str:
    """SVG polyline points of finite samples (split at gaps into several polylines)."""
    ok = np.isfinite(x)
    out = []
    edges = np.diff(np.concatenate(([0], ok.view(np.int8), [0])))
    for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        tt, xx = thin_samples(t[s:e], x[s:e], max(1, int(round(fs / 125.0))))
        points = " ".join(f"{_LABEL_PAD + a * PX_PER_S:.1f},{y0 - b * PX_PER_MV:.1f}" for a, b in zip(tt, xx, strict=True))
        out.append(f'<polyline points="{points}"/>')
    return "".join(out)


def plot_rows(template: str, has_rhythm: bool) -> list[tuple[str, ...]]:
    """The printed arrangement: lead names per row, top to bottom; 'rhythm' = the strip."""
    stem = "6x2" if template.startswith("6x2") else "3x4"
    rows = list(_ROWS[stem])
    if has_rhythm:
        rows.append(("rhythm",))
    return rows


def rhythm_label(rhythm_lead: str | None) -> str:
    """The strip's row label: its printed lead, or 'rhythm strip'. Only lead names pass (the SVG is
    inlined, so no other text may reach it)."""
    return rhythm_lead if rhythm_lead in LEADS else "rhythm strip"


def signals_svg(signals: np.ndarray, rhythm: np.ndarray | None, fs: float, template: str,
                rhythm_lead: str | None = None) -> str:
    """SVG markup of a digitised page: signals (12, n) mV in LEADS order (NaN = not printed);
    rhythm_lead: the strip's printed lead (``DigitizedECG.rhythm_lead``), None when unread."""
    rows = plot_rows(template, rhythm is not None)
    row_h = ROW_MV * PX_PER_MV
    width = _LABEL_PAD + 10.0 * PX_PER_S + 10
    height = row_h * len(rows)
    t = np.arange(signals.shape[1]) / fs
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" class="ecg-replot" '
        f'role="img" aria-labelledby="replot-title"><title id="replot-title">Digitised leads, redrawn at '
        f'25 mm/s and 10 mm/mV</title>',
        '<defs><pattern id="ecg-grid" width="20" height="20" patternUnits="userSpaceOnUse" '
        f'x="{_LABEL_PAD:.0f}"><path d="M 20 0 L 0 0 0 20" fill="none" stroke="#f1c6cf" stroke-width="1"/>'
        "</pattern></defs>",
        f'<rect x="{_LABEL_PAD:.0f}" y="0" width="{10 * PX_PER_S:.0f}" height="{height:.0f}" fill="url(#ecg-grid)"/>',
        '<g fill="none" stroke="#14181f" stroke-width="1.1" stroke-linejoin="round">',
    ]
    labels = []
    for r, leads in enumerate(rows):
        y0 = r * row_h + row_h / 2
        for lead in leads:
            x = rhythm if lead == "rhythm" else signals[LEADS.index(lead)]
            parts.append(_polyline(t, x, y0, fs))
            ok = np.flatnonzero(np.isfinite(x))
            start = t[ok[0]] if len(ok) else 0.0
            name = rhythm_label(rhythm_lead) if lead == "rhythm" else lead
            labels.append(f'<text x="{_LABEL_PAD + start * PX_PER_S + 3:.0f}" y="{y0 - 0.9 * PX_PER_MV:.0f}">{name}</text>')
    parts.append("</g>")
    parts.append('<g font-size="13" font-family="sans-serif" fill="#5a6270">' + "".join(labels) + "</g>")
    parts.append("</svg>")
    return "".join(parts)
