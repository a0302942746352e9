"""`ecgdx render`, `ecgdx render-dataset` and `ecgdx digitize`: between pictures and signals.

Only the standard library is imported at module level (``ecgdx --help`` stays fast); numpy,
OpenCV, wfdb and neurokit2 are imported when a command runs. Exit codes: 0 success, 1 nothing
could be digitised, 2 bad arguments or an ecgdx error (``ecgdx.cli`` turns EcgdxError into 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `render`, `render-dataset` and `digitize` to a CLI's subparsers."""
    render = subparsers.add_parser(
        "render", help="draw a 12-lead signal as a paper ECG page (known ground truth)",
        description="Draw a 12-lead record as an EDAN-style ECG page (25 mm/s, 10 mm/mV). SIGNAL is a WFDB "
        "record (.hea or its base name), a .npy array (12, N) in mV (give --fs), or sim:SEED[:BPM] for "
        "neurokit2's 12-lead simulation. Writes the picture, PAGE.json (the exact pixel mapping of every "
        "lead) and PAGE.truth.npz (the drawn signals, mV).",
    )
    render.add_argument("signal", metavar="SIGNAL")
    render.add_argument("--out", type=Path, required=True, help="picture to write (.png or .jpg)")
    _page_options(render)
    render.add_argument("--fs", type=float, help="sampling rate (Hz) of a .npy SIGNAL")
    render.set_defaults(func=run_render)

    dataset = subparsers.add_parser(
        "render-dataset", help="render a synthetic set of ECG pages with ground truth",
        description="Render every WFDB record of --wfdb folders and/or --simulate N neurokit2 12-lead "
        "simulations, in each --layouts, clean and/or with mild distortions. Writes DIR/images/NAME.png, "
        "DIR/truth/NAME.hea+.dat (the drawn signals, WFDB), DIR/truth/NAME.json (pixel mapping) and "
        "DIR/manifest.csv.",
    )
    dataset.add_argument("--out", type=Path, required=True, help="output folder")
    dataset.add_argument("--wfdb", type=Path, action="append", default=[], metavar="DIR",
                         help="folder of WFDB records (repeatable)")
    dataset.add_argument("--simulate", type=int, default=0, metavar="N", help="add N simulated records")
    dataset.add_argument("--layouts", default="3x4,6x2", help="comma-separated layouts (default 3x4,6x2)")
    dataset.add_argument("--variants", default="clean,mild", help="comma-separated: clean, mild (default both)")
    dataset.add_argument("--dpi", type=float, default=200.0, help="resolution (default 200, the dataset's scans)")
    dataset.add_argument("--seed", type=int, default=0, help="base random seed")
    dataset.add_argument("--lowpass", type=float, default=40.0,
                         help="printer low-pass (Hz) applied to the records; 0 = none (default 40)")
    dataset.add_argument("--image-format", choices=("png", "jpg"), default="png")
    dataset.set_defaults(func=run_render_dataset)

    digitize = subparsers.add_parser(
        "digitize", help="read the 12 leads of an ECG page picture back into signals",
        description="Digitise a picture of a 12-lead ECG page: lead layout, scale from the calibration "
        "pulses, every lead as mV at --fs Hz on its own time window. csv: DIR/leads.csv (time, I..V6; "
        "empty = not printed) and DIR/rhythm_<LEAD>.csv (the strip, named by the lead printed on it, e.g. "
        "rhythm_III.csv; rhythm.csv when its label cannot be read); wfdb: DIR/NAME.hea/.dat (+ NAME_rhythm); "
        "json: DIR/NAME.json. Always DIR/NAME.meta.json (scales, confidence per lead, rhythm_lead, warnings).",
    )
    digitize.add_argument("image", metavar="IMAGE")
    digitize.add_argument("--out", type=Path, required=True, help="output folder")
    digitize.add_argument("--format", choices=("csv", "wfdb", "json"), default="csv")
    digitize.add_argument("--name", help="record name for wfdb/json (default: the picture's name)")
    digitize.add_argument("--fs", type=float, default=500.0, help="output sampling rate (Hz, default 500)")
    digitize.add_argument("--no-deskew", action="store_true", help="do not estimate and undo a rotation")
    digitize.add_argument("--measure", action="store_true",
                          help="also write DIR/measurements.json (heart rate, intervals, axis, ST, Q waves) and "
                          "DIR/findings.json (criteria-based findings: ST elevation, Q waves, rate, rhythm, QRS, "
                          "QTc; computer measurements of a picture, to be confirmed by a clinician)")
    digitize.set_defaults(func=run_digitize)


def _page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=("3x4", "6x2"), default="3x4")
    parser.add_argument("--seed", type=int, default=0, help="made-up header details and random distortions")
    parser.add_argument("--dpi", type=float, default=200.0, help="resolution (default 200)")
    parser.add_argument("--no-rhythm", action="store_true", help="leave out the 10 s lead-II rhythm strip")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--grid", dest="grid", action="store_true", default=None, help="ruled paper")
    grid.add_argument("--no-grid", dest="grid", action="store_false", help="plain paper")
    parser.add_argument("--lowpass", type=float, default=0.0,
                        help="printer low-pass (Hz) applied before drawing (default: none)")
    parser.add_argument("--distort", choices=("none", "mild"), default="none",
                        help="mild = random rotation <= 2 deg, blur, noise, JPEG 50, uneven light, creases")
    parser.add_argument("--rotate", type=float, help="rotation (degrees)")
    parser.add_argument("--perspective", type=float, help="corner jitter, share of the shorter side")
    parser.add_argument("--blur", type=float, help="Gaussian blur sigma (px)")
    parser.add_argument("--noise", type=float, help="Gaussian noise sigma (gray levels)")
    parser.add_argument("--jpeg", type=int, help="JPEG quality")
    parser.add_argument("--lighting", type=float, help="uneven lighting depth 0..1")
    parser.add_argument("--creases", type=int, help="number of folds")


def _distortions(args: argparse.Namespace, seed: int):
    """Distortions from --distort plus the explicit options (which override)."""
    import dataclasses

    import numpy as np

    from ecgdx.signals.render import Distortions

    base = Distortions.mild(np.random.default_rng(seed + 7919)) if args.distort == "mild" else Distortions()
    explicit = {"rotation_deg": args.rotate, "perspective": args.perspective, "blur_sigma": args.blur,
                "noise_sigma": args.noise, "jpeg_quality": args.jpeg, "lighting": args.lighting,
                "creases": args.creases}
    return dataclasses.replace(base, **{k: v for k, v in explicit.items() if v is not None})


def load_signal(spec: str, fs: float | None = None):
    """(signals (12, N) mV, fs Hz, description) from a WFDB record, a .npy file or sim:SEED[:BPM]."""
    import numpy as np

    from ecgdx.errors import DataError
    from ecgdx.signals.render import load_record, simulate_signals

    if spec.startswith("sim:"):
        parts = spec.split(":")
        try:
            seed = int(parts[1])
            rate = float(parts[2]) if len(parts) > 2 else None
        except (IndexError, ValueError):
            raise DataError(f"bad simulation spec {spec!r}: use sim:SEED or sim:SEED:BPM") from None
        signals, rate = simulate_signals(seed, heart_rate=rate)
        return signals, 500.0, f"neurokit2 simulation (seed {seed}, {rate:.0f} bpm)"
    path = Path(spec)
    if path.suffix == ".npy":
        if not path.is_file():
            raise DataError(f"no such file: {path}")
        if not fs:
            raise DataError("a .npy signal needs --fs (its sampling rate in Hz)")
        array = np.load(path)
        return array, float(fs), str(path)
    record = path.with_suffix("") if path.suffix in (".hea", ".mat", ".dat") else path
    if not record.with_suffix(".hea").is_file():
        raise DataError(f"no WFDB header {record.with_suffix('.hea')}")
    try:
        signals, rate = load_record(record)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return signals, rate, str(record)


# --------------------------------------------------------------------------------------------------
# render
# --------------------------------------------------------------------------------------------------


def run_render(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from ecgdx.errors import DataError
    from ecgdx.signals.render import printer_filter, render_page

    signals, fs, described = load_signal(args.signal, args.fs)
    if args.lowpass:
        signals = printer_filter(signals, fs, low_hz=None, high_hz=args.lowpass)
    try:
        page = render_page(signals, fs, layout=args.layout, dpi=args.dpi, seed=args.seed, grid=args.grid,
                           rhythm=not args.no_rhythm, distortions=_distortions(args, args.seed))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), page.image):
        raise DataError(f"could not write {args.out} (use a .png or .jpg name)")
    truth = page.truth()
    truth["source"] = described
    args.out.with_suffix(".json").write_text(json.dumps(truth, indent=2), encoding="utf-8")
    np.savez_compressed(args.out.with_suffix(".truth.npz"), signals=page.signals, fs=page.fs)
    print(f"wrote {args.out} ({page.image.shape[1]}x{page.image.shape[0]} px, {page.px_per_mm:.2f} px/mm), "
          f"{args.out.with_suffix('.json')} and {args.out.with_suffix('.truth.npz')}")
    return EXIT_OK


def run_render_dataset(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from ecgdx.errors import DataError
    from ecgdx.signals.render import Distortions, printer_filter, render_page, simulate_signals

    layouts = [v.strip() for v in args.layouts.split(",") if v.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(layouts) <= {"3x4", "6x2"} or not set(variants) <= {"clean", "mild"} or not layouts or not variants:
        raise DataError("--layouts takes 3x4,6x2 and --variants takes clean,mild")
    sources: list[tuple[str, object]] = []
    for folder in args.wfdb:
        headers = sorted(Path(folder).glob("*.hea"))
        if not headers:
            raise DataError(f"no WFDB records (.hea) in {folder}")
        sources += [(h.stem, h.with_suffix("")) for h in headers]
    sources += [(f"sim{args.seed + i:04d}", args.seed + i) for i in range(args.simulate)]
    if not sources:
        raise DataError("nothing to render: give --wfdb DIR and/or --simulate N")
    images, truth_dir = args.out / "images", args.out / "truth"
    images.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (stem, source) in enumerate(sources):
        if isinstance(source, int):
            signals, fs = simulate_signals(source)[0], 500.0
        else:
            signals, fs, _ = load_signal(str(source))
        signals = printer_filter(signals, fs, high_hz=args.lowpass or None)
        for layout in layouts:
            for variant in variants:
                seed = args.seed * 100003 + index * 17 + len(rows)
                rng = np.random.default_rng(seed)
                distortions = Distortions.mild(rng) if variant == "mild" else Distortions()
                page = render_page(signals, fs, layout=layout, dpi=args.dpi, seed=seed, distortions=distortions)
                name = f"{stem}_{layout}_{variant}"
                cv2.imwrite(str(images / f"{name}.{args.image_format}"), page.image)
                _write_truth(truth_dir, name, page)
                rows.append({"name": name, "source": str(source), "layout": layout, "variant": variant,
                             "seed": seed, "image": f"images/{name}.{args.image_format}",
                             "truth": f"truth/{name}"})
        print(f"\r{index + 1}/{len(sources)} records", end="", file=sys.stderr)
    print(file=sys.stderr)
    with open(args.out / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} pages to {args.out} (manifest.csv)")
    return EXIT_OK


def _write_truth(folder: Path, name: str, page) -> None:
    """The drawn signals as a WFDB record (format 16, 1 uV) and the pixel mapping as JSON."""
    from ecgdx.labels import LEADS
    from ecgdx.signals.digitize import write_wfdb

    write_wfdb(folder, name, page.signals, page.fs, LEADS)
    (folder / f"{name}.json").write_text(json.dumps(page.truth(), indent=2), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# digitize
# --------------------------------------------------------------------------------------------------


def run_digitize(args: argparse.Namespace) -> int:
    from ecgdx.signals.digitize import digitize

    result = digitize(args.image, fs=args.fs, deskew=not args.no_deskew)
    name = args.name or _record_name(args.image)
    written = result.save(args.out, args.format, name=name)
    if args.measure:
        from ecgdx.signals.findings import assess, measure_q_waves
        from ecgdx.signals.measure import measure

        values = measure(result, result.fs)
        leads = result.leads_dict()
        q_waves = measure_q_waves(leads, result.fs, values.qrs_bounds)  # the beats measure delineated
        measurements = values.to_dict()
        measurements["rhythm_source"] = result.source_name(values.rhythm_source)
        measurements["q_waves"] = {lead: None if q is None else q.to_dict() for lead, q in q_waves.items()}
        target = args.out / "measurements.json"
        target.write_text(json.dumps(measurements, indent=2), encoding="utf-8")
        findings = args.out / "findings.json"
        findings.write_text(json.dumps(assess(values, q_waves).to_dict(), indent=2), encoding="utf-8")
        written += [target, findings]
    low = ", ".join(f"{k} {v:.2f}" for k, v in result.confidence.items() if v < 0.5) or "none"
    print(f"{args.image}: {result.template}, {result.px_per_mm:.2f} px/mm, {result.px_per_s:.1f} px/s, "
          f"rotation {result.rotation_deg:+.2f} deg, {result.timings_ms['total']:.0f} ms; "
          f"rhythm strip: {result.rhythm_name or 'none'}; low-confidence leads: {low}")
    for warning in result.warnings:
        print(f"ecgdx: warning: {warning}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _record_name(image: str) -> str:
    """A WFDB-safe record name from a picture's file name (letters, digits, _ and -)."""
    stem = Path(image).stem
    name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in stem).strip("_")
    return name or "ecg"
