"""Degradations in numpy: the operators A of the tasks, and corruptions for experiments.

The same kernels (Lanczos2, blur) are built here once and handed to both
backends, which apply them in their own frameworks inside the loss.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image as PILImage
from scipy import ndimage

from dip_core.errors import UserError

SR_FACTORS = (2, 4, 8)


class DegradationError(UserError):
    """An invalid degradation setting (kernel spec, factor, noise level...)."""


class OpKind(str, Enum):
    IDENTITY = "identity"  # denoise, jpeg: y = x (+ corruption)
    MASK = "mask"  # inpaint, restore: y = m * x
    DOWNSAMPLE = "downsample"  # sr: y = Lanczos2-downsample(x, factor)
    BLUR = "blur"  # deblur: y = k * x


@dataclass(frozen=True)
class Operator:
    """The degradation A inside the loss MSE(A(out), y), described in numpy terms."""

    kind: OpKind
    mask: np.ndarray | None = None  # (H, W, 1) float32, 1 = known
    factor: int = 1  # downsampling factor
    kernel: np.ndarray | None = None  # 2-D float32: Lanczos2 (separable outer product) or blur kernel

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A(x) for x (H, W, C) in numpy: the reference for the backends' versions."""
        if self.kind is OpKind.IDENTITY:
            return x
        if self.kind is OpKind.MASK and self.mask is not None:
            return x * self.mask
        if self.kind is OpKind.DOWNSAMPLE:
            return lanczos_downsample(x, self.factor)
        if self.kind is OpKind.BLUR and self.kernel is not None:
            return blur(x, self.kernel)
        raise ValueError(f"a {self.kind.value} operator without its {'mask' if self.kind is OpKind.MASK else 'kernel'}")


# --- Lanczos2 downsampler (super-resolution) ---------------------------------


def lanczos2_taps(factor: int) -> np.ndarray:
    """1-D Lanczos kernel with 2 lobes, phase 0.5: 4*factor taps summing to 1."""
    k = np.arange(1, 4 * factor + 1, dtype=np.float64)
    d = np.abs(k - 2 * factor - 0.5) / factor  # distance of each tap from the centre, in output pixels
    taps = np.sinc(d) * np.sinc(d / 2)
    return (taps / taps.sum()).astype(np.float32)


def lanczos2_kernel(factor: int) -> np.ndarray:
    taps = lanczos2_taps(factor)
    return np.outer(taps, taps).astype(np.float32)


def lanczos_pad(factor: int) -> int:
    """Replicate padding that makes the strided kernel give exactly size / factor."""
    return (4 * factor - factor) // 2


def check_factor(factor: int, height: int | None = None, width: int | None = None) -> None:
    """A factor of SR_FACTORS and, when a size is given, one that divides both sides."""
    if factor not in SR_FACTORS:
        choices = ", ".join(map(str, SR_FACTORS))
        raise DegradationError(f"super-resolution factor must be one of {choices}, got {factor}")
    if height is not None and width is not None and (height % factor or width % factor):
        raise DegradationError(f"a {height}x{width} image cannot be downsampled by {factor} (sides must divide)")


def lanczos_downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) -> (H/f, W/f, C): replicate padding, separable Lanczos2, stride f."""
    check_factor(factor, x.shape[0], x.shape[1])
    taps = lanczos2_taps(factor).astype(np.float64)
    p = lanczos_pad(factor)
    y = np.pad(x.astype(np.float64), ((p, p), (p, p), (0, 0)), mode="edge")
    for axis in (0, 1):
        windows = sliding_window_view(y, taps.size, axis=axis)  # (..., taps) along `axis`
        windows = windows[::factor] if axis == 0 else windows[:, ::factor]
        y = windows @ taps
    return y.astype(np.float32)


# --- Blur kernels (deblurring) -------------------------------------------------


def gaussian_kernel(sigma: float) -> np.ndarray:
    if not sigma > 0:
        raise DegradationError(f"gaussian blur needs sigma > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def box_kernel(size: int) -> np.ndarray:
    if size < 1 or size % 2 == 0:
        raise DegradationError(f"box blur size must be a positive odd number, got {size}")
    return np.full((size, size), 1.0 / size**2, dtype=np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A line of `length` pixels at `angle` degrees through the centre, antialiased."""
    if not length >= 1:
        raise DegradationError(f"motion blur length must be >= 1, got {length}")
    radius = math.ceil(length / 2)
    size = 2 * radius + 1
    k = np.zeros((size, size), dtype=np.float64)
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)
    samples = max(2, int(length * 8))
    for s in np.linspace(-length / 2, length / 2, samples):
        x, y = radius + s * dx, radius + s * dy
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
        for ox, oy, w in corners:
            if 0 <= x0 + ox < size and 0 <= y0 + oy < size:
                k[y0 + oy, x0 + ox] += w
    return (k / k.sum()).astype(np.float32)


def kernel_from_image(path: Path) -> np.ndarray:
    from dip_core.problem.image import load_image

    img = load_image(path)
    k = img.pixels.mean(axis=2).astype(np.float64)
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise DegradationError(f"kernel image {path} must have odd sides, got {k.shape[0]}x{k.shape[1]}")
    if k.sum() <= 0:
        raise DegradationError(f"kernel image {path} is all black")
    return (k / k.sum()).astype(np.float32)


_SPEC = re.compile(r"^(gaussian|box|motion):(.+)$")


def parse_kernel(spec: str) -> np.ndarray:
    """`gaussian:SIGMA`, `box:SIZE`, `motion:LENGTH,ANGLE`, or the path of a kernel image."""
    m = _SPEC.match(spec.strip())
    if m is None:
        path = Path(spec)
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") or path.exists():
            return kernel_from_image(path)
        raise DegradationError(
            f"unknown kernel {spec!r}: use gaussian:SIGMA, box:SIZE, motion:LENGTH,ANGLE or a kernel image"
        )
    kind, args = m.groups()
    try:
        values = [float(v) for v in args.split(",")]
    except ValueError:
        raise DegradationError(f"kernel {spec!r}: {args!r} is not a list of numbers") from None
    if kind == "gaussian" and len(values) == 1:
        return gaussian_kernel(values[0])
    if kind == "box" and len(values) == 1 and values[0].is_integer():
        return box_kernel(int(values[0]))
    if kind == "motion" and len(values) == 2:
        return motion_kernel(values[0], values[1])
    raise DegradationError(f"kernel {spec!r}: wrong arguments for {kind}")


def blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution with `kernel`, same size, mirror padding (the edge pixel is not repeated)."""
    k = kernel.astype(np.float64)
    out = np.stack([ndimage.convolve(x[..., c].astype(np.float64), k, mode="mirror") for c in range(x.shape[2])], -1)
    return out.astype(np.float32)


# --- Corruptions for experiments (`dip degrade`) -------------------------------


def add_noise(x: np.ndarray, sigma: float, seed: int | tuple[int, ...]) -> np.ndarray:
    """Gaussian noise of std sigma/255, clipped to [0, 1] (as in the paper's code).

    A tuple seed such as (seed, 1) draws from a stream independent of `seed`'s (numpy's SeedSequence).
    """
    if sigma < 0:
        raise DegradationError(f"noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(scale=sigma / 255.0, size=x.shape), 0, 1).astype(np.float32)


def drop_mask(height: int, width: int, drop: float, seed: int) -> np.ndarray:
    """(H, W, 1) mask keeping each pixel (all channels) with probability 1 - drop."""
    if not 0 <= drop < 1:
        raise DegradationError(f"drop fraction must be in [0, 1), got {drop}")
    rng = np.random.default_rng(seed)
    return (rng.random((height, width, 1)) >= drop).astype(np.float32)


def jpeg_compress(x: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through a JPEG of this quality."""
    if not 1 <= quality <= 95:
        raise DegradationError(f"JPEG quality must be in 1..95, got {quality}")
    u8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    im = PILImage.fromarray(u8[..., 0] if x.shape[2] == 1 else u8)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    back = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
    return back[..., None] if back.ndim == 2 else back


def resize(x: np.ndarray, height: int, width: int, method: int = PILImage.Resampling.BICUBIC) -> np.ndarray:
    """Resize float pixels with Pillow (per channel, in float)."""
    chans = [
        np.asarray(PILImage.fromarray(x[..., c].astype(np.float32)).resize((width, height), method))
        for c in range(x.shape[2])
    ]
    return np.clip(np.stack(chans, -1), 0, 1).astype(np.float32)


def text_mask(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 1) mask with lines of text as unknown (black) pixels, like the paper's overlay."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    im = PILImage.new("L", (width, height), 255)
    draw = ImageDraw.Draw(im)
    size = max(8, height // 12)
    font = ImageFont.load_default(size=size)
    words = ["deep", "image", "prior", "restore", "no", "training", "data", "network", "structure"]
    y = size // 2
    while y < height - size:
        line = " ".join(rng.choice(words, size=8))
        draw.text((int(rng.integers(0, max(1, width // 8))), y), line, fill=0, font=font)
        y += int(size * 1.6)
    return (np.asarray(im, np.float32) / 255.0 >= 0.5).astype(np.float32)[..., None]


def add_photon_noise(x: np.ndarray, peak: float, seed: int | tuple[int, ...]) -> np.ndarray:
    """Photon (shot) noise: counts drawn from Poisson(peak x), divided by the peak and clipped to [0, 1]. `peak`
    is the expected count of a white pixel: the lower, the noisier (a low-light or low-dose image)."""
    if not 0 < peak <= 1e6:
        raise DegradationError(f"the peak is a photon count in (0, 1e6], got {peak}")
    rng = np.random.default_rng(seed)
    return np.clip(rng.poisson(peak * np.clip(x, 0, 1)) / peak, 0, 1).astype(np.float32)
