"""Test images: the project's synthetic scene, and conversion to 8-bit."""

from __future__ import annotations

import numpy as np

from dip_core.problem.examples import synthetic_scene as synthetic

__all__ = ["synthetic", "to_u8"]


def to_u8(x: np.ndarray) -> np.ndarray:
    u8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return u8[..., 0] if u8.shape[2] == 1 else u8
