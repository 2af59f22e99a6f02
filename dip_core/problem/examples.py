"""A synthetic test scene the project can make anywhere: smooth shading and sharp discs.

Used by the demo (no image has to be downloaded) and by the tests (any size,
grey or colour, on purpose odd).
"""

from __future__ import annotations

import numpy as np


def synthetic_scene(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]: three sinusoidal gradients with six flat discs on top."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.3 * np.sin(5 * xx + 2 * yy), 0.5 + 0.3 * np.cos(4 * yy - xx), 0.4 + 0.4 * xx * yy]
    img = np.stack(planes if channels == 3 else planes[:1], -1)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(6):
        cy, cx, r = rng.random() * height, rng.random() * width, 3 + rng.random() * height / 5
        img[(rows - cy) ** 2 + (cols - cx) ** 2 < r * r] = rng.random(img.shape[2])
    return np.clip(img, 0, 1).astype(np.float32)
