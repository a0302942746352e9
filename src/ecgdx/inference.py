"""Torch-free inference: an exported ONNX model + the shared preprocessing + the quality gate.

Usage::

    from ecgdx.inference import Predictor
    predictor = Predictor.from_path("model.onnx")        # or Predictor() for the bundled/env model
    p = predictor.predict("page.jpg")                    # path, bytes, file object or array
    p.label, p.probabilities, p.gate.ok, p.timings_ms
    results = predictor.predict_many(paths, batch_size=16)   # Prediction or PredictionFailure each

One ``Predictor`` holds one onnxruntime session, created once and reused by every call. Per page:

    decode_image -> preprocess_with_details (spec from the model's metadata) -> gate.assess_page
    -> onnxruntime -> the model's decision rule (``ecgdx.decision``: calibrated probabilities at the
    data's class mix and at a balanced prior, and the decided class)

If the gate says the picture is not a readable ECG page, no diagnosis is made (``label`` None, no
probabilities) unless ``force=True``; ``strict=True`` raises ``NotAnEcgError`` instead.

Model lookup for ``Predictor()`` without a path: the file named by ``ECGDX_MODEL_PATH``, else the
bundled ``ecgdx/assets/default.onnx``, else ``ModelError`` telling the user what to do.

Imports only numpy, OpenCV and onnxruntime (never torch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ecgdx.decision import DecisionRule
from ecgdx.errors import EcgdxError, ModelError, NotAnEcgError
from ecgdx.export import INPUT_NAME, OUTPUT_NAME, decode_metadata, open_session
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES
from ecgdx.page.gate import GateResult, assess_page
from ecgdx.page.normalize import normalize_page
from ecgdx.page.preprocessing import (
    Page,
    PreprocessDetails,
    PreprocessSpec,
    load_page,
    preprocess_with_details,
)

__all__ = ["MODEL_ENV", "Prediction", "PredictionFailure", "Predictor", "default_model_path"]

MODEL_ENV = "ECGDX_MODEL_PATH"
BUNDLED_MODEL = "assets/default.onnx"
# Most pages per onnxruntime run (predict_many batches preprocessing more widely than this). Larger
# runs were barely faster per page on CPU (+12 % from 1 to 4 pages with seed_cnn at 384 px) but keep
# onnxruntime's arena at the largest run's activations (RSS 254 MB at 1 page, 515 MB at 4).
RUN_BATCH = 2


@dataclass
class Prediction:
    """Result for one picture.

    source: the path given (str), or None for bytes / arrays.
    label, display_name: predicted class key and its human name; None when the gate refused the
        picture (no diagnosis is made for pictures that do not look like an ECG page).
    probabilities: class key -> probability at the development data's class mix (calibrated on
        out-of-fold predictions, sums to 1); empty when the gate refused the picture.
    balanced_probabilities: the same with all four classes equally likely beforehand; the
        decision rule reads these (``ecgdx.decision``). Empty when refused.
    decision_rule: how ``label`` was chosen from them: "balanced_prior", "fitted_thresholds", or
        "argmax" (of ``probabilities``; models exported before decision rules).
    model_version: ``model_version`` from the ONNX metadata.
    gate: the quality gate's verdict (``ecgdx.page.gate.GateResult``).
    timings_ms: milliseconds of decode, preprocess, gate, inference (for a batch: its share), explain
        (only with explain=True) and total (their sum).
    preprocess: what preprocessing did: original_size (h, w), crop_box (x0, y0, x1, y1 page pixels),
        crop_method, template, layout_method.
    forced: True when a diagnosis was made although the gate refused the picture (force=True).
    explanation: ``ecgdx.explain.Explanation`` when requested.
    model_input: (H, W) uint8 picture the model saw, only with ``predict(..., keep_input=True)``.
    logits: the network's raw outputs (class order ``CLASS_KEYS``); empty when refused.
    st_elevation: whether the digitised leads met the ST-elevation (STEMI) criteria, when that
        finding was weighed into the probabilities and the decision (``Predictor.with_st_elevation``);
        None: the picture alone decided.
    """

    source: str | None
    label: str | None
    display_name: str | None
    probabilities: dict[str, float]
    model_version: str
    gate: GateResult
    timings_ms: dict[str, float]
    preprocess: dict[str, Any]
    forced: bool = False
    explanation: Any = None
    model_input: np.ndarray | None = None
    balanced_probabilities: dict[str, float] | None = None
    decision_rule: str = "argmax"
    logits: list[float] | None = None
    st_elevation: bool | None = None

    @property
    def decision_probabilities(self) -> dict[str, float]:
        """The probabilities ``label`` was decided from (its argmax for the balanced-prior rule):
        balanced-prior ones for models with a decision rule, else ``probabilities``."""
        if self.decision_rule != "argmax" and self.balanced_probabilities:
            return self.balanced_probabilities
        return self.probabilities

    @property
    def decided_from(self) -> str:
        """What the decision read: 'picture' or 'picture and measured ST segments' ('' when refused)."""
        if self.label is None:
            return ""
        return "picture" if self.st_elevation is None else "picture and measured ST segments"

    @property
    def diagnosed(self) -> bool:
        """True when a class was predicted (gate passed, or forced)."""
        return self.label is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (the explanation as its summary, without pixel arrays)."""
        out = {
            "source": self.source,
            "label": self.label,
            "display_name": self.display_name,
            "probabilities": dict(self.probabilities),
            "balanced_probabilities": dict(self.balanced_probabilities or {}),
            "decision_rule": self.decision_rule,
            "st_elevation_criteria_met": self.st_elevation,
            "decided_from": self.decided_from,
            "model_version": self.model_version,
            "gate": self.gate.to_dict(),
            "timings_ms": dict(self.timings_ms),
            "preprocess": dict(self.preprocess),
            "forced": self.forced,
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


@dataclass
class PredictionFailure:
    """A picture that could not be processed (unreadable file, not an image, too large ...)."""

    source: str | None
    error: str
    error_type: str = "InvalidImageError"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error, "error_type": self.error_type}


@dataclass
class _Prepared:
    """One decoded, preprocessed and gated page waiting for inference."""

    source: str | None
    tensor: np.ndarray  # (1, H, W) float32
    details: PreprocessDetails
    gate: GateResult
    timings_ms: dict[str, float]
    lead_regions: Any = None  # ecgdx.explain.Regions, only when explaining
    normalization: dict[str, Any] | None = None  # ecgdx.page.normalize.Normalization.to_dict()
    st_elevation: bool | None = None  # the finding of the page's digitised leads, when given


def default_model_path() -> Path | bytes:
    """The model ``Predictor()`` loads: $ECGDX_MODEL_PATH, else the bundled default.onnx.

    Returns a path, or the model's bytes when the package is not installed as plain files.
    Raises ModelError naming both options when neither exists.
    """
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelError(f"{MODEL_ENV} is set to '{env}', which is not a model file")
        return path
    bundled = resources.files("ecgdx").joinpath(BUNDLED_MODEL)
    if bundled.is_file():
        return Path(str(bundled)) if Path(str(bundled)).is_file() else bundled.read_bytes()
    raise ModelError(
        "no model given and no bundled model is installed: pass --model MODEL.onnx "
        f"(Predictor.from_path(path) in Python) or set {MODEL_ENV}=MODEL.onnx; "
        "make one with `ecgdx export runs/RUN --out MODEL.onnx`"
    )


class Predictor:
    """Classify ECG page pictures with an exported ecgdx ONNX model (see the module docstring).

    Args:
        path: ONNX file; None = ``default_model_path()``.
        threads: onnxruntime intra-op threads, and workers for ``predict_many``'s preprocessing.
            None = 1: the lowest latency per picture on a shared server, and no oversubscription
            when several predictors run side by side; use 2-4 for batch throughput.
        normalize: straighten photos before reading them (``ecgdx.page.normalize``: quarter and half
            turns, sheet perspective, perspective from the page's own lines, rotation up to 15 deg,
            uneven lighting); a clean scan passes unchanged.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, threads: int | None = None,
                 normalize: bool = True) -> None:
        self.normalize = bool(normalize)
        self.threads = 1 if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        model = default_model_path() if path is None else Path(path)
        self.path = model if isinstance(model, Path) else None
        label = f"'{model}'" if isinstance(model, Path) else "the bundled model"
        self.session = open_session(model, threads=self.threads)
        self.metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map, label)
        try:
            self.spec = PreprocessSpec.from_dict(self.metadata["preprocess"])
        except ValueError as exc:
            raise ModelError(f"{label} needs a preprocessing this ecgdx cannot do ({exc}); upgrade ecgdx") from None
        self.temperature = float(self.metadata["temperature"])
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ModelError(f"{label} has an invalid temperature {self.temperature!r}")
        rule = self.metadata.get("decision_rule")
        if rule is None:
            self.rule = DecisionRule(name="argmax", temperature=self.temperature)
        elif isinstance(rule, dict):
            self.rule = DecisionRule.from_dict(rule)
        else:
            raise ModelError(f"{label} has an unreadable decision rule {rule!r}")
        self.model_version = str(self.metadata.get("model_version", "unknown"))
        self.display_names = {k: DISPLAY_NAMES[k] for k in CLASS_KEYS}
        self._check_io(label)

    @classmethod
    def from_path(cls, path: str | os.PathLike | None = None, *, threads: int | None = None,
                  normalize: bool = True) -> Predictor:
        """Same as ``Predictor(path, threads=threads, normalize=normalize)``."""
        return cls(path, threads=threads, normalize=normalize)

    def _check_io(self, label: str) -> None:
        """The graph must take 'image' (N, 1, H, W) matching the spec and return 'logits' (N, 4)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelError(f"{label} must have input '{INPUT_NAME}' and output '{OUTPUT_NAME}'")
        shape = inputs[0].shape
        expected = (1, self.spec.height, self.spec.width)
        fixed = [(got, want) for got, want in zip(shape[1:], expected, strict=False) if isinstance(got, int)]
        if len(shape) != 4 or any(got != want for got, want in fixed):
            raise ModelError(f"{label} takes input shape {shape}, but its spec says (N, {', '.join(map(str, expected))})")

    # ------------------------------------------------------------------------------------- core

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 model inputs -> (N, 4) calibrated probabilities at the data's class mix."""
        return self.rule.data_prior_probabilities(self.logits(batch))

    def balanced_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 model inputs -> (N, 4) probabilities at a balanced prior."""
        return self.rule.balanced_probabilities(self.logits(batch))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 model inputs -> (N, 4) raw logits (float64)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].astype(np.float64)

    def predict(
        self,
        source: Any,
        *,
        explain: bool = False,
        force: bool = False,
        strict: bool = False,
        grid: tuple[int, int] = (8, 8),
        keep_input: bool = False,
        explain_class: str | None = None,
        st_elevation: bool | None = None,
    ) -> Prediction:
        """Classify one picture.

        Args:
            source: path, encoded bytes, binary file object or decoded array (``decode_image``).
            explain: also compute an occlusion explanation (``ecgdx.explain``; ~grid cells + 13
                extra model runs).
            force: classify even when the quality gate refuses the picture (``forced`` is then True).
            strict: raise NotAnEcgError instead of returning an undiagnosed Prediction.
            grid: occlusion grid (rows, columns) for explain.
            keep_input: also return the picture the model saw (``Prediction.model_input``).
            explain_class: explain this class (a key of ``CLASS_KEYS``) instead of the one decided
                now; the web app passes the stored verdict, so a later explanation is of that verdict.
            st_elevation: whether the page's digitised leads meet the ST-elevation criteria
                (``ecgdx.signals.findings.st_elevation_of(source)``), weighed into the decision
                and the explanation when the model carries the rates (``uses_measurements``); None:
                the picture alone decides.

        Raises:
            InvalidImageError: unreadable input. NotAnEcgError: strict and the gate refused it.
        """
        prepared = self._prepare(source, explain, force)
        prepared.st_elevation = st_elevation
        if strict and not force and not prepared.gate.ok:
            raise NotAnEcgError(_refusal(prepared))
        if explain_class is not None and explain_class not in CLASS_KEYS:
            raise ValueError(f"explain_class must be one of {', '.join(CLASS_KEYS)}, got {explain_class!r}")
        result = self._finish([prepared], explain=explain, force=force, grid=grid, explain_class=explain_class)[0]
        if keep_input:
            result.model_input = prepared.details.model_input
        return result

    def predict_many(
        self,
        sources: Iterable[Any],
        batch_size: int = 16,
        *,
        explain: bool = False,
        force: bool = False,
        grid: tuple[int, int] = (8, 8),
        workers: int | None = None,
        st_elevation: Sequence[bool | None] | None = None,
    ) -> list[Prediction | PredictionFailure]:
        """Classify many pictures; one result per source, in order, never stopping on a bad file.

        Preprocessing runs on ``workers`` threads (default: the predictor's ``threads``; OpenCV
        releases the GIL) over chunks of ``batch_size`` pages, inference on runs of up to
        ``RUN_BATCH`` pages of a chunk. With workers > 1 the next chunk is preprocessed while the
        network reads the current one, so neither waits for the other. A source that
        cannot be read becomes a ``PredictionFailure`` naming the problem. ``st_elevation``: one
        finding per source (as ``predict``), or None for the picture alone.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sources = list(sources)
        findings = [None] * len(sources) if st_elevation is None else list(st_elevation)
        if len(findings) != len(sources):
            raise ValueError(f"st_elevation has {len(findings)} values for {len(sources)} sources")
        workers = self.threads if workers is None else max(1, int(workers))
        results: list[Prediction | PredictionFailure] = []
        chunks = [list(zip(sources[start : start + batch_size], findings[start : start + batch_size], strict=True))
                  for start in range(0, len(sources), batch_size)]
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 else _InlineExecutor() as pool:
            pending = [pool.submit(self._prepare_or_fail, s, explain, force, f) for s, f in chunks[0]] if chunks else []
            for index in range(len(chunks)):
                prepared = [future.result() for future in pending]
                if index + 1 < len(chunks):  # queued before this chunk's inference starts
                    pending = [pool.submit(self._prepare_or_fail, s, explain, force, f)
                               for s, f in chunks[index + 1]]
                ready = [p for p in prepared if isinstance(p, _Prepared)]
                finished = iter(self._finish(ready, explain=explain, force=force, grid=grid))
                results.extend(next(finished) if isinstance(p, _Prepared) else p for p in prepared)
        return results

    # ---------------------------------------------------------------------------------- stages

    def _prepare_or_fail(self, source: Any, explain: bool, force: bool,
                         st_elevation: bool | None = None) -> _Prepared | PredictionFailure:
        try:
            prepared = self._prepare(source, explain, force)
            prepared.st_elevation = st_elevation
            return prepared
        except EcgdxError as exc:
            return PredictionFailure(_source_name(source), str(exc), type(exc).__name__)
        except Exception as exc:  # one odd picture must not stop a batch of thousands
            name = _source_name(source) or "the picture"
            return PredictionFailure(_source_name(source), f"{name}: unexpected error {type(exc).__name__}: {exc}",
                                     type(exc).__name__)

    def _prepare(self, source: Any, explain: bool, force: bool) -> _Prepared:
        """Decode, preprocess and gate one picture (everything before inference), timed.

        With explain, the lead layout is found here too (it needs the decoded page, which is not
        kept), but only for pictures that will be diagnosed.
        """
        t0 = time.perf_counter()
        page = load_page(source, self.spec)  # large JPEGs are decoded at reduced size: much faster
        t1 = time.perf_counter()
        page, normalization = self._normalized(page)
        gray = page.gray
        t2 = time.perf_counter()
        tensor, details = preprocess_with_details(page, self.spec)
        t3 = time.perf_counter()
        # Without the crop's pulse evidence (crop != "auto") the gate analyses the page again, but
        # still judges this record's lead layout.
        gate = assess_page(gray, details=details)
        t4 = time.perf_counter()
        timings = {"decode": _ms(t1 - t0), "normalize": _ms(t2 - t1), "preprocess": _ms(t3 - t2),
                   "gate": _ms(t4 - t3)}
        regions = None
        if explain and (gate.ok or force):
            from ecgdx.explain import lead_regions

            # Needs the page itself (for the lead layout), which is not kept after this step.
            regions = lead_regions(self.spec, details, gray)
            timings["explain"] = _ms(time.perf_counter() - t4)
        return _Prepared(_source_name(source), tensor, details, gate, timings, regions, normalization)

    def _normalized(self, page: Page) -> tuple[Page, dict[str, Any] | None]:
        if not self.normalize:
            return page, None
        flat, info = normalize_page(page.gray)
        if info.applied:
            # Crop boxes are then in the straightened page's pixels (scaled), not the upload's; a
            # quarter turn swaps the page's height and width.
            size = page.original_size
            if getattr(info, "turn_deg", 0) in (90, 270):
                size = (size[1], size[0])
            page = Page(flat, size, page.scale)
        return page, info.to_dict()

    def _finish(
        self, prepared: Sequence[_Prepared], *, explain: bool, force: bool, grid: tuple[int, int],
        explain_class: str | None = None,
    ) -> list[Prediction]:
        """Run inference on the pages that passed the gate (or all, when forced) as one batch."""
        todo = [i for i, p in enumerate(prepared) if p.gate.ok or force]
        logits: dict[int, np.ndarray] = {}
        share = 0.0
        if todo:
            t0 = time.perf_counter()
            batch = np.stack([prepared[i].tensor for i in todo])
            # Runs of at most RUN_BATCH pages (see RUN_BATCH for why not the whole chunk).
            out = [self.logits(batch[j : j + RUN_BATCH]) for j in range(0, len(batch), RUN_BATCH)]
            logits = dict(zip(todo, np.concatenate(out), strict=True))
            share = _ms((time.perf_counter() - t0) / len(todo))
        # The finding is weighed only by rules that carry its rates (``DecisionRule.evidence``).
        finding = {i: prepared[i].st_elevation if self.uses_measurements else None for i in logits}
        results = []
        for i, p in enumerate(prepared):
            timings = dict(p.timings_ms, inference=share if i in logits else 0.0)
            label = display = None
            probabilities: dict[str, float] = {}
            balanced_probabilities: dict[str, float] = {}
            explanation = None
            if i in logits:
                label, probabilities, balanced_probabilities = self.decision(logits[i], finding[i])
                display = self.display_names[label]
                if explain:
                    t0 = time.perf_counter()
                    explanation = self._explain(p, CLASS_KEYS.index(explain_class or label), grid, finding[i])
                    timings["explain"] = timings.get("explain", 0.0) + _ms(time.perf_counter() - t0)
            timings["total"] = round(sum(timings.values()), 3)
            results.append(Prediction(
                source=p.source, label=label, display_name=display, probabilities=probabilities,
                model_version=self.model_version, gate=p.gate, timings_ms=timings,
                preprocess=_details_dict(p.details, p.normalization), forced=bool(i in logits and not p.gate.ok),
                explanation=explanation, balanced_probabilities=balanced_probabilities,
                decision_rule=self.rule.name, logits=[float(v) for v in logits[i]] if i in logits else None,
                st_elevation=finding.get(i),
            ))
        return results

    @property
    def uses_measurements(self) -> bool:
        """True when this model's decision can weigh the ST-elevation finding of the digitised leads
        (``with_st_elevation``); the model card gives the rates it uses."""
        return self.rule.uses_measurements

    def with_st_elevation(self, prediction: Prediction, st_elevation: bool | None) -> Prediction:
        """``prediction`` decided again with the ST-elevation (STEMI) criteria finding of the same page's
        digitised leads (``ecgdx.signals.findings.st_elevation_of(...)``) as evidence
        (``ecgdx.decision``: Bayes' rule with the rates counted on the training pages).

        st_elevation: True / False as the criteria were met or not; None (not digitised) gives the
        picture's own decision back. A refused page, or a model without rates, is returned unchanged.
        The explanation, if any, is dropped when the decided class changes (explain again with
        ``explain_model_input(..., st_elevation=...)``).
        """
        from dataclasses import replace

        if prediction.label is None or not prediction.logits or not self.uses_measurements:
            return prediction
        if st_elevation is not None:
            st_elevation = bool(st_elevation)
        label, probabilities, balanced = self.decision(prediction.logits, st_elevation)
        explanation = prediction.explanation if label == prediction.label else None
        return replace(prediction, label=label, display_name=self.display_names[label], probabilities=probabilities,
                       balanced_probabilities=balanced, st_elevation=st_elevation, explanation=explanation)

    def decision(self, logits: Sequence[float], st_elevation: bool | None = None
                 ) -> tuple[str, dict[str, float], dict[str, float]]:
        """(label, data-mix probabilities, balanced probabilities) of one page's raw logits, by this
        model's rule, with the ST-elevation finding weighed when the rule carries its rates."""
        z = np.asarray(logits, np.float64)[None]
        finding = st_elevation if self.uses_measurements else None
        label = CLASS_KEYS[int(self.rule.decide(z, finding)[0])]
        probabilities = self.rule.data_prior_probabilities(z, finding)[0]
        balanced = self.rule.balanced_probabilities(z, finding)[0]
        return (label, {k: float(v) for k, v in zip(CLASS_KEYS, probabilities, strict=True)},
                {k: float(v) for k, v in zip(CLASS_KEYS, balanced, strict=True)})

    def _scorer(self, st_elevation: bool | None = None):
        """Batch -> the probabilities the decision reads (the finding included), for occlusion."""
        if self.rule.name == "argmax":
            return self.probabilities
        return lambda batch: self.rule.balanced_probabilities(self.logits(batch), st_elevation)

    def explain_model_input(self, model_input: np.ndarray, target: str, *, canonical: bool,
                            grid: tuple[int, int] = (8, 8), st_elevation: bool | None = None):
        """Explain class ``target`` on a stored model input, so the explanation is of exactly what
        the verdict saw.

        model_input: (H, W) uint8, as ``Prediction.model_input`` (the tensor is model_input / 255,
            bit for bit), of this model's spec size. canonical: the page was read in the canonical
            layout (``preprocess["layout_method"] == "canonical"``); lead boxes are then known,
            otherwise grid cells are ranked. The explanation's ``base_probability`` is the
            verdict's probability of ``target``.
        st_elevation: the finding the verdict weighed (``Prediction.st_elevation``), so that the
            occluded probabilities are on the verdict's scale.
        """
        from dataclasses import replace

        from ecgdx.explain import Regions, canonical_regions, explain_input

        image = np.asarray(model_input)
        if image.dtype != np.uint8 or image.shape != (self.spec.height, self.spec.width):
            raise ModelError(f"a stored model input must be a ({self.spec.height}, {self.spec.width}) uint8 "
                             f"picture for this model, got {image.dtype} {image.shape}")
        if target not in CLASS_KEYS:
            raise ValueError(f"target must be one of {', '.join(CLASS_KEYS)}, got {target!r}")
        tensor = (image.astype(np.float32) / 255.0)[None]
        regions = canonical_regions(self.spec) if canonical else Regions(
            {}, "grid", "the lead layout of this page was not found; ranking grid cells instead")
        explanation = explain_input(self._scorer(st_elevation), tensor, CLASS_KEYS.index(target), regions=regions,
                                    grid=grid, spec=self.spec)
        return replace(explanation, background=image, background_kind="model_input")

    def _explain(self, prepared: _Prepared, target: int, grid: tuple[int, int], st_elevation: bool | None = None):
        from ecgdx.explain import explain_input

        # Occlusion scores the probabilities the decision reads, so the explanation is of the verdict.
        return explain_input(
            self._scorer(st_elevation), prepared.tensor, target, regions=prepared.lead_regions, grid=grid,
            details=prepared.details, spec=self.spec,
        )


# ------------------------------------------------------------------------------------- helpers


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _refusal(prepared: _Prepared) -> str:
    name = f"'{prepared.source}'" if prepared.source else "the picture"
    reasons = "; ".join(prepared.gate.reasons) or "low overall evidence"
    return (f"{name} does not look like a readable 12-lead ECG page (quality score "
            f"{prepared.gate.score:.2f}): {reasons}")


def _details_dict(details: PreprocessDetails, normalization: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "original_size": list(details.original_size),
        "crop_box": [int(v) for v in details.crop_box],
        "crop_method": details.crop_method,
        "template": details.template,
        "layout_method": details.layout_method,
    }
    if normalization is not None:
        out["normalization"] = normalization
    return out


def _source_name(source: Any) -> str | None:
    if isinstance(source, str | os.PathLike):
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class _InlineExecutor:
    """``ThreadPoolExecutor`` stand-in that runs in the calling thread (no thread for workers=1)."""

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done
