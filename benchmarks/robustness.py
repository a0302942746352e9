"""Robustness benchmark: the classifier on graded photo-like distortions of the test split.

    python benchmarks/robustness.py [--manifest data/manifest.csv] [--split test] [--model M.onnx]
        [--jobs 2] [--limit N] [--only KIND] [--level KIND:LEVEL] [--no-raw] [--measure] [--json out.json]
        [--markdown out.md]

Every page of the split is distorted (seeded per page and distortion) and classified by the model
(default: the bundled one) twice: with page normalisation (``ecgdx.page.normalize``, the default of
``Predictor``) and without. Macro-F1 and accuracy are computed over all pages with the quality gate
bypassed (``force=True``), so every distortion is scored on the same pages; the gate's acceptance
rate is reported beside them, and the macro-F1 of the pages it accepts (what a user is told; not
scored below 30 pages or when a class has none left). Distortions and severities (pages are the 50 % scale, ~1106 px wide):

    rotation      2, 5, 10 deg, random sign, white fill (a tilted scan)
    perspective   corners moved by 2, 4, 7 % of the short side; the sheet on a dark table
    perspective_fill  the same corner shifts, the sheet filling the picture (no edge to find)
    blur          Gaussian sigma 1, 2, 3 px
    noise         Gaussian sigma 5, 10, 20 grey levels
    jpeg          quality 70, 50, 30
    shadow        brightness falloff across the page of 20, 35, 50 %
    low_res       the page shrunk to 50, 35, 25 % of its width
    photo         "moderate": rotation <= 5 deg, 2 % perspective on a table, 20 % shadow, JPEG 50
    turn          the page turned counter-clockwise by 90, 180, 270 deg (a portrait or upside-down photo)

``--measure`` reads pages as the web app and ``ecgdx predict --measure`` do: each distorted page is
also digitised, and its ST-elevation finding weighed into the decision (for a model whose decision
rule carries the rates, ``ecgdx.decision``); the report then also gives MI sensitivity.

The issue's target is a macro-F1 drop of at most 0.05 for the moderate photo, against clean pages.
Not a test: it takes minutes (about 8,000 predictions for the 180 test pages).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEVERITIES = {
    "rotation": [2.0, 5.0, 10.0],
    "perspective": [0.02, 0.04, 0.07],
    "perspective_fill": [0.02, 0.04, 0.07],
    "blur": [1.0, 2.0, 3.0],
    "noise": [5.0, 10.0, 20.0],
    "jpeg": [70, 50, 30],
    "shadow": [0.2, 0.35, 0.5],
    "low_res": [0.5, 0.35, 0.25],
    "photo": ["moderate"],
    "turn": [90, 180, 270],
}


def distort(gray: np.ndarray, kind: str, level, rng: np.random.Generator) -> np.ndarray:
    """One distortion of a (H, W) uint8 page; returns uint8 gray (size may change)."""
    h, w = gray.shape
    if kind == "clean":
        return gray
    if kind == "rotation":
        angle = float(level) * (1 if rng.random() < 0.5 else -1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        return cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)
    if kind == "perspective":
        return _on_table(gray, float(level), rng)
    if kind == "perspective_fill":
        return _filling_frame(gray, float(level), rng)
    if kind == "turn":
        return np.ascontiguousarray(np.rot90(gray, int(level) // 90))
    if kind == "blur":
        return cv2.GaussianBlur(gray, (0, 0), float(level))
    if kind == "noise":
        return np.clip(gray + rng.normal(0, float(level), gray.shape), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        return cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, int(level)])[1], 0)
    if kind == "shadow":
        return _shadow(gray, float(level), rng)
    if kind == "low_res":
        return cv2.resize(gray, (round(w * level), round(h * level)), interpolation=cv2.INTER_AREA)
    if kind == "photo":
        out = distort(gray, "rotation", rng.uniform(0, 5), rng)
        out = _on_table(out, 0.02, rng)
        out = _shadow(out, 0.2, rng)
        return distort(out, "jpeg", 50, rng)
    raise ValueError(f"unknown distortion {kind!r}")


def _on_table(gray: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The sheet photographed on a dark table: a margin around it and its corners moved."""
    h, w = gray.shape
    margin = int(0.08 * w)
    size = (w + 2 * margin, h + 2 * margin)
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-1, 1, (4, 2)) * share * min(w, h)
    placed = (corners + margin + jitter).astype(np.float32)
    table = int(rng.integers(40, 110))
    return cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, placed), size,
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=table)


def _filling_frame(gray: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The sheet photographed at an angle and filling the picture: corners moved inwards or
    outwards, no table around it (where the sheet pulls in, white paper shows; no edge to find)."""
    h, w = gray.shape
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    placed = (corners + rng.uniform(-1, 1, (4, 2)) * share * min(w, h)).astype(np.float32)
    return cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, placed), (w, h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def _shadow(gray: np.ndarray, depth: float, rng: np.random.Generator) -> np.ndarray:
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)) + 0.5
    gain = 1.0 - depth * np.clip(ramp, 0, 1)
    return np.clip(gray.astype(np.float32) * gain, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- runs


def _configs() -> list[tuple[str, object]]:
    return [("clean", 0)] + [(kind, level) for kind, levels in SEVERITIES.items() for level in levels]


# Fewer accepted pages than this are not scored (their macro-F1 would be one or two pages' luck).
MIN_ANSWERED = 30


def _run_config(task: tuple) -> dict:
    """Classify every page under one distortion, with and without normalisation."""
    kind, level, rows, model, with_raw, measure = task
    from ecgdx.evaluation import classification_metrics
    from ecgdx.inference import Predictor
    from ecgdx.labels import CLASS_KEYS
    from ecgdx.signals.findings import st_elevation_of

    predictors = {True: Predictor(model, normalize=True)}
    if with_raw:
        predictors[False] = Predictor(model, normalize=False)
    out = {"distortion": kind, "level": level, "n": len(rows)}
    started = time.perf_counter()
    templates = np.array([r["template"] for r in rows])
    labels = np.array([CLASS_KEYS.index(r["label"]) for r in rows])
    for normalize, predictor in predictors.items():
        probs, accepted = [], []
        for index, row in enumerate(rows):
            rng = np.random.default_rng([index, zlib.crc32(f'{kind}:{level}'.encode())])
            gray = cv2.imread(row["path"], cv2.IMREAD_GRAYSCALE)
            page = distort(gray, kind, level, rng)
            finding = st_elevation_of(page, normalize=normalize) if measure else None
            result = predictor.predict(page, force=True, st_elevation=finding)
            # Score the decision the model makes: the probabilities it decides from.
            probs.append([result.decision_probabilities[k] for k in CLASS_KEYS])
            accepted.append(bool(result.gate.ok))
        probs, accepted = np.asarray(probs), np.asarray(accepted)
        overall = classification_metrics(labels, probs)
        # What a user is told: the answers on the pages the gate lets through. Not scored (None) when
        # they are few or lack a class, whose F1 would then drop out of the mean.
        answered = (classification_metrics(labels[accepted], probs[accepted])["macro_f1"]
                    if accepted.sum() >= MIN_ANSWERED and len(set(labels[accepted])) == len(CLASS_KEYS) else None)
        out["normalized" if normalize else "raw"] = {
            "macro_f1": overall["macro_f1"], "accuracy": overall["accuracy"], "gate_accepted": float(accepted.mean()),
            "mi_sensitivity": overall["per_class"]["mi"]["recall"],
            "macro_f1_accepted": answered,
            "macro_f1_by_template": {t: classification_metrics(labels[templates == t], probs[templates == t])["macro_f1"]
                                     for t in sorted(set(templates))},
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", help="ONNX model (default: ECGDX_MODEL_PATH or the bundled model)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--limit", type=int, help="use only the first N pages (a quick look)")
    parser.add_argument("--only", action="append", choices=sorted(SEVERITIES),
                        help="run only this distortion (repeatable; clean pages are always run)")
    parser.add_argument("--level", action="append", metavar="KIND:LEVEL",
                        help="run only this distortion level, e.g. perspective_fill:0.04 (repeatable)")
    parser.add_argument("--no-raw", action="store_true",
                        help="skip the run without normalisation (halves the time)")
    parser.add_argument("--measure", action="store_true",
                        help="digitise every distorted page and weigh its ST-elevation finding (as the web app)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the tables here")
    args = parser.parse_args(argv)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        sys.exit(f"robustness: no manifest at {manifest}; make one with `ecgdx data index DATA_DIR --out {manifest}`")
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == args.split]
    if not rows:
        sys.exit(f"robustness: no pages in split {args.split!r} of {manifest}")
    rows = rows[: args.limit] if args.limit else rows
    tasks = [(kind, level, rows, args.model, not args.no_raw, args.measure) for kind, level in _configs()
             if kind == "clean" or (not args.only and not args.level) or kind in (args.only or [])
             or f"{kind}:{level}" in (args.level or [])]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = []
        for result in pool.map(_run_config, tasks):
            results.append(result)
            print(f"{result['distortion']:>11} {result['level']!s:>8}: macro-F1 {result['normalized']['macro_f1']:.3f} "
                  f"(raw {result['raw']['macro_f1'] if 'raw' in result else float('nan'):.3f}), "
                  f"gate {100 * result['normalized']['gate_accepted']:.0f} %",
                  flush=True)
    summary = {"pages": len(rows), "split": args.split, "manifest": str(manifest), "model": args.model or "bundled",
               "measured": bool(args.measure),
               "minutes": round((time.perf_counter() - started) / 60, 1), "results": results}
    text = markdown(summary)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(summary: dict) -> str:
    results = summary["results"]
    clean = next(r for r in results if r["distortion"] == "clean")
    base = clean["normalized"]["macro_f1"]
    decided = "the picture and its measured ST segments" if summary.get("measured") else "the picture"
    lines = [f"{summary['pages']} pages of split `{summary['split']}`, model {summary['model']}, decided from "
             f"{decided}, {summary['minutes']} min.", "",
             "| distortion | level | macro-F1 (normalised) | drop vs clean | macro-F1 (no normalisation) | accuracy | "
             "macro-F1 3x4_grid | macro-F1 6x2_nogrid | gate accepts | macro-F1 of the accepted pages | MI sensitivity |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = r["normalized"]
        by = n["macro_f1_by_template"]
        lines.append(f"| {r['distortion']} | {r['level']} | {n['macro_f1']:.3f} | {base - n['macro_f1']:+.3f} | "
                     f"{r['raw']['macro_f1'] if 'raw' in r else float('nan'):.3f} | {n['accuracy']:.3f} | {by.get('3x4_grid', float('nan')):.3f} | "
                     f"{by.get('6x2_nogrid', float('nan')):.3f} | {100 * n['gate_accepted']:.0f} % | "
                     f"{_number(n.get('macro_f1_accepted'))} | {_number(n.get('mi_sensitivity'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
