"""The fixed network input z, drawn in numpy so that every backend can share it."""

from __future__ import annotations

from enum import Enum

import numpy as np


class InputKind(str, Enum):
    NOISE = "noise"  # uniform [0, 1) x 0.1, any number of channels
    MESHGRID = "meshgrid"  # two channels: x and y coordinates in [0, 1]
    GAUSSIAN = "gaussian"  # normal, mean 0 and std 0.1 (the Deep Random Projector's seed), any number of channels


NOISE_SCALE = 0.1


def make_input(kind: InputKind | str, channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """z as a (height, width, channels) float32 array."""
    kind = InputKind(kind)
    if kind is InputKind.MESHGRID:
        if channels != 2:
            raise ValueError(f"a meshgrid input has 2 channels, the network expects {channels}")
        xs = np.linspace(0.0, 1.0, width, dtype=np.float32) if width > 1 else np.zeros(1, np.float32)
        ys = np.linspace(0.0, 1.0, height, dtype=np.float32) if height > 1 else np.zeros(1, np.float32)
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy], axis=-1)
    rng = np.random.default_rng(seed)
    if kind is InputKind.GAUSSIAN:
        return (rng.standard_normal((height, width, channels), dtype=np.float32) * NOISE_SCALE).astype(np.float32)
    return (rng.random((height, width, channels), dtype=np.float32) * NOISE_SCALE).astype(np.float32)
