"""Inference speed and memory of ``ecgdx.inference.Predictor`` on full-resolution JPEG pages.

    python benchmarks/inference.py --model model.onnx [--runs 110] [--json out.json]

Measured side by side in one process, on the 11 full-resolution JPEGs of shared/data (repeated
round-robin to --runs), all from in-memory bytes (file reading is not timed):

- decode-only: ``cv2.imdecode(bytes, IMREAD_GRAYSCALE)``, the floor any JPEG pipeline pays;
- end-to-end: ``Predictor.predict(bytes)`` = decode + preprocess + quality gate + inference
  (explanations off), one intra-op thread; its per-stage medians come from ``timings_ms``;
- the ratio of the two medians;
- batch throughput: ``Predictor(threads=2).predict_many`` (2 preprocessing workers + 2 intra-op
  threads, batch 16), images per second of wall time;
- memory: VmRSS and VmHWM (peak) from /proc/self/status after loading the model and a few
  single-page predictions, and (in the fresh process that runs the batch) after the batch run.

Single-thread numbers pin OpenCV and OpenMP to one thread (set before they are imported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# One thread everywhere for the latency part; must be set before numpy/OpenCV/onnxruntime load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ECGDX_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def memory_mb() -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of this process, MiB (Linux)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 and p90 of a list of milliseconds."""
    q = np.percentile(samples_ms, [50, 90])
    return {"p50": round(float(q[0]), 2), "p90": round(float(q[1]), 2), "n": len(samples_ms)}


def timed(fn, *args) -> float:
    """Wall time of fn(*args) in milliseconds."""
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000.0


def batch_throughput(model: str, pages: list[bytes], n_images: int) -> dict:
    """Images per second of ``Predictor(threads=2).predict_many`` (batch 16), and the memory after it."""
    cv2.setNumThreads(2)
    from ecgdx.inference import PredictionFailure, Predictor

    predictor = Predictor(model, threads=2)
    batch = [pages[i % len(pages)] for i in range(n_images)]
    predictor.predict_many(batch[:16], batch_size=16)  # warm-up
    t0 = time.perf_counter()
    results = predictor.predict_many(batch, batch_size=16)
    seconds = time.perf_counter() - t0
    return {
        "batch_images_per_s_2_threads": round(len(batch) / seconds, 1),
        "batch_failures": sum(isinstance(r, PredictionFailure) for r in results),
        "memory_mb_after_batch": {k: round(v, 1) for k, v in memory_mb().items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="ecgdx ONNX model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mendeley-v1-fullres-samples",
                        help="folder of full-resolution JPEG pages")
    parser.add_argument("--runs", type=int, default=110, help="timed runs of each single-page measurement")
    parser.add_argument("--batch-images", type=int, default=88, help="pages in the batch throughput run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--batch-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)

    files = sorted(args.data.rglob("*.jpg"))
    if not files:
        print(f"no JPEGs under {args.data}", file=sys.stderr)
        return 1
    pages = [f.read_bytes() for f in files]
    if args.batch_only:
        print(json.dumps(batch_throughput(args.model, pages, args.batch_images)))
        return 0

    cv2.setNumThreads(1)
    from ecgdx.inference import Predictor
    order = [pages[i % len(pages)] for i in range(args.runs)]

    predictor = Predictor(args.model, threads=1)
    for data in pages[:3]:  # warm-up: first-run allocations, lazy initialisation
        predictor.predict(data)
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    memory_single = memory_mb()

    # Interleave the two measurements so background load hits both alike.
    decode_ms, e2e_ms, stages = [], [], {k: [] for k in ("decode", "normalize", "preprocess", "gate", "inference")}
    for data in order:
        decode_ms.append(timed(lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_GRAYSCALE), data))
        t0 = time.perf_counter()
        prediction = predictor.predict(data)
        e2e_ms.append((time.perf_counter() - t0) * 1000.0)
        for key in stages:
            stages[key].append(prediction.timings_ms.get(key, 0.0))
    gate_passed = sum(predictor.predict(d).gate.ok for d in pages)

    # The batch run gets a fresh process, so its memory is not mixed with the single-page predictor's.
    child = subprocess.run(
        [sys.executable, __file__, "--model", str(args.model), "--data", str(args.data),
         "--batch-images", str(args.batch_images), "--batch-only"],
        capture_output=True, text=True, check=True,
    )
    batch_report = json.loads(child.stdout)

    decode, e2e = percentiles(decode_ms), percentiles(e2e_ms)
    report = {
        "model": str(args.model),
        "model_version": predictor.model_version,
        "input_size": [predictor.spec.height, predictor.spec.width],
        "pages": len(pages),
        "page_size": list(cv2.imdecode(np.frombuffer(pages[0], np.uint8), cv2.IMREAD_GRAYSCALE).shape),
        "decode_only_ms": decode,
        "end_to_end_ms": e2e,
        "ratio_p50": round(e2e["p50"] / decode["p50"], 2),
        "stage_p50_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
        "gate_passed": f"{gate_passed}/{len(pages)}",
        **batch_report,
        "memory_mb_after_single": {k: round(v, 1) for k, v in memory_single.items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
