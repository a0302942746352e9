"""Cache of preprocessed images, so training epochs do not decode and crop pages again.

Each image is run once through ``ecgdx.page.preprocessing.preprocess`` (the same function the
inference path uses) and stored as an 8-bit PNG under ``cache_dir/<spec-hash>/<sha256>.png``.
The spec hash changes whenever any preprocessing parameter changes, so a stale cache is never
read for a new spec.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ecgdx.errors import DataError


def spec_hash(spec) -> str:
    """Short stable hash of a PreprocessSpec (its dict form)."""
    text = json.dumps(spec.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _to_uint8(tensor: np.ndarray) -> np.ndarray:
    """(1, H, W) float32 in [0, 1] -> (H, W) uint8."""
    return np.clip(np.rint(tensor[0] * 255.0), 0, 255).astype(np.uint8)


def _write_png(out: str, image: np.ndarray) -> None:
    """Write a cache entry atomically: a half-written file never passes for a finished one."""
    tmp = out + ".tmp.png"
    cv2.imwrite(tmp, image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    os.replace(tmp, out)


def _run_jobs(worker, jobs: list, workers: int, desc: str, unit: str, progress: bool, chunksize: int) -> None:
    """Run ``worker`` over ``jobs`` in a process pool with a progress bar."""
    if not jobs:
        return
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=workers or min(len(jobs), os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(worker, jobs, chunksize=chunksize), total=len(jobs), desc=desc, unit=unit,
                      disable=not progress):
            pass


def _preprocess_one(job: tuple[str, str, dict]) -> str:
    path, out, spec_dict = job
    from ecgdx.page.preprocessing import PreprocessSpec, preprocess

    _write_png(out, _to_uint8(preprocess(path, PreprocessSpec.from_dict(spec_dict))))
    return out


def load_preprocessed(paths: list[str], hashes: list[str], spec, cache_dir: str | Path, workers: int = 0,
                      progress: bool = True) -> list[np.ndarray]:
    """Return the preprocessed (H, W) uint8 image for every path, computing missing ones in parallel.

    ``hashes`` are the files' sha256 (the manifest column) and name the cache entries, so a
    duplicate image is preprocessed once.
    """
    if len(paths) != len(hashes):
        raise DataError("paths and hashes differ in length")
    folder = Path(cache_dir) / spec_hash(spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    targets = [str(folder / f"{digest}.png") for digest in hashes]
    todo = {}
    for path, target in zip(paths, targets, strict=True):
        if not os.path.exists(target) and target not in todo:
            todo[target] = path
    _run_jobs(_preprocess_one, [(path, target, spec.to_dict()) for target, path in todo.items()], workers,
              "preprocessing", "img", progress, chunksize=8)
    images = []
    for target in targets:
        image = cv2.imread(target, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"cache entry {target} is unreadable; delete the folder {folder} and retry")
        images.append(image)
    return images


def _photo_variant(job: tuple[str, list[str], dict, int, str]) -> str:
    """Photograph one page ``len(outs)`` times and preprocess each picture as inference does
    (normalise, then the spec's preprocessing); writes the (H, W) uint8 model inputs."""
    path, outs, spec_dict, seed, digest = job
    from ecgdx.data.photo import photograph
    from ecgdx.page.normalize import normalize_page
    from ecgdx.page.preprocessing import PreprocessSpec, decode_image, preprocess

    spec = PreprocessSpec.from_dict(spec_dict)
    gray = decode_image(path)
    for k, out in enumerate(outs):
        rng = np.random.default_rng([seed, int(digest[:12], 16), k])
        flat, _ = normalize_page(photograph(gray, rng))
        _write_png(out, _to_uint8(preprocess(flat, spec)))
    return path


def load_photo_variants(paths: list[str], hashes: list[str], spec, cache_dir: str | Path, variants: int, *,
                        seed: int = 0, workers: int = 0, progress: bool = True) -> list[list[np.ndarray]]:
    """For every page, ``variants`` model inputs of simulated photos of it (``ecgdx.data.photo``),
    each normalised and preprocessed like an upload; computed once, then read from
    ``cache_dir/<spec-hash>-photo<version>-seed<seed>/<sha256>-<k>.png``."""
    from ecgdx.data.photo import PHOTO_VERSION

    if len(paths) != len(hashes):
        raise DataError("paths and hashes differ in length")
    if variants <= 0:
        return [[] for _ in paths]
    folder = Path(cache_dir) / f"{spec_hash(spec)}-photo{PHOTO_VERSION}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    targets = [[str(folder / f"{digest}-{k}.png") for k in range(variants)] for digest in hashes]
    todo: dict[str, tuple[str, list[str], dict, int, str]] = {}
    for path, digest, outs in zip(paths, hashes, targets, strict=True):
        if digest not in todo and not all(os.path.exists(t) for t in outs):
            todo[digest] = (path, outs, spec.to_dict(), seed, digest)
    _run_jobs(_photo_variant, list(todo.values()), workers, "photographing pages", "page", progress, chunksize=4)
    out = []
    for outs in targets:
        images = [cv2.imread(t, cv2.IMREAD_GRAYSCALE) for t in outs]
        if any(image is None for image in images):
            raise DataError(f"a photo-variant cache entry under {folder} is unreadable; delete the folder and retry")
        out.append(images)
    return out
