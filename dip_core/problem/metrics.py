"""Image quality metrics (pure functions on float images in [0, 1])."""

from __future__ import annotations

import functools
import math

import numpy as np


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    e = mse(a, b)
    return math.inf if e == 0 else 10.0 * math.log10(1.0 / e)


def luma(x: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB pixels in [0, 1], on the [16, 235] / 255 scale of MATLAB's rgb2ycbcr (grey: as is),
    the channel super-resolution papers score."""
    x = np.asarray(x, np.float64)
    if x.shape[-1] == 1:
        return x[..., 0]
    return (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """PSNR (dB) of the luma channel with `border` pixels cropped from each side: super-resolution's usual metric
    (the border is the scale factor)."""
    ya, yb = luma(a), luma(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    return psnr(ya, yb)


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


NOISE_PATCH = 5  # side of the patches whose covariance the noise estimate reads
NOISE_MAX_PATCHES = 1 << 17  # patches taken on a grid beyond this many (memory, time)
NOISE_MIN_PATCH_RATIO = 4  # fewer patches than this x the patch dimension: the MAD rule alone


def noise_sigma_estimate(x: np.ndarray, patch: int = NOISE_PATCH) -> float:
    """Standard deviation of white Gaussian noise in an image (H, W[, C]), in its units.

    `noise_sigma_global` reads the whole image, so texture it cannot tell from noise inflates it (coins at
    sigma 5 of 255 read 8.3). That estimate is an upper bound: the patches whose differences are no larger than
    noise of that level makes 99 times in 100 (weak texture: Liu, Tanaka and Okutomi, TIP 2013) are read again,
    and the smaller estimate wins (`_weak_texture_sigma`). For images in [0, 1]; above sigma ~64/255 no patch is
    clear of clipping and the whole-image estimate stands. On the stopping study's test set coins at sigma 5 reads
    5.4 instead of 8.3 (of 255) (bench/report/stopping-test-set.md).
    """
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    upper = noise_sigma_global(x, patch)
    return min(upper, _weak_texture_sigma(x, upper, patch))


def discrepancy_sigma(observed: np.ndarray, given: float | None = None) -> float:
    """The noise level whose square the stopping rule compares the loss with: the estimate, or with a level
    `given` (image units) the smaller of the two. Both bound the noise in the image from above: noise clipped to
    [0, 1] is weaker than the noise that was added (sigma 75 on scikit-image's cell leaves 62), and texture inflates
    the estimate. On the stopping study's test set (53 curves, dip 0.4) the given level alone had a 1.6 dB mean gap
    (replayed before this cap existed; `bench.autostop`'s `given` now applies it), the estimate 0.5, the smaller
    of the two 0.36. An estimate of zero (a flat image, which holds no texture to read noise from, or one too small
    to read) bounds nothing: a given level then stands as given.
    """
    estimate = noise_sigma_estimate(observed)
    if given is None:
        return estimate
    return min(given, estimate) if 0 < estimate < math.inf else given


def noise_sigma_global(x: np.ndarray, patch: int = NOISE_PATCH) -> float:
    """The noise level read from every patch (dip 0.3's estimate; `noise_sigma_estimate` refines it).

    The smaller of two estimates, each biased up by a different kind of image
    structure: the patch-covariance estimate (Chen, Zhu and Heng, ICCV 2015),
    which hard edges inflate at low noise, and Donoho's wavelet MAD rule, which
    fine texture inflates (barbara at 64x64, true 15 of 255: patches 14.6,
    MAD 18.2). On the project's test images at sigma 0-35 the smaller one's mean
    error was 9 % at 64 px and 6 % at 256 px (MAD alone: 44 % and 26 %).
    """
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    return min(_haar_mad_sigma(x), _patch_pca_sigma(x, patch))


WEAK_TEXTURE_QUANTILE = 0.99  # a patch of pure noise at the upper bound's level passes this often
WEAK_TEXTURE_MARGIN = 2.0  # patches whose mean lies within this many sigma of 0 or 1 are skipped (clipped noise)


@functools.lru_cache(maxsize=8)
def _pure_noise_texture_quantile(channels: int, patch: int) -> float:
    """The WEAK_TEXTURE_QUANTILE of a patch's texture (its squared horizontal and vertical differences summed)
    under unit white noise: drawn once, with a fixed seed, so the estimate is deterministic."""
    draws = np.random.default_rng(0).standard_normal((20000, channels, patch, patch))
    return float(np.quantile(_texture(draws), WEAK_TEXTURE_QUANTILE))


def _texture(patches: np.ndarray) -> np.ndarray:
    """Per patch (..., C, p, p): the sum of its squared horizontal and vertical neighbour differences."""
    return (np.diff(patches, axis=-1) ** 2).sum(axis=(-3, -2, -1)) + (np.diff(patches, axis=-2) ** 2).sum(
        axis=(-3, -2, -1)
    )


def _weak_texture_sigma(x: np.ndarray, upper: float, patch: int) -> float:
    """The patch-covariance estimate over the patches that noise of level `upper` could have made by itself and
    whose mean is clear of clipping (inf where fewer than NOISE_MIN_PATCH_RATIO x their dimension remain).

    One pass from an upper bound: a level below the truth would keep only the quietest patches and read lower
    still, so the threshold is never lowered again."""
    if not math.isfinite(upper) or upper <= 0 or min(x.shape[:2]) < patch:
        return math.inf
    patches = _sampled_patches(x, patch)
    means = patches.mean(axis=(2, 3))
    margin = WEAK_TEXTURE_MARGIN * upper
    quiet = _texture(patches) < _pure_noise_texture_quantile(x.shape[2], patch) * upper**2
    quiet &= np.all((means > margin) & (means < 1 - margin), axis=1)
    dimension = x.shape[2] * patch * patch
    if quiet.sum() < NOISE_MIN_PATCH_RATIO * dimension:
        return math.inf
    return _smallest_principal_sigma(patches[quiet].reshape(-1, dimension))


def _patch_pca_sigma(x: np.ndarray, patch: int) -> float:
    """White noise adds sigma^2 to every principal direction of the image's patches, structure lives in a
    few: sigma^2 is the mean of the smallest eigenvalues, over the largest set whose mean is not above its
    median. Images with fewer patches than NOISE_MIN_PATCH_RATIO x their dimension give inf (no estimate:
    the covariance would be rank-deficient, its smallest eigenvalues zero whatever the noise)."""
    if min(x.shape[:2]) < patch:
        return math.inf
    positions = (x.shape[0] - patch + 1) * (x.shape[1] - patch + 1)
    if positions < NOISE_MIN_PATCH_RATIO * x.shape[2] * patch * patch:
        return math.inf
    return _smallest_principal_sigma(_sampled_patches(x, patch).reshape(-1, x.shape[2] * patch * patch))


def _sampled_patches(x: np.ndarray, patch: int) -> np.ndarray:
    """The image's patch x patch windows on a grid of at most about NOISE_MAX_PATCHES positions, (n, C, p, p):
    the patches both noise readings take."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (patch, patch), axis=(0, 1))  # (H', W', C, p, p)
    step = max(1, math.ceil(math.sqrt(windows.shape[0] * windows.shape[1] / NOISE_MAX_PATCHES)))
    return windows[::step, ::step].reshape(-1, x.shape[2], patch, patch)


def _smallest_principal_sigma(patches: np.ndarray) -> float:
    """sigma from flattened patches (n, d): the mean of the smallest eigenvalues of their covariance, over the
    largest set whose mean is not above its median."""
    patches = patches - patches.mean(axis=0)
    eig = np.clip(np.linalg.eigvalsh(patches.T @ patches / len(patches)), 0.0, None)  # ascending
    for k in range(len(eig), 0, -1):
        smallest = eig[:k]
        if smallest.mean() <= np.median(smallest):
            return float(math.sqrt(smallest.mean()))
    return float(math.sqrt(eig[0]))


def _haar_mad_sigma(x: np.ndarray) -> float:
    """Donoho's rule: median absolute finest diagonal Haar coefficient / 0.6745, averaged over channels."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return 0.0
    b = x[:h, :w]
    diagonal = (b[0::2, 0::2] - b[0::2, 1::2] - b[1::2, 0::2] + b[1::2, 1::2]) / 2
    return float(np.mean(np.median(np.abs(diagonal), axis=(0, 1)) / 0.6745))


def peak_estimate(y: np.ndarray) -> float:
    """Photons of a white pixel in an image of photon counts divided by that peak (H, W[, C]).

    The square root (Anscombe's transform, offset 3/8) makes Poisson noise about Gaussian with std 1/(2 sqrt(peak)),
    whatever the intensity; that std is estimated as for Gaussian noise, once without the offset (which needs the
    peak) and once with it. Measured on scikit-image's camera, astronaut and coffee at 128x128 (Lanczos), seed 0:
    peak 5 reads 7.5-9.5, 10 reads 14.9-15.1, 30 reads 29.9-39.8, 100 reads 84.7-105.1 (low peaks read high: the
    transform is not Gaussian at a few photons, and white clips). Give --peak when it is known.
    """
    y = np.clip(np.asarray(y, np.float64), 0, None)
    first = 1 / (4 * noise_sigma_global(np.sqrt(y)) ** 2)
    return 1 / (4 * noise_sigma_global(np.sqrt(y + 0.375 / first)) ** 2)
