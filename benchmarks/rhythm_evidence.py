"""Do more findings help beside the ST-elevation finding? Out of fold, like for like.

    python benchmarks/rhythm_evidence.py docs/cv/RUN [--findings tachycardia,irregular_rhythm] [--jobs 2]

The pre-registered comparisons H2, H5 and H9 of ``docs/evaluation.md``: the shipped decision (image model
at a balanced prior, the ST-elevation finding weighed by Bayes' rule,
``benchmarks/measurement_evidence.py``) against the same decision that also weighs other criteria of
``ecgdx.signals.findings``: tachycardia (> 100 bpm) and an irregular rhythm (RR SDNN > 10 % of the
mean RR) by default (H2), or pathological Q waves (``--findings pathological_q``, H5), or ST
depression (``--findings st_depression``, H9). Each finding multiplies the probabilities by
P(finding | class), met or not met, counted on the other folds with Laplace
smoothing (``ecgdx.decision.fit_st_elevation_rates``, which counts any 1/0/NaN finding), as if the
findings were independent given the class; a finding that could not be assessed weighs nothing.
Nothing is fitted on the held-out fold, and there is no free weight.

Each page's findings are cached in the run folder: ``rhythm_findings.npz`` for the two rhythm
findings, ``findings_KEY_HASH.npz`` for any other, HASH from the source of ``ecgdx.signals.findings`` and
``ecgdx.signals.measure`` (names and one 1/0 per page, NaN where not assessed or not digitised).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

RHYTHM = ("tachycardia", "irregular_rhythm")
# The start of the finding's "not assessed" line in ecgdx.signals.findings.
NOT_ASSESSED_PREFIX = {"tachycardia": "Heart rate", "irregular_rhythm": "Rhythm regularity",
                       "pathological_q": "Pathological Q waves", "st_depression": "ST elevation and depression"}


def _findings_of(task: tuple[str, tuple[str, ...]]) -> tuple[float, ...]:
    import cv2

    from ecgdx.errors import EcgdxError
    from ecgdx.signals.findings import page_findings

    path, keys = task
    cv2.setNumThreads(1)
    try:
        found = page_findings(path)
    except EcgdxError:
        return tuple(float("nan") for _ in keys)
    met = {f.key for f in found.findings}
    out = []
    for key in keys:
        unassessed = any(text.startswith(NOT_ASSESSED_PREFIX[key]) for text in found.not_assessed)
        out.append(float("nan") if unassessed else float(key in met))
    return tuple(out)


def _cache_path(run: Path, keys: tuple[str, ...]) -> Path:
    if keys == RHYTHM:
        return run / "rhythm_findings.npz"
    # Named after the criteria's code too, so that a changed criterion is measured anew.
    import hashlib

    import ecgdx.signals.findings as findings_module
    import ecgdx.signals.measure as measure_module

    code = b"".join(Path(m.__file__).read_bytes() for m in (findings_module, measure_module))
    return run / f"findings_{'_'.join(keys)}_{hashlib.sha256(code).hexdigest()[:8]}.npz"


def load_findings(run: Path, names: np.ndarray, data_root: Path, jobs: int,
                  keys: tuple[str, ...] = RHYTHM) -> np.ndarray:
    """(N, len(keys)) each finding per page: 1.0 met / 0.0 not met / NaN not assessed; cached in RUN."""
    cache = _cache_path(run, keys)
    if cache.exists():
        saved = np.load(cache)
        if saved["names"].tolist() == names.tolist():
            return np.stack([saved[key] for key in keys], axis=1)
    from tqdm import tqdm

    tasks = [(str(data_root / name), keys) for name in names]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        values = np.asarray(list(tqdm(pool.map(_findings_of, tasks, chunksize=8), total=len(tasks),
                                      desc="digitising pages", unit="page")), np.float64)
    np.savez_compressed(cache, names=names, **{key: values[:, i] for i, key in enumerate(keys)})
    return values


def log_likelihood(values: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """(N, C) log P(finding value | class); 0 where the finding was not assessed (NaN)."""
    out = np.zeros((len(values), len(rates)))
    met, assessed = values == 1.0, ~np.isnan(values)
    out[met] = np.log(rates)
    out[assessed & ~met] = np.log(1.0 - rates)
    return out


def cross_fitted(logits, labels, folds, st, extra, prior, *, with_extra: bool) -> np.ndarray:
    """(N,) decisions, everything fitted on the other folds."""
    from ecgdx.cv import fit_decision_rules
    from ecgdx.decision import fit_st_elevation_rates, log_softmax_rows

    decisions = np.zeros(len(labels), int)
    for k in np.unique(folds):
        held = folds == k
        rule = fit_decision_rules(logits[~held], labels[~held], prior)["balanced_prior"]
        rule = rule.with_st_elevation_rates(fit_st_elevation_rates(st[~held], labels[~held]))
        flags = [None if np.isnan(v) else bool(v) for v in st[held]]
        scores = np.log(rule.balanced_probabilities(logits[held], flags))
        if with_extra:
            for j in range(extra.shape[1]):
                rates = np.asarray(fit_st_elevation_rates(extra[~held, j], labels[~held]))
                scores = scores + log_likelihood(extra[held, j], rates)
        decisions[held] = log_softmax_rows(scores).argmax(axis=1)
    return decisions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `ecgdx cv` run (or its docs/cv copy) with oof.npz")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mendeley-v1-dev")
    parser.add_argument("--findings", default=",".join(RHYTHM),
                        help=f"comma-separated findings weighed beside the ST finding, of {sorted(NOT_ASSESSED_PREFIX)}")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)
    keys = tuple(k.strip() for k in args.findings.split(",") if k.strip())
    unknown = sorted(set(keys) - set(NOT_ASSESSED_PREFIX))
    if not keys or unknown:
        parser.error(f"unknown finding(s) {unknown}; choose from {sorted(NOT_ASSESSED_PREFIX)}")

    from ensemble import load_oof, paired_gain
    from measurement_evidence import load_st_elevation

    from ecgdx.config import load_config
    from ecgdx.cv import _sampler_prior
    from ecgdx.decision import fit_st_elevation_rates, macro_f1_and_recalls
    from ecgdx.labels import CLASS_KEYS

    oof = load_oof(args.run)
    logits, labels, templates, folds, names = (oof[k] for k in ("logits", "labels", "templates", "folds", "names"))
    prior = _sampler_prior(load_config(args.run / "config.yaml", []), labels)
    st = load_st_elevation(args.run, names, args.data, args.jobs)
    extra = load_findings(args.run, names, args.data, args.jobs, keys)
    for j, key in enumerate(keys):
        rates = fit_st_elevation_rates(extra[:, j], labels)
        print(f"{key}: assessed on {100 * np.mean(~np.isnan(extra[:, j])):.1f} % of pages; P(met | class) "
              + ", ".join(f"{c} {r:.3f}" for c, r in zip(CLASS_KEYS, rates, strict=True)))
    without = cross_fitted(logits, labels, folds, st, extra, prior, with_extra=False)
    with_extra = cross_fitted(logits, labels, folds, st, extra, prior, with_extra=True)
    print(f"{args.run}: {len(labels)} pages, out of fold")
    for name, pred in (("image + ST finding", without), (f"image + ST + {', '.join(keys)}", with_extra)):
        f1, recalls = macro_f1_and_recalls(labels, pred)
        by_template = ", ".join(f"{t} {macro_f1_and_recalls(labels[templates == t], pred[templates == t])[0]:.3f}"
                                for t in ("3x4_grid", "6x2_nogrid"))
        print(f"  {name}: macro-F1 {f1:.3f}; sensitivity " + ", ".join(
            f"{c} {r:.3f}" for c, r in zip(CLASS_KEYS, recalls, strict=True)) + f"; {by_template}")
    gain = paired_gain(labels, with_extra, without, n_boot=args.n_boot)
    print(f"  paired gain: {gain['gain']:+.3f} (95% CI {gain['low']:+.3f} to {gain['high']:+.3f}; above zero in "
          f"{100 * gain['share_of_resamples_above_zero']:.1f} % of resamples); decisions changed: "
          f"{int((with_extra != without).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
