"""`ecgdx predict`, `ecgdx export` and `ecgdx model info`.

Only the standard library is imported at module level so `ecgdx --help` stays fast; onnxruntime,
OpenCV and (for export only) torch are imported when a command runs.

Exit codes: 0 success (for predict: at least one picture could be read, even if some could not or
were refused by the quality gate); 1 nothing could be read, or no pictures were found; 2 invalid
arguments or a model problem (``ecgdx.cli`` turns EcgdxError into 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

# The row and CSV helpers live in ecgdx.prediction_table (shared with ecgdx.batch); imported here for
# this module and re-exported: `from ecgdx.predict import csv_header` etc. keep working.
from ecgdx.prediction_table import (  # noqa: F401
    CSV_COLUMNS,
    EXIT_NOTHING_READ,
    EXIT_OK,
    EXTRA_COLUMNS,
    IMAGE_EXTENSIONS,
    MEASURE_COLUMNS,
    collect_inputs,
    csv_cells,
    csv_header,
    failure_row,
    prediction_row,
    report_message,
)

# Show a progress bar only when a run has more pictures than this.
_PROGRESS_MIN = 16


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `predict`, `export` and `model` (with `model info`) to a CLI's subparsers."""
    predict = subparsers.add_parser(
        "predict",
        help="classify ECG page pictures with an ONNX model (torch-free)",
        description="Classify pictures of 12-lead ECG printouts. PATH may be files or folders (searched "
        "recursively for .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp). Pictures that do not look like an ECG "
        "page get no diagnosis (see --force). Research tool, not a medical device.",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--model", help="ONNX model (default: $ECGDX_MODEL_PATH, else the bundled model)")
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table",
                         help="output format (default table)")
    predict.add_argument("--output", type=Path, help="write the results to this file instead of stdout")
    predict.add_argument("--batch-size", type=_positive_int, default=16,
                         help="pictures per inference batch (default 16)")
    predict.add_argument("--explain", type=Path, metavar="DIR_OUT",
                         help="write an occlusion heatmap PNG per picture into this folder")
    predict.add_argument("--threads", type=_positive_int, default=None,
                         help="CPU threads for inference and preprocessing (default 1)")
    predict.add_argument("--force", action="store_true",
                         help="classify pictures even when the quality gate says they are not ECG pages")
    predict.add_argument("--measure", action="store_true",
                         help="also digitise each page and add heart rate, RR variability, PR, QRS, QT, QTc "
                         "and axis columns (needs the [signal] extra: neurokit2)")
    remote = predict.add_argument_group(
        "archive batches", "classify on `ecgdx worker` machines instead of here (needs the web extra: Celery); "
        "writes the same CSV as a local run, row by row, and a rerun with the same --output skips the files "
        "already in it (docs/web.md, 'Archive batches')")
    remote.add_argument("--broker", metavar="URL",
                        help="send the pictures to the workers of this broker (redis://host:6379/0); "
                        "needs --format csv and --output")
    remote.add_argument("--result-backend", metavar="URL",
                        help="where the workers put the results (default: the broker's Redis; must be the "
                        "workers' ECGDX_RESULT_BACKEND)")
    remote.add_argument("--in-flight", type=_positive_int, metavar="N",
                        help="most pictures sent and not yet answered (default 4 per worker process)")
    predict.set_defaults(func=run_predict)

    export = subparsers.add_parser(
        "export", help="export a trained checkpoint to a self-describing ONNX file (needs the [train] extra)"
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", nargs="+",
                        help="best.pt or its run directory; two or more: one model whose logits are their "
                             "mean log-softmax, identical frozen stages computed once")
    export.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--check-images", nargs="*", default=[], metavar="IMAGE",
                        help="real images to add to the onnxruntime-vs-PyTorch parity check")
    export.add_argument("--decision-rule", type=Path, metavar="JSON",
                        help="decision rule from `ecgdx cv` (decision_rule.json): calibration and decision "
                             "at a balanced prior (default: argmax at the checkpoint's temperature)")
    export.add_argument("--test-metrics", type=Path, metavar="JSON",
                        help="headline test numbers to store instead of the checkpoint's (a JSON object)")
    export.set_defaults(func=run_export)

    model = subparsers.add_parser("model", help="inspect ONNX models")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="{info,set-rule}")
    info = model_commands.add_parser("info", help="print a model's metadata (version, classes, preprocessing, metrics)")
    info.add_argument("path", nargs="?", help="ONNX model (default: $ECGDX_MODEL_PATH, else the bundled model)")
    info.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    info.set_defaults(func=run_model_info)
    set_rule = model_commands.add_parser(
        "set-rule", help="copy a model with another decision rule (the weights unchanged; needs the [train] extra)")
    set_rule.add_argument("path", help="ONNX model to copy")
    set_rule.add_argument("--decision-rule", type=Path, required=True, metavar="JSON",
                          help="the rule (e.g. benchmarks/measurement_evidence.py --write-rule's output)")
    set_rule.add_argument("--out", type=Path, required=True, help="ONNX file to write (may be PATH itself)")
    set_rule.add_argument("--version-suffix", default="",
                          help="append this to the model version, since the decisions change (e.g. --version-suffix=-st)")
    set_rule.set_defaults(func=run_model_set_rule)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------


def run_predict(args: argparse.Namespace) -> int:
    """Classify every picture, print or write the results, report problems per file on stderr."""
    if getattr(args, "broker", None):
        from ecgdx.batch import run_remote  # Celery is imported only there, only now

        return run_remote(args)
    from tqdm import tqdm

    from ecgdx.inference import Prediction, Predictor

    inputs = collect_inputs(args.paths)
    if not inputs:
        print("ecgdx: error: no pictures to classify", file=sys.stderr)
        return EXIT_NOTHING_READ
    predictor = Predictor(args.model, threads=args.threads)
    names = _explain_names([display for display, _ in inputs]) if args.explain else {}
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(inputs), unit="img", file=sys.stderr, disable=len(inputs) <= _PROGRESS_MIN)
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start : start + args.batch_size]
        # Measured first, so that the decision can weigh the ST-elevation finding (when the model
        # carries its rates, ecgdx.decision) and the explanation is of that decision.
        measured = [_measure_page(path) for _, path in chunk] if getattr(args, "measure", False) else None
        results = predictor.predict_many([path for _, path in chunk], batch_size=args.batch_size,
                                         explain=bool(args.explain), force=args.force,
                                         st_elevation=None if measured is None else [m[1] for m in measured])
        for index, ((display, _), result) in enumerate(zip(chunk, results, strict=True)):
            row = _result_row(display, result, args.explain, names)
            if measured is not None:
                row["measurements"] = measured[index][0] if isinstance(result, Prediction) else {
                    **dict.fromkeys(MEASURE_COLUMNS), "measure_error": "the picture could not be read"}
            rows.append(row)
            _report(display, result, bar)
        bar.update(len(chunk))
    bar.close()
    text = format_results(rows, args.format)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(rows)} results to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.explain:
        written = sum(1 for r in rows if r.get("explanation"))
        print(f"wrote {written} explanation pictures to {args.explain}", file=sys.stderr)
    read = sum(1 for r in rows if not r["error"])
    return EXIT_OK if read else EXIT_NOTHING_READ


def _result_row(display: str, result: Any, explain_dir: Path | None, names: dict[str, str]) -> dict[str, Any]:
    """One output row (plain dict) of a Prediction or PredictionFailure; writes its overlay PNG."""
    row = prediction_row(display, result)
    if explain_dir is not None and getattr(result, "explanation", None) is not None:
        from ecgdx.explain import write_overlay

        # The title shows the percentages the verdict was decided from, as the table and the web app do.
        target = write_overlay(explain_dir / names[display], result.explanation, result.decision_probabilities)
        row["explanation_png"] = str(target)
    return row


def _measure_page(path: str) -> tuple[dict[str, Any], bool | None]:
    """Measurements of one picture (``ecgdx.signals.measure`` on ``ecgdx.signals.digitize``), as the
    MEASURE_COLUMNS dict (None for what could not be measured; 'measure_error' says why nothing was),
    and whether its leads meet the ST-elevation criteria (``ecgdx.signals.findings``; None when not
    digitised)."""
    from ecgdx.errors import EcgdxError

    empty: dict[str, Any] = dict.fromkeys(MEASURE_COLUMNS)
    try:
        from ecgdx.signals.findings import measure_page

        measured, found = measure_page(path)
    except EcgdxError as exc:
        return {**empty, "measure_error": f"not digitised: {exc}"}, None
    values = measured.to_dict()
    out = {k: values.get(k) for k in MEASURE_COLUMNS if k not in ("measure_error", "st_elevation_criteria")}
    out["st_elevation_criteria"] = found.stemi
    out["measure_error"] = None
    out["reasons"] = {k: v for k, v in values["reasons"].items() if k in out}
    return out, found.stemi


def _report(display: str, result: Any, bar) -> None:
    """Tell the user, on stderr, about unreadable or refused pictures (without breaking the bar)."""
    message = report_message(display, result)
    if message:
        bar.write(message, file=sys.stderr)


def _explain_names(displays: list[str]) -> dict[str, str]:
    """Unique overlay file names: the display path flattened ('a/b.jpg' -> 'a__b.explain.png')."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for display in displays:
        stem = display.replace("\\", "/").strip("/").replace("../", "").replace("/", "__").replace(":", "_")
        name, n = f"{stem}.explain.png", 1
        while name in used:
            n += 1
            name = f"{stem}.{n}.explain.png"
        used.add(name)
        names[display] = name
    return names


def format_results(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows as 'table', 'csv' or 'json' text."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return _csv(rows)
    return _table(rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    measured = any("measurements" in r for r in rows)
    writer.writerow(csv_header(measured))
    for r in rows:
        writer.writerow(csv_cells(r, measured))
    return out.getvalue()


def _table(rows: list[dict[str, Any]]) -> str:
    """Aligned plain text: path, diagnosis, one percentage column per class, quality."""
    from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES

    measured = any("measurements" in r for r in rows)
    header = ["path", "diagnosis", *(DISPLAY_NAMES[k] for k in CLASS_KEYS), "quality",
              *(("HR bpm", "QRS ms", "QT ms", "QTc ms") if measured else ())]
    lines = [header]
    for r in rows:
        # The percentages the diagnosis was decided from: balanced-prior ones when the model has a rule.
        probs = r.get("balanced_probabilities") or r.get("probabilities") or {}
        gate = r.get("gate") or {}
        if r.get("error"):
            diagnosis = "unreadable"
        elif r.get("label"):
            diagnosis = DISPLAY_NAMES[r["label"]] + (" (forced)" if r.get("forced") else "")
        else:
            diagnosis = "not an ECG page"
        quality = f"{gate['score']:.2f}{'' if gate['ok'] else ' (refused)'}" if gate else "-"
        values = r.get("measurements") or {}
        measures = [f"{values[k]:.0f}" if values.get(k) is not None else "-"
                    for k in ("heart_rate_bpm", "qrs_ms", "qt_ms", "qtc_bazett_ms")] if measured else []
        lines.append([r["path"], diagnosis, *(f"{100 * probs[k]:.1f}%" if k in probs else "-" for k in CLASS_KEYS),
                      quality, *measures])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    # Text columns left-aligned, numbers right-aligned.
    def fmt(line: list[str]) -> str:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join(fmt(line) for line in lines) + "\n"


# --------------------------------------------------------------------------------------------------
# export and model info
# --------------------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from ecgdx.errors import ModelError
    from ecgdx.export import export_checkpoint, export_ensemble

    rule = test_metrics = None
    if args.decision_rule is not None:
        from ecgdx.decision import DecisionRule

        if not args.decision_rule.is_file():
            raise ModelError(f"decision rule file not found: {args.decision_rule}")
        rule = DecisionRule.from_json(args.decision_rule.read_text(encoding="utf-8"))
    if args.test_metrics is not None:
        try:
            test_metrics = json.loads(args.test_metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read test metrics {args.test_metrics}: {exc}") from None
    options = {"opset": args.opset, "check_images": args.check_images, "decision_rule": rule,
               "test_metrics": test_metrics}
    if len(args.checkpoint) == 1:
        result = export_checkpoint(args.checkpoint[0], args.out, **options)
    else:
        result = export_ensemble(args.checkpoint, args.out, **options)
    meta = result["metadata"]
    print(f"wrote {result['path']} ({result['bytes'] / 2**20:.1f} MiB), {meta['model']['name']}, "
          f"model version {meta['model_version']}")
    return EXIT_OK


def run_model_info(args: argparse.Namespace) -> int:
    from ecgdx.export import decode_metadata, open_session
    from ecgdx.inference import default_model_path

    model = Path(args.path) if args.path else default_model_path()
    label = str(model) if isinstance(model, Path) else "bundled model"
    session = open_session(model, threads=1)
    meta = decode_metadata(session.get_modelmeta().custom_metadata_map, f"'{label}'")
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(describe_metadata(meta, label))
    return EXIT_OK


def run_model_set_rule(args: argparse.Namespace) -> int:
    from ecgdx.decision import DecisionRule
    from ecgdx.errors import EcgdxError
    from ecgdx.export import set_decision_rule

    if not args.decision_rule.is_file():
        raise EcgdxError(f"no decision rule file at {args.decision_rule}")
    rule = DecisionRule.from_json(args.decision_rule.read_text(encoding="utf-8"))
    meta = set_decision_rule(args.path, args.out, rule, version_suffix=args.version_suffix)
    print(f"wrote {args.out}, model version {meta['model_version']}: {rule.describe()}")
    return EXIT_OK


def _describe_rule(rule: Any) -> str:
    from ecgdx.decision import DecisionRule

    if not isinstance(rule, dict):
        return DecisionRule(name="argmax").describe()
    return DecisionRule.from_dict(rule).describe()


def _describe_measurements(rule: Any) -> str:
    from ecgdx.decision import DecisionRule

    text = DecisionRule.from_dict(rule).describe_measurements() if isinstance(rule, dict) else ""
    return (text + " Used with --measure and in the web app.") if text else "not used by the decision"


def describe_metadata(meta: dict[str, Any], label: str) -> str:
    """Human-readable summary of an ecgdx ONNX model's metadata."""
    spec = meta.get("preprocess", {})
    model = meta.get("model", {})
    names = meta.get("display_names", {})
    metrics = meta.get("test_metrics") or {}
    metric_text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                            if not isinstance(v, dict | list)) or "none recorded"
    kwargs = ", ".join(f"{k}={v}" for k, v in (model.get("kwargs") or {}).items())
    prep = (f"{spec.get('height')}x{spec.get('width')} px, crop {spec.get('crop', 'auto')}, "
            f"layout {spec.get('layout', 'page')}, keep_aspect {spec.get('keep_aspect', False)}, "
            f"CLAHE clip {spec.get('clahe_clip')} tile {spec.get('clahe_tile')}, median {spec.get('median_ksize')}")
    fields = [
        ("model", label),
        ("version", meta.get("model_version", "unknown")),
        ("architecture", f"{model.get('name', '?')}({kwargs})"),
        ("parameters", f"{int(meta.get('parameters') or 0):,}"),
        ("classes", ", ".join(f"{k} ({names.get(k, k)})" for k in meta.get("classes", []))),
        ("preprocessing", prep),
        ("temperature", f"{float(meta.get('temperature', 1.0)):.4f}"),
        ("decision", _describe_rule(meta.get("decision_rule"))),
        ("measurements", _describe_measurements(meta.get("decision_rule"))),
        ("test metrics", metric_text),
        ("data fingerprint", str(meta.get("data_fingerprint") or "unknown")),
        ("exported", f"{meta.get('exported_at', '?')} with ecgdx {meta.get('ecgdx_version', '?')}"),
    ]
    width = max(len(k) for k, _ in fields)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in fields)
