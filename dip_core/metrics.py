"""Image quality metrics (pure functions on float images in [0, 1])."""

from __future__ import annotations

import math

import numpy as np


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    e = mse(a, b)
    return math.inf if e == 0 else 10.0 * math.log10(1.0 / e)


def psnr_from_mse(e: float) -> float:
    return math.inf if e <= 0 else 10.0 * math.log10(1.0 / e)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7x7 window), channels averaged."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if min(a.shape[:2]) < 7:
        return float("nan")
    if a.shape[2] == 1:
        return float(structural_similarity(a[..., 0], b[..., 0], data_range=1.0))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))
