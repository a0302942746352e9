"""A fast, deterministic stand-in for the ONNX predictor (most web tests use it)."""

from __future__ import annotations

import cv2
import numpy as np

from diagnosis.inference_adapter import WebPrediction
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES, LEADS, RHYTHM_STRIP


class FakePredictor:
    """Says 'normal' with 70 % for any page with some contrast; refuses flat pictures (the 'gate')."""

    model_version = "fake-20250101-deadbeef"
    calls = 0

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, gray: np.ndarray, *, explain: bool = True, explain_class: str | None = None) -> WebPrediction:
        self.calls += 1
        h, w = gray.shape
        ok = float(gray.std()) >= 5.0
        out = WebPrediction(
            label="normal" if ok else None,
            probabilities=dict(zip(CLASS_KEYS, (0.7, 0.1, 0.15, 0.05), strict=True)) if ok else {},
            model_version=self.model_version,
            gate_ok=ok,
            gate_score=0.91 if ok else 0.05,
            gate_reasons=[] if ok else ["the picture is almost uniform: no ECG traces found"],
            timings_ms={"decode": 1.0, "preprocess": 2.0, "gate": 1.0, "inference": 3.0, "total": 7.0},
            preprocess={"original_size": [h, w], "crop_box": [0, h // 5, w, h - h // 10],
                        "crop_method": "pulses", "template": "3x4_grid", "layout_method": "page"},
        )
        if not ok:
            return out
        out.model_input = cv2.resize(gray, (96, 96), interpolation=cv2.INTER_AREA)
        if explain:
            heat = np.zeros((96, 96, 3), np.uint8)
            heat[:, :, 2] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
            out.overlay = heat
            names = [*LEADS, RHYTHM_STRIP]
            out.leads = [{"name": n, "importance": round(0.2 - 0.02 * i, 4)} for i, n in enumerate(names)]
            out.explanation_method = "page_layout"
            out.explanation_note = "leads found on the page (3x4_grid)"
        return out

    def with_st_elevation(self, result: WebPrediction, st_elevation: bool | None) -> WebPrediction:
        """A model that does not weigh measurements: the result as it was."""
        return result

    def explain_model_input(self, model_input: np.ndarray, label: str, *, canonical: bool,
                            st_elevation: bool | None = None) -> WebPrediction:
        """Like the real backend: the verdict's own probability, since the input is the verdict's."""
        out = self.predict(cv2.resize(model_input, (300, 200)), explain=True)
        out.label = label
        out.explanation_probability = out.probabilities[label]
        out.explanation_note = "explained on the stored model input"
        return out

    def model_info(self) -> dict:
        return {
            "model_version": self.model_version,
            "classes": [{"key": k, "display_name": DISPLAY_NAMES[k]} for k in CLASS_KEYS],
            "architecture": "fake",
            "parameters": 0,
            "temperature": 1.0,
            "test_metrics": {"macro_f1": 0.5},
            "data_fingerprint": None,
            "preprocess": {"height": 96, "width": 96},
            "ecgdx_version": "0",
            "exported_at": None,
        }
