"""The one place where the web app meets ``ecgdx.inference`` (torch-free: numpy, OpenCV, onnxruntime).

Everything else in the app sees only ``WebPrediction`` and ``PredictorBackend``. Which backend is
used comes from the ``ECGDX_PREDICTOR_FACTORY`` setting (a dotted path to a zero-argument callable);
the default, ``onnx_predictor``, loads the model named by ``ECGDX_MODEL_PATH`` or the bundled one.
Tests point the setting at a fake. The backend is created once per process and shared by threads
(onnxruntime sessions are thread-safe).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.utils.module_loading import import_string

from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES


@dataclass
class WebPrediction:
    """What the web app keeps and shows of one prediction.

    label: class key, or None when the quality gate refused the picture (then nothing else matters).
    model_input: (H, W) uint8 picture the model saw. overlay: BGR uint8 heatmap over the page crop.
    leads: [{"name", "importance"}] occlusion drop of P(label) per lead (or grid cell), largest first.
    logits: the network's raw outputs (the decision can be made again from them with a finding).
    st_elevation: the ST-elevation finding of the digitised leads that the decision weighed, or None
        when the picture alone decided (``with_st_elevation``); picture_probabilities: then the
        probabilities of the picture alone.
    """

    label: str | None
    probabilities: dict[str, float]
    model_version: str
    gate_ok: bool
    gate_score: float
    gate_reasons: list[str]
    timings_ms: dict[str, float]
    preprocess: dict[str, Any]
    model_input: np.ndarray | None = None
    overlay: np.ndarray | None = None
    leads: list[dict[str, Any]] = field(default_factory=list)
    explanation_method: str = ""
    explanation_note: str = ""
    explanation_probability: float | None = None
    logits: list[float] | None = None
    st_elevation: bool | None = None
    picture_probabilities: dict[str, float] | None = None

    @property
    def display_name(self) -> str | None:
        return DISPLAY_NAMES.get(self.label) if self.label else None


class PredictorBackend(Protocol):
    model_version: str

    def predict(self, gray: np.ndarray, *, explain: bool = True, explain_class: str | None = None) -> WebPrediction:
        """explain_class: explain this class instead of the one decided now (a stored verdict)."""

    def explain_model_input(self, model_input: np.ndarray, label: str, *, canonical: bool,
                            st_elevation: bool | None = None) -> WebPrediction:
        """The explanation of ``label`` on a stored model input (overlay, leads, method, note, probability),
        on the scale of the decision that weighed ``st_elevation``."""

    def with_st_elevation(self, result: WebPrediction, st_elevation: bool | None) -> WebPrediction:
        """``result`` decided again with the ST-elevation finding of the same page's digitised leads
        (unchanged when the model does not weigh it, or the finding is None)."""

    def model_info(self) -> dict[str, Any]: ...


# Without a lead layout the regions are grid cells; a list of all 64 says nothing, the top few do.
GRID_CELLS_SHOWN = 5


def ranked_regions(explanation) -> list[dict[str, Any]]:
    regions = [{"name": str(n), "importance": float(d)} for n, d, _ in explanation.regions]
    return regions[:GRID_CELLS_SHOWN] if explanation.region_method == "grid" else regions


class OnnxPredictorBackend:
    """``ecgdx.inference.Predictor`` behind the ``PredictorBackend`` interface."""

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        from ecgdx.inference import Predictor

        self._predictor = Predictor.from_path(path, threads=threads)
        self.model_version = self._predictor.model_version
        self.path = self._predictor.path

    @property
    def predictor(self):
        """The ``ecgdx.inference.Predictor`` it holds (archive batches reuse it: one copy of the model)."""
        return self._predictor

    def predict(self, gray: np.ndarray, *, explain: bool = True, explain_class: str | None = None) -> WebPrediction:
        from ecgdx.explain import render_overlay

        p = self._predictor.predict(gray, explain=explain, keep_input=True, explain_class=explain_class)
        # The app shows the probabilities the verdict was decided from: at a balanced prior for models
        # with a decision rule (ecgdx.decision), so the verdict is the largest bar; MODEL_CARD.md says why.
        shown = p.decision_probabilities
        out = WebPrediction(
            label=p.label,
            probabilities={k: float(shown.get(k, 0.0)) for k in CLASS_KEYS} if p.label else {},
            model_version=p.model_version,
            gate_ok=bool(p.gate.ok),
            gate_score=float(p.gate.score),
            gate_reasons=[str(r) for r in p.gate.reasons],
            timings_ms={k: float(v) for k, v in p.timings_ms.items()},
            preprocess=dict(p.preprocess),
            logits=list(p.logits) if p.logits else None,
        )
        if p.label is None:
            return out
        out.model_input = p.model_input
        e = p.explanation
        if e is not None:
            out.overlay = render_overlay(e, shown)
            out.leads = ranked_regions(e)
            out.explanation_method = str(e.region_method)
            out.explanation_note = str(e.note)
            out.explanation_probability = float(e.base_probability)
        return out

    def with_st_elevation(self, result: WebPrediction, st_elevation: bool | None) -> WebPrediction:
        from dataclasses import replace

        if result.label is None or not result.logits or not self._predictor.uses_measurements or st_elevation is None:
            return result
        label, _, shown = self._predictor.decision(result.logits, bool(st_elevation))
        changed = label != result.label
        return replace(result, label=label, probabilities=shown,
                       st_elevation=bool(st_elevation), picture_probabilities=dict(result.probabilities),
                       # An explanation of the picture's own answer is not one of this decision.
                       overlay=None if changed else result.overlay, leads=[] if changed else result.leads,
                       explanation_method="" if changed else result.explanation_method,
                       explanation_note="" if changed else result.explanation_note,
                       explanation_probability=None if changed else result.explanation_probability)

    def explain_model_input(self, model_input: np.ndarray, label: str, *, canonical: bool,
                            st_elevation: bool | None = None) -> WebPrediction:
        from ecgdx.explain import render_overlay

        e = self._predictor.explain_model_input(model_input, label, canonical=canonical, st_elevation=st_elevation)
        shown = {label: float(e.base_probability)}
        return WebPrediction(
            label=label, probabilities=shown, model_version=self.model_version, gate_ok=True, gate_score=1.0,
            gate_reasons=[], timings_ms={}, preprocess={}, model_input=model_input,
            overlay=render_overlay(e, shown),
            leads=ranked_regions(e),
            explanation_method=str(e.region_method), explanation_note=str(e.note),
            explanation_probability=float(e.base_probability),
        )

    def model_info(self) -> dict[str, Any]:
        meta = self._predictor.metadata
        return {
            "model_version": self.model_version,
            "classes": [{"key": k, "display_name": DISPLAY_NAMES[k]} for k in CLASS_KEYS],
            "architecture": (meta.get("model") or {}).get("name"),
            "parameters": meta.get("parameters"),
            "temperature": meta.get("temperature"),
            "test_metrics": meta.get("test_metrics"),
            "data_fingerprint": meta.get("data_fingerprint"),
            "preprocess": meta.get("preprocess"),
            "ecgdx_version": meta.get("ecgdx_version"),
            "exported_at": meta.get("exported_at"),
        }


def onnx_predictor() -> OnnxPredictorBackend:
    """Default factory: the ONNX model of ECGDX_MODEL_PATH (setting or env) or the bundled one."""
    return OnnxPredictorBackend(settings.ECGDX_MODEL_PATH, threads=settings.ECGDX_INFERENCE_THREADS)


_lock = threading.Lock()
_backend: PredictorBackend | None = None


def get_predictor() -> PredictorBackend:
    """The process-wide backend, created on first use. Raises ecgdx.errors.ModelError if unavailable."""
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                _backend = import_string(settings.ECGDX_PREDICTOR_FACTORY)()
    return _backend


def set_predictor(backend: PredictorBackend | None) -> None:
    """Install a backend (tests), or None to create one from the settings on next use."""
    global _backend
    with _lock:
        _backend = backend


def reset_predictor() -> None:
    set_predictor(None)
