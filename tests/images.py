"""Test images: the project's synthetic scene, conversion to 8-bit, and writing one to a file."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from dip_core.problem.examples import synthetic_scene as synthetic

__all__ = ["save", "synthetic", "to_u8"]


def to_u8(x: np.ndarray) -> np.ndarray:
    u8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return u8[..., 0] if u8.shape[2] == 1 else u8


def save(path, x: np.ndarray):
    """Writes x (H, W, C floats in [0, 1]) to `path` in 8 bits, in the format its suffix names; returns `path`."""
    PILImage.fromarray(to_u8(x)).save(path)
    return path
