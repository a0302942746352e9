"""Round-trip accuracy of ``ecgdx.signals.digitize``: render known signals as pages, read them back.

    python benchmarks/digitization.py [--simulate 60] [--jobs 2] [--json out.json] [--markdown out.md]

Records: the 50 real 12-lead CinC 2021 records of shared/data (500 Hz, 10 s) and --simulate N
neurokit2 12-lead simulations (``method="multileads"``). Every record is band-limited like a printer
(0.67 Hz high-pass, --lowpass Hz low-pass, default 40; the truth is the filtered signal) and drawn by
``ecgdx.signals.render`` in both layouts (3x4 on grid paper, 6x2 on plain paper, both with the rhythm strip)
at 200 dpi, clean and with mild distortions (``Distortions.mild``: rotation <= 2 deg, blur, noise,
uneven light, a crease at random, JPEG quality 50). Each page is digitised from memory.

Metrics per page:
- SNR per lead (dB), PhysioNet Challenge 2024 definition: 10 log10(sum x^2 / sum (y - x)^2) with x
  the true signal and y the digitised one, after the allowed vertical offset alignment (y shifted by
  the mean of x - y), on the time window each lead is printed (3x4: 2.5 s, 6x2: 5 s); samples the
  digitiser left empty count as 0 (as in the Challenge). The rhythm strip is scored on its 10 s.
- Measurements (``ecgdx.signals.measure``) on the digitised page vs a truth that does not use the measuring
  code: PR, QRS and QT from neurokit2's peak-prominence delineation of the ORIGINAL record (each lead
  on its own, median over beats, then over leads; ``truth_intervals``), heart rate from a 12-lead
  slope peak detector (``truth_rate``). Targets: HR within 2 bpm, PR within 10 ms, QRS within 10 ms,
  QT within 20 ms; the share of pages where both gave a value, the bias, the share the page flagged
  ``ok`` and ``ecgdx.signals.measure`` on the original record (the error the page itself adds) come too.
- Wall time of ``digitize`` per page (one process, one OpenCV thread).

Pages the digitiser refuses (NotAnEcgError) are counted and left out of the SNR means.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

DEFAULT_DATA = Path(os.environ.get("ECGDX_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
TOLERANCES = {"heart_rate_bpm": 2.0, "pr_ms": 10.0, "qrs_ms": 10.0, "qt_ms": 20.0}
# neurokit2 delineation keys of the truth intervals: (start, end).
_TRUTH_WAVES = {"pr_ms": ("ECG_P_Onsets", "ECG_R_Onsets"), "qrs_ms": ("ECG_R_Onsets", "ECG_R_Offsets"),
                "qt_ms": ("ECG_R_Onsets", "ECG_T_Offsets")}


def snr_db(truth: np.ndarray, estimate: np.ndarray) -> float:
    """Challenge-2024 SNR (dB) after vertical offset alignment; NaN in the estimate counts as 0."""
    ok = np.isfinite(truth)
    x = truth[ok]
    y = np.nan_to_num(estimate[ok], nan=0.0)
    y = y + float(np.mean(x - y))
    noise = float(np.sum((y - x) ** 2))
    signal = float(np.sum(x**2))
    if signal <= 0:
        return float("nan")
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def truth_rate(signals: np.ndarray, fs: float) -> float | None:
    """Heart rate (bpm) of the original record from a detector built unlike ``ecgdx.signals.measure``'s: the
    peaks of the summed absolute slope of all 12 leads, each lead scaled to its own 99th percentile
    and capped (so that spikes or noise in one lead cannot make beats on their own), >= 250 ms
    apart, above 40 % of the sum's 99th percentile and at least half the typical peak, and steep in
    at least three quarters of the leads (a QRS is steep in nearly every lead; the tall T and P
    waves of a fast rhythm, or noise in a few chest leads, are not). A beat the measuring code misses
    on lead II is not missed here too."""
    per_lead = np.abs(np.diff(np.nan_to_num(signals), axis=1))
    scale = np.percentile(per_lead, 99, axis=1, keepdims=True)
    scaled = np.minimum(per_lead / np.where(scale > 0, scale, 1.0), 1.5)
    peaks = _slope_peaks(scaled.sum(axis=0), fs)
    live = scale[:, 0] > 0
    reach = int(round(0.04 * fs))
    peaks = [p for p in peaks
             if (scaled[live, max(0, p - reach) : p + reach + 1].max(axis=1) > 0.5).sum() >= 0.75 * live.sum()]
    return 60.0 * fs / float(np.mean(np.diff(peaks))) if len(peaks) >= 3 else None


def _slope_peaks(slope: np.ndarray, fs: float) -> list[int]:
    width = max(1, int(round(0.02 * fs)))
    slope = np.convolve(slope, np.ones(width) / width, mode="same")
    edge = int(round(0.1 * fs))  # the filters' start-up transients are no beats
    slope[:edge] = slope[-edge:] = 0.0
    threshold = 0.4 * float(np.percentile(slope, 99))
    gap = int(round(0.25 * fs))
    peaks: list[int] = []
    for i in np.argsort(slope)[::-1]:
        if slope[i] < threshold:
            break
        if all(abs(int(i) - p) >= gap for p in peaks):
            peaks.append(int(i))
    if not peaks:
        return []
    typical = float(np.median(slope[peaks]))  # artefacts and tall T waves stand well below it
    return sorted(p for p in peaks if slope[p] >= 0.5 * typical)


def truth_intervals(signals: np.ndarray, fs: float) -> dict[str, float | None]:
    """PR, QRS and QT (ms) of the ORIGINAL record by a method independent of ``ecgdx.signals.measure``:
    neurokit2's peak-prominence delineation (Emrich et al. 2024) of every lead on its own, the median
    over beats, then the median over the leads that gave a value (at least 3 leads, else None)."""
    import warnings

    import neurokit2 as nk

    rate = int(round(fs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ecgdx.labels import LEADS

        peaks = nk.ecg_peaks(nk.ecg_clean(signals[LEADS.index("II")], sampling_rate=rate), sampling_rate=rate)[1]["ECG_R_Peaks"]
        per_lead: dict[str, list[float]] = {name: [] for name in _TRUTH_WAVES}
        for x in signals:
            try:
                _, waves = nk.ecg_delineate(nk.ecg_clean(x, sampling_rate=rate), peaks, sampling_rate=rate,
                                            method="prominence")
            except Exception:  # noqa: BLE001 - a lead neurokit2 cannot delineate just gives no value
                continue
            for name, (start, end) in _TRUTH_WAVES.items():
                a = np.array([np.nan if v is None else float(v) for v in waves.get(start, [])])
                b = np.array([np.nan if v is None else float(v) for v in waves.get(end, [])])
                n = min(len(a), len(b))
                d = (b[:n] - a[:n]) * 1000.0 / fs
                d = d[np.isfinite(d) & (d > 0)]
                if len(d):
                    per_lead[name].append(float(np.median(d)))
    return {name: float(np.median(v)) if len(v) >= 3 else None for name, v in per_lead.items()}


def reference(signals: np.ndarray, fs: float) -> dict[str, object]:
    """Truth (independent method) and the measuring code on the original record (no page)."""
    from ecgdx.labels import LEADS
    from ecgdx.signals.measure import measure

    truth = truth_intervals(signals, fs)
    truth["heart_rate_bpm"] = truth_rate(signals, fs)
    same = measure({lead: signals[i] for i, lead in enumerate(LEADS)}, fs)
    return {"truth": truth, "same_method": {k: getattr(same, k) for k in TOLERANCES}}


def run_record(task: tuple[str, str, list[tuple[str, str, int]], float]) -> list[dict]:
    """Load (or simulate) one record once, then render, digitise and score every (layout, variant)."""
    source, kind, pages, lowpass = task
    from ecgdx.signals.render import load_record, printer_filter, simulate_signals

    if kind == "sim":
        original, fs = simulate_signals(int(source))[0], 500.0
    else:
        original, fs = load_record(source)
    signals = printer_filter(original, fs, high_hz=lowpass or None)
    ref = reference(original, fs)
    return [run_page(signals, fs, source, kind, layout, variant, seed, ref) for layout, variant, seed in pages]


def run_page(signals, fs, source, kind, layout, variant, seed, ref) -> dict:
    """Render, digitise and score one page against the record's reference measurements."""
    from ecgdx.errors import NotAnEcgError
    from ecgdx.labels import LEADS
    from ecgdx.signals.digitize import digitize
    from ecgdx.signals.measure import measure
    from ecgdx.signals.render import Distortions, render_page

    rng = np.random.default_rng(seed)
    distortions = Distortions.mild(rng) if variant == "mild" else Distortions()
    page = render_page(signals, fs, layout=layout, seed=seed, distortions=distortions)
    row = {"record": Path(str(source)).name if kind == "cinc" else f"sim{source}", "kind": kind,
           "layout": layout, "variant": variant}
    start = time.perf_counter()
    try:
        result = digitize(page.image)
    except NotAnEcgError as exc:
        row.update(failed=str(exc))
        return row
    row["seconds"] = time.perf_counter() - start
    snr = {}
    for i, lead in enumerate(LEADS):
        m = page.leads[lead]
        i0, i1 = int(round(m.t0 * fs)), int(round(m.t1 * fs))
        snr[lead] = snr_db(page.signals[i, i0:i1], result.signals[i, i0:i1])
    row["snr"] = snr
    if result.rhythm is not None:
        row["snr_rhythm"] = snr_db(page.signals[LEADS.index("II")], result.rhythm)
    digit_m = measure(result, result.fs)
    row["measures"] = {k: (ref["truth"][k], getattr(digit_m, k)) for k in TOLERANCES}
    row["same_method"] = {k: (ref["same_method"][k], getattr(digit_m, k)) for k in TOLERANCES}
    row["flags"] = {k: digit_m.flags.get(k) for k in TOLERANCES}
    return row


def tasks(data: Path, simulate: int, layouts: list[str], variants: list[str], lowpass: float):
    """One task per record: (source, kind, [(layout, variant, seed)], lowpass); and the CinC count."""
    records = sorted((data / "ecg-signal-samples" / "cinc2021").glob("*.hea"))
    sources = [(str(h.with_suffix("")), "cinc") for h in records] + [(str(i), "sim") for i in range(simulate)]
    out = []
    count = 0
    for n, (source, kind) in enumerate(sources):
        pages = []
        for layout in layouts:
            for variant in variants:
                pages.append((layout, variant, 1000 * n + count))
                count += 1
        out.append((source, kind, pages, lowpass))
    return out, len(records)


def summarise(rows: list[dict]) -> dict:
    """Means per (kind, layout, variant) group and overall per variant."""
    from ecgdx.labels import LEADS

    groups: dict[str, list[dict]] = {}
    for r in rows:
        for key in (f"{r['kind']} {r['layout']} {r['variant']}", f"all {r['variant']}"):
            groups.setdefault(key, []).append(r)
    summary = {}
    for key, members in sorted(groups.items()):
        ok = [r for r in members if "snr" in r]
        per_lead = {lead: _mean([r["snr"][lead] for r in ok]) for lead in LEADS}
        entry = {
            "pages": len(members),
            "failed": len(members) - len(ok),
            "snr_mean_db": _mean([v for r in ok for v in r["snr"].values()]),
            "snr_median_db": _median([v for r in ok for v in r["snr"].values()]),
            "snr_rhythm_db": _mean([r["snr_rhythm"] for r in ok if "snr_rhythm" in r]),
            "snr_per_lead_db": per_lead,
            "seconds_median": _median([r["seconds"] for r in ok]),
            "seconds_p90": float(np.percentile([r["seconds"] for r in ok], 90)) if ok else None,
        }
        for name, tol in TOLERANCES.items():
            pairs = [r["measures"][name] for r in ok]
            both = [(a, b) for a, b in pairs if a is not None and b is not None]
            entry[f"{name}_within"] = _share_within(both, tol)
            entry[f"{name}_measured"] = 100.0 * len(both) / max(1, len(pairs))
            entry[f"{name}_mae"] = _mean([abs(a - b) for a, b in both])
            entry[f"{name}_bias"] = _median([b - a for a, b in both])
            flagged_ok = [r["measures"][name] for r in ok if r.get("flags", {}).get(name) == "ok"]
            flagged_ok = [(a, b) for a, b in flagged_ok if a is not None and b is not None]
            entry[f"{name}_ok_share"] = 100.0 * len(flagged_ok) / max(1, len(both))
            entry[f"{name}_ok_within"] = _share_within(flagged_ok, tol)
            same = [r["same_method"][name] for r in ok if "same_method" in r]
            entry[f"{name}_same_within"] = _share_within([(a, b) for a, b in same if a is not None and b is not None], tol)
        summary[key] = entry
    return summary


def _share_within(pairs: list[tuple[float, float]], tol: float) -> float | None:
    """Percentage of (truth, estimate) pairs within tol (None without pairs)."""
    return 100.0 * sum(abs(a - b) <= tol for a, b in pairs) / len(pairs) if pairs else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def markdown(summary: dict, args, seconds: float, n_cinc: int) -> str:
    def f(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [
        f"Records: {n_cinc} CinC 2021 + {args.simulate} neurokit2 simulations; layouts {args.layouts}; "
        f"variants {args.variants}; printer band 0.67-{args.lowpass:g} Hz; 200 dpi; total {seconds / 60:.1f} min "
        f"with {args.jobs} process(es).",
        "",
        "| group | pages | failed | SNR mean dB | SNR median dB | rhythm SNR dB | s/page median (p90) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, e in summary.items():
        lines.append(
            f"| {key} | {e['pages']} | {e['failed']} | {f(e['snr_mean_db'])} | {f(e['snr_median_db'])} | "
            f"{f(e['snr_rhythm_db'])} | {f(e['seconds_median'], 2)} ({f(e['seconds_p90'], 2)}) |"
        )
    lines += ["", "Measurements on the page vs the independent truth of the original record: share within the "
              "tolerance among the pages where both gave a value (that share of all pages in brackets); "
              "bias = median(page - truth); MAE; flagged ok = share of the measured pages whose value the "
              "page flagged 'ok', and the share of those within; same method = within the tolerance of "
              "`ecgdx.signals.measure` on the original record (the error the page adds).", "",
              "| group | metric | within | bias | MAE | flagged ok (within) | same method within |",
              "|---|---|---|---|---|---|---|"]
    units = {"heart_rate_bpm": ("HR", "bpm"), "pr_ms": ("PR", "ms"), "qrs_ms": ("QRS", "ms"), "qt_ms": ("QT", "ms")}
    for key, e in summary.items():
        for name, tol in TOLERANCES.items():
            label, unit = units[name]
            lines.append(
                f"| {key} | {label} within {tol:g} {unit} | {f(e[f'{name}_within'], 0)} % "
                f"({f(e[f'{name}_measured'], 0)} %) | {f(e[f'{name}_bias'])} | {f(e[f'{name}_mae'])} | "
                f"{f(e[f'{name}_ok_share'], 0)} % ({f(e[f'{name}_ok_within'], 0)} %) | {f(e[f'{name}_same_within'], 0)} % |"
            )
    from ecgdx.labels import LEADS

    lines += ["", "SNR per lead (dB, mean):", "", "| group | " + " | ".join(LEADS) + " |",
              "|---|" + "---|" * len(LEADS)]
    for key, e in summary.items():
        lines.append(f"| {key} | " + " | ".join(f(e["snr_per_lead_db"][lead]) for lead in LEADS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (ECGDX_DATA_DIR)")
    parser.add_argument("--simulate", type=int, default=60,
                        help="neurokit2-simulated records (default 60: the whole run stays near 10 min on 2 busy cores)")
    parser.add_argument("--layouts", default="3x4,6x2")
    parser.add_argument("--variants", default="clean,mild")
    parser.add_argument("--lowpass", type=float, default=40.0, help="printer low-pass in Hz (0 = none)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N CinC records (quick runs)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--json", type=Path, help="write per-page results and the summary here")
    parser.add_argument("--markdown", type=Path, help="write the summary tables here")
    args = parser.parse_args(argv)
    layouts = args.layouts.split(",")
    variants = args.variants.split(",")
    todo, n_cinc = tasks(args.data, args.simulate, layouts, variants, args.lowpass)
    if args.limit:
        keep = {t[0] for t in todo if t[1] == "cinc"}
        keep = set(sorted(keep)[: args.limit])
        todo = [t for t in todo if t[1] == "sim" or t[0] in keep]
        n_cinc = min(n_cinc, args.limit)
    if not todo:
        print(f"no records found under {args.data}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, record_rows in enumerate(pool.map(run_record, todo), 1):
            rows.extend(record_rows)
            print(f"\r{i}/{len(todo)} records", end="", file=sys.stderr)
    print(file=sys.stderr)
    elapsed = time.perf_counter() - start
    summary = summarise(rows)
    text = markdown(summary, args, elapsed, n_cinc)
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "pages": rows}, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
