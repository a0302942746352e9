"""Synthetic ECG-like pages for smoke training and tests on machines without the real data.

These are NOT realistic ECGs: each class gets a visibly different trace pattern (rate and ST
level) so that a few epochs of training can show the pipeline learns something. Numbers from
synthetic runs say nothing about clinical performance.
"""

from __future__ import annotations

import cv2
import numpy as np

from ecgdx.labels import CLASS_KEYS

# (beats per 10 s, ST offset in mV, T-wave sign) per class: arbitrary but distinct.
_CLASS_PATTERN = {
    "normal": (12, 0.0, 1.0),
    "mi": (14, 0.25, 1.0),
    "abnormal_heartbeat": (22, 0.0, 1.0),
    "history_of_mi": (12, 0.0, -1.0),
}


def _beat_train(n: int, beats: int, st_mv: float, t_sign: float, rng: np.random.Generator) -> np.ndarray:
    """One trace of ``n`` samples in mV: Gaussian P, QRS and T waves per beat plus baseline noise."""
    t = np.linspace(0.0, 1.0, n)
    trace = np.zeros(n)
    period = 1.0 / beats
    jitter = rng.uniform(-0.1, 0.1) * period
    for k in range(beats):
        c = (k + 0.5) * period + jitter
        trace += 0.15 * np.exp(-(((t - c + 0.18 * period) / (0.025 * period)) ** 2))
        trace += 1.0 * np.exp(-(((t - c) / (0.012 * period)) ** 2))
        trace -= 0.25 * np.exp(-(((t - c - 0.03 * period) / (0.01 * period)) ** 2))
        st = (t > c + 0.05 * period) & (t < c + 0.25 * period)
        trace[st] += st_mv
        trace += t_sign * 0.3 * np.exp(-(((t - c - 0.3 * period) / (0.05 * period)) ** 2))
    return trace + rng.normal(0.0, 0.02, n)


def make_synthetic_image(label: str, size: tuple[int, int] = (384, 384), seed: int = 0) -> np.ndarray:
    """A (H, W) uint8 image (255 = paper) that looks like a cropped 4-row trace area of class ``label``."""
    if label not in CLASS_KEYS:
        raise ValueError(f"unknown class {label!r}")
    height, width = size
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 255, np.uint8)
    step = max(4, width // 60)
    image[:, ::step] = 225
    image[::step, :] = 225
    beats, st_mv, t_sign = _CLASS_PATTERN[label]
    rows = 4
    for row in range(rows):
        y0 = int((row + 0.6) * height / (rows + 0.2))
        trace = _beat_train(width, beats, st_mv, t_sign, rng)
        ys = (y0 - trace * height / 16).astype(np.int32)
        points = np.stack([np.arange(width), np.clip(ys, 0, height - 1)], axis=1)
        cv2.polylines(image, [points.reshape(-1, 1, 2)], False, 0, 1, cv2.LINE_AA)
    return image


def make_synthetic_dataset(per_class: int, size: tuple[int, int], seed: int = 0):
    """Return (images list[(H,W) uint8], labels int array, templates list[str]) with ``per_class`` each."""
    images, labels = [], []
    for class_idx, key in enumerate(CLASS_KEYS):
        for i in range(per_class):
            images.append(make_synthetic_image(key, size, seed=seed * 100_003 + class_idx * 10_007 + i))
            labels.append(class_idx)
    return images, np.asarray(labels, np.int64), ["synthetic"] * len(images)
