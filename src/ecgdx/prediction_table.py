"""The rows and the CSV of `ecgdx predict`, shared by local runs (``ecgdx.predict``) and archive
batches (``ecgdx.batch``, and the workers' ``diagnosis.batch_tasks``): which pictures a run reads
(``collect_inputs``), one row per picture (``prediction_row``, ``failure_row``), its CSV cells
(``csv_header``, ``csv_cells``), what stderr says about it (``report_message``), and the exit codes.

Only the standard library is imported at module level (``ecgdx --help`` stays fast); this module
imports neither ``ecgdx.predict`` nor ``ecgdx.batch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "CSV_COLUMNS",
    "EXIT_NOTHING_READ",
    "EXIT_OK",
    "EXTRA_COLUMNS",
    "IMAGE_EXTENSIONS",
    "MEASURE_COLUMNS",
    "collect_inputs",
    "csv_cells",
    "csv_header",
    "failure_row",
    "prediction_row",
    "report_message",
]

EXIT_OK = 0
EXIT_NOTHING_READ = 1

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# The fixed leading CSV columns (scripts rely on them); extras follow in EXTRA_COLUMNS order.
CSV_COLUMNS = ("path", "label", "prob_normal", "prob_mi", "prob_abnormal_heartbeat", "prob_history_of_mi")
# prob_* are calibrated at the development data's class mix; balanced_* assume every class equally
# likely beforehand, and decision_rule says how `label` was chosen (ecgdx.decision).
EXTRA_COLUMNS = ("gate_ok", "gate_score", "gate_reasons", "forced", "model_version", "error", "explanation",
                 "decision_rule", "balanced_normal", "balanced_mi", "balanced_abnormal_heartbeat",
                 "balanced_history_of_mi")
# With --measure (ecgdx.signals.measure on the digitised page), appended after EXTRA_COLUMNS.
# st_elevation_criteria: the STEMI criteria (ecgdx.signals.findings) met in the digitised leads; the
# bundled model's decision weighs it (decided_from says so).
MEASURE_COLUMNS = ("heart_rate_bpm", "rr_sdnn_ms", "rr_rmssd_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_bazett_ms",
                   "qtc_fridericia_ms", "axis_deg", "st_elevation_criteria", "decided_from", "measure_error")


def collect_inputs(paths: list[str]) -> list[tuple[str, str]]:
    """(display path, file path) for every picture: files as given, folders searched recursively.

    The display path is the path given on the command line joined with the path inside the folder
    (e.g. ``scans/2024/page.jpg`` for ``scans`` + ``2024/page.jpg``). Files named explicitly are kept
    whatever their extension (a wrong one is reported when it is read); missing paths too.
    """
    found: list[tuple[str, str]] = []
    for given in paths:
        root = Path(given)
        if root.is_dir():
            files = sorted(
                p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
            if not files:
                print(f"ecgdx: warning: no images in folder '{given}'", file=sys.stderr)
            found.extend((os.path.join(given, str(p.relative_to(root))), str(p)) for p in files)
        else:
            found.append((given, given))
    return found


def prediction_row(display: str, result: Any) -> dict[str, Any]:
    """One output row (plain, JSON-serialisable dict) of a Prediction or PredictionFailure, shown as
    ``display``; ``csv_cells`` turns it into the CSV's cells. Shared by local runs and the workers of
    archive batches (``diagnosis.batch_tasks``)."""
    from ecgdx.inference import PredictionFailure

    if isinstance(result, PredictionFailure):
        return failure_row(display, result.error)
    row = result.to_dict()
    row["path"] = display
    row["error"] = None
    row.pop("source", None)
    return row


def failure_row(display: str, error: str) -> dict[str, Any]:
    """The row of a picture that could not be read."""
    return {"path": display, "label": None, "probabilities": {}, "error": error}


def report_message(display: str, result: Any) -> str | None:
    """What stderr says about an unreadable or refused picture; None for a page read normally."""
    from ecgdx.inference import PredictionFailure

    if isinstance(result, PredictionFailure):
        return f"ecgdx: {result.error}"
    if not result.gate.ok:
        why = "; ".join(result.gate.reasons) or "too little evidence"
        verdict = "classified anyway (--force)" if result.forced else "no diagnosis (use --force to classify anyway)"
        return (f"ecgdx: '{display}' does not look like a 12-lead ECG page (quality {result.gate.score:.2f}: "
                f"{why}); {verdict}")
    return None


def csv_header(measured: bool = False) -> list[str]:
    """The CSV's column names (with the measurement columns when ``measured``)."""
    return [*CSV_COLUMNS, *EXTRA_COLUMNS, *(MEASURE_COLUMNS if measured else ())]


def csv_cells(r: dict[str, Any], measured: bool = False) -> list[str]:
    """One row (``prediction_row``) as the CSV's cells, in ``csv_header`` order."""
    from ecgdx.labels import CLASS_KEYS

    probs = r.get("probabilities") or {}
    balanced = r.get("balanced_probabilities") or {}
    gate = r.get("gate") or {}
    values = r.get("measurements") or {}
    values = {**values, "decided_from": r.get("decided_from") or None}
    extra = [_cell(values.get(k)) for k in MEASURE_COLUMNS] if measured else []
    return [
        r["path"], r.get("label") or "",
        *(f"{probs[k]:.6f}" if k in probs else "" for k in CLASS_KEYS),
        "" if not gate else str(gate["ok"]).lower(),
        "" if not gate else f"{gate['score']:.3f}",
        "; ".join(gate.get("reasons", [])),
        str(r.get("forced", False)).lower() if gate else "",
        r.get("model_version") or "",
        r.get("error") or "",
        r.get("explanation_png") or "",
        (r.get("decision_rule") or "") if probs else "",
        *(f"{balanced[k]:.6f}" if k in balanced else "" for k in CLASS_KEYS),
        *extra,
    ]


def _cell(value: Any) -> str:
    """A measurement as CSV text: '' for None, one decimal for numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.1f}" if isinstance(value, float) else str(value)
