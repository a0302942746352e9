"""Test inputs: the example ECG, broken files, and a tiny real ecgdx ONNX model made without torch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_ECG = REPO / "examples" / "normal" / "Normal_100.png"


def example_bytes() -> bytes:
    return EXAMPLE_ECG.read_bytes()


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def jpeg_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def blank_page() -> bytes:
    """A white page: a valid PNG that is not an ECG."""
    return png_bytes(np.full((400, 560), 255, np.uint8))


def bmp_bytes() -> bytes:
    ok, data = cv2.imencode(".bmp", np.random.default_rng(0).integers(0, 255, (200, 300), dtype=np.uint8))
    assert ok
    return data.tobytes()


def upload(data: bytes, name: str = "page.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def as_file(data: bytes, name: str = "page.png") -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def files_under(root: Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def build_tiny_onnx_model(path: Path, *, height: int = 96, width: int = 96, seed: int = 0) -> Path:
    """A small random CNN in ecgdx's ONNX format (input 'image' (N,1,H,W), output 'logits' (N,4)).

    Built with the onnx package's helpers (no torch): Conv 5x5/4 -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm. Its answers are meaningless but real: the full torch-free inference path runs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ecgdx.export import ONNX_FORMAT
    from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES

    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.5, (8, 1, 5, 5)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, (8,)).astype(np.float32)
    fc_w = rng.normal(0, 1.0, (4, 8)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], kernel_shape=[5, 5], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_ecg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(a, n) for a, n in
                     ((conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"), (fc_b, "fc_b"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ecgdx-tests")
    model.ir_version = 8
    metadata = {
        "ecgdx_format": ONNX_FORMAT,
        "classes": list(CLASS_KEYS),
        "display_names": dict(DISPLAY_NAMES),
        "preprocess": {"height": height, "width": width},
        "model": {"name": "tiny_test_cnn", "kwargs": {}},
        "model_version": "tiny_test_cnn-20250101-0badc0de",
        "data_fingerprint": None,
        "test_metrics": {"accuracy": 0.25, "macro_f1": 0.1},
        "temperature": 1.5,
        "parameters": int(sum(a.size for a in (conv_w, conv_b, fc_w, fc_b))),
        "ecgdx_version": "test",
        "exported_at": "2025-01-01T00:00:00+00:00",
    }
    helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path
