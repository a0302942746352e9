"""Export a trained checkpoint to one self-describing ONNX file, and read that description back.

``ecgdx export runs/honest-seed_cnn --out model.onnx`` runs ``export_checkpoint``:

    load_checkpoint -> torch.onnx.export (TorchScript exporter, dynamo=False)
    -> metadata_props (JSON strings, see ``METADATA_KEYS``) -> parity check with onnxruntime
    -> write the single file atomically

The file has one input ``image`` (N, 1, H, W) float32 in [0, 1] (1.0 = white paper) with a dynamic
batch axis and one output ``logits`` (N, 4) in ``ecgdx.labels.CLASS_KEYS`` order. Everything
inference needs (class order, preprocessing spec, temperature) travels inside the file, so a
``Predictor`` never needs the checkpoint, the config or torch.

Why the TorchScript exporter: for these plain CNNs it gives a small, fully constant-folded graph
with a named dynamic batch axis and no onnxscript dependency at export time; the dynamo exporter
is not needed for anything here.

Parity: onnxruntime and PyTorch run the same >= 4 inputs (random pages, plus real preprocessed
images when given); if the largest absolute logit difference exceeds ``PARITY_TOLERANCE`` the
export fails with ``ModelError`` and no file is written.

``read_model_metadata`` is torch-free and onnx-free: it reads the metadata through onnxruntime
(``InferenceSession.get_modelmeta().custom_metadata_map``), which the base install has.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgdx import __version__
from ecgdx.errors import ModelError
from ecgdx.labels import CLASS_KEYS

__all__ = [
    "INPUT_NAME",
    "METADATA_KEYS",
    "ONNX_FORMAT",
    "OUTPUT_NAME",
    "PARITY_TOLERANCE",
    "decode_metadata",
    "export_checkpoint",
    "export_ensemble",
    "read_model_metadata",
]

ONNX_FORMAT = "ecgdx-onnx/1"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
# Float32 CNN logits of the same graph in two runtimes differ by ~1e-6; 1e-4 catches real mistakes
# (wrong weights, BatchNorm left in train mode, a dropped layer) without flaking on summation order.
PARITY_TOLERANCE = 1e-4
# Batch sizes of the random parity inputs: two different sizes exercise the dynamic batch axis.
_RANDOM_PARITY_BATCHES = (1, 3)

# Every key written into metadata_props; values are JSON. Keys are stable: readers rely on them.
METADATA_KEYS: tuple[str, ...] = (
    "ecgdx_format",
    "classes",
    "display_names",
    "preprocess",
    "model",
    "model_version",
    "data_fingerprint",
    "test_metrics",
    "temperature",
    "decision_rule",
    "parameters",
    "ecgdx_version",
    "exported_at",
)


# --------------------------------------------------------------------------------------------------
# Reading (torch-free)
# --------------------------------------------------------------------------------------------------


def decode_metadata(custom_metadata: Mapping[str, str], source: str = "the model") -> dict[str, Any]:
    """Parse an ONNX file's metadata_props (str -> JSON str) into a dict and check it is ecgdx's.

    Raises:
        ModelError: not an ecgdx ONNX file, an unknown format version, or a class order other than
            ``ecgdx.labels.CLASS_KEYS``.
    """
    meta: dict[str, Any] = {}
    for key, text in custom_metadata.items():
        try:
            meta[key] = json.loads(text)
        except (TypeError, ValueError):
            meta[key] = text  # foreign keys need not be JSON; keep them as plain strings
    fmt = meta.get("ecgdx_format")
    if fmt is None:
        raise ModelError(
            f"{source} is an ONNX model but not an ecgdx model (no ecgdx_format metadata); "
            "export one with `ecgdx export CHECKPOINT --out model.onnx`"
        )
    if fmt != ONNX_FORMAT:
        raise ModelError(f"{source} has format {fmt!r}; this ecgdx {__version__} reads {ONNX_FORMAT!r}")
    missing = [k for k in ("classes", "preprocess", "temperature") if k not in meta]
    if missing:
        raise ModelError(f"{source} lacks required metadata: {', '.join(missing)}")
    if tuple(meta["classes"]) != CLASS_KEYS:
        raise ModelError(f"{source} predicts classes {meta['classes']}, expected {list(CLASS_KEYS)}")
    return meta


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of an ecgdx ONNX file as a dict of decoded JSON values (keys: ``METADATA_KEYS``).

    Uses onnxruntime only (no torch, no onnx package). Raises ModelError for a missing, unreadable
    or foreign file.
    """
    session = open_session(path, threads=1)
    return decode_metadata(session.get_modelmeta().custom_metadata_map, f"'{path}'")


def open_session(path_or_bytes: str | os.PathLike | bytes, threads: int = 1):
    """onnxruntime CPU ``InferenceSession`` with ``threads`` intra-op threads (ModelError on failure).

    One inter-op thread: these graphs are a single chain, parallel branches would only add overhead.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    # Without this onnxruntime spins its worker threads after each run, burning a core at idle.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The memory arena stays on: without it every run page-faults its activations in afresh
    # (+13 ms on a 31 ms seed_cnn page); its size is bounded by running small batches instead
    # (inference.RUN_BATCH, docs/performance.md).
    options.log_severity_level = 3  # errors only: no "unused initializer" chatter on stderr
    label = "the exported model" if isinstance(path_or_bytes, bytes) else f"'{path_or_bytes}'"
    if not isinstance(path_or_bytes, bytes):
        path = Path(path_or_bytes)
        if not path.is_file():
            raise ModelError(f"{label}: no model file there")
        path_or_bytes = str(path)
    try:
        return ort.InferenceSession(path_or_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types; say what happened
        raise ModelError(f"{label} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None


# --------------------------------------------------------------------------------------------------
# Export (needs the [train] extra: torch and onnx)
# --------------------------------------------------------------------------------------------------


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    check_images: Sequence[Any] = (),
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
    verbose: bool = True,
    decision_rule: Any = None,
    test_metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint (``best.pt`` or its run directory) to a single self-describing ONNX file.

    Args:
        checkpoint: checkpoint file or run directory (``ecgdx.training.load_checkpoint``).
        out: ONNX file to write (replaced atomically, and only after the parity check passed).
        opset: ONNX opset version.
        check_images: optional real images (anything ``preprocess`` accepts) to add to the parity check.
        tolerance: largest accepted absolute logit difference between onnxruntime and PyTorch.
        seed: seed of the random parity inputs.
        verbose: print the parity result.
        decision_rule: an ``ecgdx.decision.DecisionRule`` (e.g. from ``ecgdx cv``'s
            ``decision_rule.json``); its temperature replaces the checkpoint's. None: argmax at the
            checkpoint's temperature, as models before decision rules.
        test_metrics: replaces the checkpoint's headline test numbers (e.g. the cross-validation's
            test-fold check).

    Returns:
        {"path", "metadata", "max_abs_diff", "parity_inputs", "bytes"}.

    Raises:
        ModelError: unreadable checkpoint, a file that is not self-contained, or failed parity.
    """
    from ecgdx.training import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    metadata = build_metadata(ckpt, _checkpoint_file(checkpoint), decision_rule=decision_rule)
    return _export_checked(model, metadata, Path(out), opset=opset, check_images=check_images,
                           tolerance=tolerance, seed=seed, verbose=verbose, test_metrics=test_metrics)


def export_ensemble(
    checkpoints: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    check_images: Sequence[Any] = (),
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
    verbose: bool = True,
    decision_rule: Any = None,
    test_metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export several checkpoints as one ONNX graph whose logits are their mean log-softmax.

    ``ecgdx.models.ensemble.LogSoftmaxMean``: the members' identical frozen trunk is computed once.
    The members must share the classes, the preprocessing and the training data (fingerprint), since
    one page input feeds them all. ``model_version`` is "<name>x<n>-<date>-<hash>", the hash over
    the members' weight hashes in the order given; the metadata lists each member with its own hash.
    The arguments are those of ``export_checkpoint``; ``decision_rule`` should be fitted on the
    ensemble's own out-of-fold logits (``benchmarks/measurement_evidence.py`` on the folder
    ``benchmarks/ensemble.py --save`` writes).

    Raises:
        ModelError: fewer than 2 checkpoints, members that do not fit together, or failed parity.
    """
    from ecgdx.models.ensemble import LogSoftmaxMean
    from ecgdx.training import load_checkpoint

    if len(checkpoints) < 2:
        raise ModelError(f"an ensemble needs at least 2 checkpoints, got {len(checkpoints)}")
    loaded = [load_checkpoint(c) for c in checkpoints]
    first = loaded[0][1]
    for path, (_, ckpt) in zip(checkpoints[1:], loaded[1:], strict=True):
        for key in ("preprocess", "classes", "data_fingerprint"):
            if _jsonable(ckpt.get(key)) != _jsonable(first.get(key)):
                raise ModelError(f"{path} has another {key} than {checkpoints[0]}: the members of one "
                                 "model must read the same page input")
    model = LogSoftmaxMean([m for m, _ in loaded])
    paths = [_checkpoint_file(c) for c in checkpoints]
    metadata = build_metadata(first, paths[0], decision_rule=decision_rule)
    hashes = [weights_hash(ckpt["state_dict"]) for _, ckpt in loaded]
    names = sorted({ckpt["model"]["name"] for _, ckpt in loaded})
    name = f"{len(loaded)} x {names[0]}" if len(names) == 1 else " + ".join(names)
    newest = max(_dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.UTC) for p in paths if p.is_file())
    metadata["model"] = {
        "name": name,
        "combination": "mean of the members' log-softmax",
        "shared_stages": model.shared_stages,
        "members": [{"name": ckpt["model"]["name"], "kwargs": _jsonable(ckpt["model"]["kwargs"]),
                     "weights_hash": h[:8]} for (_, ckpt), h in zip(loaded, hashes, strict=True)],
    }
    combined = hashlib.sha256("|".join(hashes).encode()).hexdigest()
    metadata["model_version"] = f"{names[0]}x{len(loaded)}-{newest:%Y%m%d}-{combined[:8]}"
    metadata["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return _export_checked(model, metadata, Path(out), opset=opset, check_images=check_images,
                           tolerance=tolerance, seed=seed, verbose=verbose, test_metrics=test_metrics)


def _checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    """The checkpoint file of a path that may be its run directory (as ``load_checkpoint`` reads it)."""
    path = Path(checkpoint)
    return path / "best.pt" if path.is_dir() else path


def _export_checked(model, metadata: dict[str, Any], out: Path, *, opset: int, check_images: Sequence[Any],
                    tolerance: float, seed: int, verbose: bool,
                    test_metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Export, check parity against PyTorch, and only then write ``out`` (``export_checkpoint``'s return).
    ``test_metrics``, when given, replace the checkpoint's headline numbers in ``metadata``."""
    if test_metrics is not None:
        metadata["test_metrics"] = _jsonable(dict(test_metrics))
    onnx_bytes = _export_bytes(model, metadata, opset)
    inputs = _parity_inputs(metadata["preprocess"], check_images, seed)
    max_diff = parity_max_abs_diff(model, onnx_bytes, inputs)
    n_inputs = sum(len(x) for x in inputs)
    if verbose:
        print(f"parity: onnxruntime vs PyTorch on {n_inputs} inputs, max |logit diff| = {max_diff:.2e} "
              f"(tolerance {tolerance:.0e})")
    if not max_diff <= tolerance:  # also catches NaN
        raise ModelError(
            f"exported model disagrees with the checkpoint: max |logit diff| {max_diff:.3g} > {tolerance:g}; "
            "the ONNX file was not written"
        )
    _write_atomically(out, onnx_bytes)
    return {"path": out, "metadata": metadata, "max_abs_diff": max_diff, "parity_inputs": n_inputs,
            "bytes": len(onnx_bytes)}


def set_decision_rule(model: str | os.PathLike, out: str | os.PathLike, decision_rule: Any, *,
                      version_suffix: str = "") -> dict[str, Any]:
    """Copy an exported ecgdx ONNX model with another decision rule (``ecgdx.decision.DecisionRule``),
    the weights byte for byte the same: e.g. to add the ST-elevation rates of
    ``benchmarks/measurement_evidence.py --write-rule``. The temperature follows the rule;
    ``version_suffix`` is appended to the model version (once), since the decisions change.
    Needs the ``onnx`` package (the [train] extra). Returns the new metadata.
    """
    import onnx

    source = Path(model)
    try:
        proto = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds for a bad file
        raise ModelError(f"'{source}' could not be read as an ONNX model: {exc}") from None
    metadata = decode_metadata({p.key: p.value for p in proto.metadata_props}, f"'{source}'")
    metadata["decision_rule"] = decision_rule.to_dict()
    metadata["temperature"] = float(decision_rule.temperature)
    version = str(metadata.get("model_version", "unknown"))
    if version_suffix and not version.endswith(version_suffix):
        metadata["model_version"] = version + version_suffix
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})
    proto.doc_string = f"ecgdx {metadata['model_version']}: 12-lead ECG page classifier (research use only)"
    _write_atomically(Path(out), proto.SerializeToString())
    return metadata


def build_metadata(ckpt: Mapping[str, Any], checkpoint_path: Path | None = None, *,
                   decision_rule: Any = None) -> dict[str, Any]:
    """The metadata dict (``METADATA_KEYS``) of a checkpoint dict.

    model_version = "<model name>-<YYYYMMDD>-<first 8 hex of the weights' SHA-256>": the date is the
    checkpoint file's modification date (UTC), so exporting the same checkpoint twice gives the same
    version, and the hash changes whenever any weight does.
    """
    name = ckpt["model"]["name"]
    stamp = _dt.datetime.now(_dt.UTC)
    if checkpoint_path is not None and checkpoint_path.is_file():
        stamp = _dt.datetime.fromtimestamp(checkpoint_path.stat().st_mtime, _dt.UTC)
    version = f"{name}-{stamp:%Y%m%d}-{weights_hash(ckpt['state_dict'])[:8]}"
    return {
        "ecgdx_format": ONNX_FORMAT,
        "classes": list(ckpt["classes"]),
        "display_names": dict(ckpt["display_names"]),
        "preprocess": dict(ckpt["preprocess"]),
        "model": {"name": name, "kwargs": _jsonable(ckpt["model"]["kwargs"])},
        "model_version": version,
        "data_fingerprint": _jsonable(ckpt.get("data_fingerprint")),
        "test_metrics": _jsonable(ckpt.get("test_metrics")),
        # No temperature yet (calibration runs after training) = uncalibrated softmax.
        "temperature": float(decision_rule.temperature if decision_rule is not None
                             else ckpt.get("temperature") or 1.0),
        # None = argmax at that temperature (models exported before decision rules read the same way).
        "decision_rule": None if decision_rule is None else decision_rule.to_dict(),
        "parameters": int(ckpt.get("parameters") or 0),
        "ecgdx_version": __version__,
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def weights_hash(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        array = state_dict[key].detach().cpu().contiguous().numpy()
        digest.update(f"{key}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _export_bytes(model, metadata: Mapping[str, Any], opset: int) -> bytes:
    """Serialized ONNX model with the metadata embedded; raises ModelError if not self-contained."""
    import onnx
    import torch

    spec = metadata["preprocess"]
    dummy = torch.rand(2, 1, int(spec.get("height", 384)), int(spec.get("width", 384)))
    with tempfile.TemporaryDirectory(prefix="ecgdx-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is chosen on purpose (module docstring); its deprecation notice is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model.eval(),
                (dummy,),
                str(path),
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        side_files = sorted(p.name for p in Path(tmp).iterdir() if p != path)
        proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in _all_tensors(proto.graph) if onnx.external_data_helper.uses_external_data(t)]
    if side_files or external:
        raise ModelError(f"the export is not a single file (external data: {side_files or external})")
    onnx.helper.set_model_props(proto, {key: json.dumps(metadata[key]) for key in METADATA_KEYS})
    proto.doc_string = f"ecgdx {metadata['model_version']}: 12-lead ECG page classifier (research use only)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _all_tensors(graph) -> list:
    """Initializers and attribute tensors of a graph and of its subgraphs (If/Loop bodies)."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            for sub in [attr.g] if attr.HasField("g") else []:
                tensors.extend(_all_tensors(sub))
            for sub in attr.graphs:
                tensors.extend(_all_tensors(sub))
    return tensors


def _parity_inputs(spec_dict: Mapping[str, Any], check_images: Sequence[Any], seed: int) -> list[np.ndarray]:
    """Batches (N, 1, H, W) float32 for the parity check: random pages plus the real images.

    Random inputs are mostly paper with dark speckles, a crude stand-in for the model's real inputs;
    uniform noise alone would leave BatchNorm statistics far from anything seen in training.
    """
    from ecgdx.page.preprocessing import PreprocessSpec, preprocess

    spec = PreprocessSpec.from_dict(spec_dict)
    rng = np.random.default_rng(seed)
    batches = []
    for n in _RANDOM_PARITY_BATCHES:
        paper = rng.uniform(0.85, 1.0, (n, 1, spec.height, spec.width))
        ink = rng.random((n, 1, spec.height, spec.width)) < 0.05
        batches.append(np.where(ink, rng.uniform(0.0, 0.3, paper.shape), paper).astype(np.float32))
    if check_images:
        batches.append(np.stack([preprocess(image, spec) for image in check_images]).astype(np.float32))
    return batches


def parity_max_abs_diff(model, onnx_bytes: bytes, batches: Sequence[np.ndarray]) -> float:
    """Largest |onnxruntime logits - PyTorch logits| over all batches (float)."""
    import torch

    session = open_session(onnx_bytes, threads=1)
    worst = 0.0
    model.eval()
    for batch in batches:
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        if got.shape != expected.shape:
            raise ModelError(f"exported model returns shape {got.shape}, PyTorch {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        if not np.isfinite(diff):
            return float("inf")  # NaN or inf logits in either runtime: parity cannot hold
        worst = max(worst, diff)
    return worst


def _write_atomically(out: Path, data: bytes) -> None:
    """Write via OUT.tmp + rename, so a reader never sees half a model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON (tuples -> lists, numpy scalars -> numbers) so metadata stays plain."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in ONNX metadata")
