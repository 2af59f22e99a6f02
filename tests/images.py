"""Synthetic test images: smooth shading with sharp discs, any size, grey or colour."""

from __future__ import annotations

import numpy as np


def synthetic(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.3 * np.sin(5 * xx + 2 * yy), 0.5 + 0.3 * np.cos(4 * yy - xx), 0.4 + 0.4 * xx * yy]
    img = np.stack(planes[:channels] if channels == 3 else [planes[0]], -1)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(6):
        cy, cx, r = rng.random() * height, rng.random() * width, 3 + rng.random() * height / 5
        img[(rows - cy) ** 2 + (cols - cx) ** 2 < r * r] = rng.random(img.shape[2])
    return np.clip(img, 0, 1).astype(np.float32)


def to_u8(x: np.ndarray) -> np.ndarray:
    u8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return u8[..., 0] if u8.shape[2] == 1 else u8
