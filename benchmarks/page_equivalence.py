"""Do the 1,190 development pages still read the same? A guard for refactors of the page code.

    python benchmarks/page_equivalence.py            # compare with tests/data/dev_page_reference.npz
    python benchmarks/page_equivalence.py --write    # record a new reference (after a deliberate change)

For every page of ``$ECGDX_DATA_DIR/mendeley-v1-dev`` the bundled model's ``Predictor`` reads the page
once. Two things are kept: the model input (the canonical page) shrunk to a 16 x 32 signature by
area averaging, and the label the model gives. A change passes when every page's signature stays
within ``MEAN_TOLERANCE`` gray levels on average and ``MAX_TOLERANCE`` at most, and at least
``LABEL_AGREEMENT`` of the labels stay the same. ``tests/test_page_equivalence.py`` runs this in CI.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "fixtures" / "dev_page_reference.npz"
SIGNATURE_SHAPE = (16, 32)
MEAN_TOLERANCE = 1.0  # gray levels, mean over the signature
MAX_TOLERANCE = 8.0  # gray levels, any signature cell
LABEL_AGREEMENT = 0.99


def dev_pages(data_dir: Path) -> list[tuple[str, Path]]:
    root = data_dir / "mendeley-v1-dev"
    with open(root / "labels.csv", newline="") as handle:
        return sorted((row["file"], root / row["file"]) for row in csv.DictReader(handle))


def read_pages(pages: list[tuple[str, Path]], progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """(N, 16, 32) uint8 signatures of the model inputs and the bundled model's labels."""
    from ecgdx.inference import Predictor

    predictor = Predictor()
    signatures, labels = [], []
    for i, (_, path) in enumerate(pages):
        result = predictor.predict(str(path), keep_input=True, explain=False)
        small = cv2.resize(result.model_input, SIGNATURE_SHAPE[::-1], interpolation=cv2.INTER_AREA)
        signatures.append(small)
        labels.append(result.label or "")
        if progress and (i + 1) % 200 == 0:
            print(f"{i + 1}/{len(pages)} pages", file=sys.stderr, flush=True)
    return np.stack(signatures).astype(np.uint8), labels


def compare(reference: dict, names: list[str], signatures: np.ndarray, labels: list[str]) -> dict:
    if list(reference["names"]) != names:
        raise ValueError("the pages differ from the reference's; record a new one with --write")
    diff = np.abs(signatures.astype(np.int16) - reference["signatures"].astype(np.int16))
    mean_per_page = diff.reshape(len(names), -1).mean(axis=1)
    max_per_page = diff.reshape(len(names), -1).max(axis=1)
    agreement = float(np.mean(np.asarray(labels) == reference["labels"]))
    changed = [names[i] for i in np.flatnonzero((mean_per_page > MEAN_TOLERANCE) | (max_per_page > MAX_TOLERANCE))]
    return {"pages": len(names), "worst_mean_diff": float(mean_per_page.max()), "worst_max_diff": float(max_per_page.max()),
            "pages_beyond_tolerance": changed, "label_agreement": agreement,
            "ok": not changed and agreement >= LABEL_AGREEMENT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the reference instead of comparing")
    parser.add_argument("--data", default=os.environ.get("ECGDX_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    pages = dev_pages(Path(args.data))
    started = time.perf_counter()
    signatures, labels = read_pages(pages, progress=True)
    names = [name for name, _ in pages]
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(REFERENCE, names=np.asarray(names), signatures=signatures, labels=np.asarray(labels))
        print(f"wrote {REFERENCE}: {len(names)} pages in {time.perf_counter() - started:.0f} s")
        return 0
    with np.load(REFERENCE) as saved:
        result = compare(dict(saved), names, signatures, labels)
    print(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
