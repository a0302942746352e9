"""Simulated phone photographs of scanned pages, for training (issue 13, item 5).

A photographed page reaches the model after ``ecgdx.page.normalize`` has flattened its sheet,
evened its light and undone its tilt. What the model then sees is the *residual* damage: a
slightly imperfect perspective fix, blur, JPEG blocks, moire, light that the lighting step left.
Training on scans alone never shows it this. ``photograph`` draws one such picture from a clean
page; the training cache (``ecgdx.data.cache.load_photo_variants``) runs every variant through
the same normalisation and preprocessing as inference, so the model trains on the residue.

The ranges are our own and wider than the robustness benchmark's fixed "photo" mix
(``benchmarks/robustness.py``: rotation <= 5 deg, 2 % perspective on a table, a 20 % shadow,
JPEG 50), so that benchmark stays a test of something not trained on exactly.

No flips, ever: left-right is time and up-down is polarity. Torch-free (numpy and OpenCV only).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["PHOTO_VERSION", "photograph"]

# Bump when photograph() changes: the training cache of photo variants is keyed by it.
PHOTO_VERSION = 1


def photograph(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One simulated photo of a (H, W) uint8 page (255 = paper); returns (H', W') uint8.

    Drawn from ``rng``, in this order:
      - the view: half the time the sheet lies on a darker table (a margin of 3-10 % of the width,
        table gray 30-140, corners moved by up to 3 % of the short side), else it fills the frame
        (corners moved in or out by up to 4 %, white where the sheet pulls in); a tilt of up to
        +/- 4 deg in the same homography;
      - light: a linear gradient (0-35 % darker towards a random side) times a vignette (0-25 % at
        the corners);
      - optics and sensor: Gaussian blur sigma 0-1.2 px, moire on 30 % of pictures (a grating of
        amplitude 2-8 gray levels, period 3-8 px, random angle), Gaussian noise sigma 0-6;
      - JPEG re-encoding at quality 35-90.
    """
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"photograph needs a (H, W) uint8 page, got {getattr(gray, 'shape', None)} "
                         f"{getattr(gray, 'dtype', type(gray).__name__)}")
    out = _view(gray, rng)
    out = _light(out, rng)
    blur = rng.uniform(0.0, 1.2)
    if blur > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    values = out.astype(np.float32)
    if rng.random() < 0.3:
        values += _moire(values.shape, rng)
    values += rng.normal(0.0, rng.uniform(0.0, 6.0), values.shape).astype(np.float32)
    out = np.clip(values, 0, 255).astype(np.uint8)
    quality = int(rng.integers(35, 91))
    return cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


def _view(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Perspective and tilt in one homography, on a table or filling the frame."""
    h, w = gray.shape
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    angle = math.radians(rng.uniform(-4.0, 4.0))
    centre = np.float32([w / 2.0, h / 2.0])
    rotation = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if rng.random() < 0.5:
        margin = int(rng.uniform(0.03, 0.10) * w)
        size = (w + 2 * margin, h + 2 * margin)
        jitter = rng.uniform(-1, 1, (4, 2)) * rng.uniform(0.0, 0.03) * min(w, h)
        placed = (corners - centre) @ rotation.T + centre + margin + jitter
        border = int(rng.integers(30, 141))
    else:
        size = (w, h)
        jitter = rng.uniform(-1, 1, (4, 2)) * rng.uniform(0.0, 0.04) * min(w, h)
        placed = (corners - centre) @ rotation.T + centre + jitter
        border = 255
    matrix = cv2.getPerspectiveTransform(corners, placed.astype(np.float32))
    return cv2.warpPerspective(gray, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=border)


def _light(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear gradient times a vignette."""
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / w - 0.5, yy / h - 0.5
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(u * math.cos(direction) + v * math.sin(direction) + 0.5, 0, 1)
    gain = (1.0 - rng.uniform(0.0, 0.35) * ramp) * (1.0 - rng.uniform(0.0, 0.25) * 2.0 * (u * u + v * v))
    return np.clip(gray.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _moire(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A faint sinusoidal grating: the interference of a screen's or a print's raster with the sensor's."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(3.0, 8.0)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    return (rng.uniform(2.0, 8.0) * np.sin(phase)).astype(np.float32)
