"""Training-time augmentation with Albumentations (training code only; never imported by inference).

Every transform takes and returns a uint8 grayscale image of shape (H, W), 255 = white paper,
and keeps the shape. There are deliberately NO flips: a left-right flip reverses time and an
up-down flip inverts polarity, so neither preserves the diagnosis. Geometric transforms fill
with white, as paper would be.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ecgdx.config import AugmentConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

WHITE = 255


def build_augmentation(cfg: AugmentConfig):
    """Return a callable ``aug(image_uint8_hw, rng) -> image_uint8_hw`` or None when disabled.

    ``rng`` is a ``numpy.random.Generator``; Albumentations is re-seeded from it per call so a
    given worker seed reproduces the same augmented stream.
    """
    if not cfg.enabled:
        return None
    import albumentations as A

    pipeline = A.Compose(
        [
            A.OneOf(
                [
                    A.Affine(
                        rotate=(-cfg.rotate_deg, cfg.rotate_deg),
                        translate_percent=(-cfg.shift, cfg.shift),
                        scale=(1.0 - cfg.scale, 1.0 + cfg.scale),
                        border_mode=cv2.BORDER_CONSTANT,
                        fill=WHITE,
                        p=1.0,
                    ),
                    A.Perspective(
                        scale=(cfg.perspective / 3.0, cfg.perspective),
                        border_mode=cv2.BORDER_CONSTANT,
                        fill=WHITE,
                        p=1.0,
                    ),
                ],
                p=cfg.p,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness_contrast, contrast_limit=cfg.brightness_contrast, p=0.5
            ),
            A.RandomShadow(
                shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2), shadow_intensity_range=(0.2, 0.5),
                p=cfg.shadow_p,
            ),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0)), A.MotionBlur(blur_limit=3)], p=cfg.blur_p),
            A.GaussNoise(std_range=(0.0, cfg.noise_std), p=0.3 if cfg.noise_std > 0 else 0.0),
            A.ImageCompression(quality_range=(cfg.jpeg_quality_min, 95), p=0.3),
        ]
    )

    def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"augmentation expects a uint8 (H, W) image, got {image.dtype} {image.shape}")
        pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = pipeline(image=image)["image"]
        return out.reshape(image.shape)

    return augment
