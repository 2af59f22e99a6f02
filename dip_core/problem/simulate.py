"""What `dip degrade` makes of a clean image for each task: the corrupted input and the files that go with it.

Each simulator takes the clean image and a `Corruption` and returns file-name suffixes (with their extension)
and the images to write under them; the task registry names each task's simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from dip_core.problem import degrade as dg
from dip_core.problem.image import Image


@dataclass(frozen=True)
class Corruption:
    """The settings of a simulated corruption (those of `dip degrade`)."""

    sigma: float = 0.0  # std of Gaussian noise on the 0-255 scale (0: none)
    drop: float = 0.5  # restore: fraction of pixels dropped
    factor: int = 4  # sr: downscaling factor
    kernel: str = "gaussian:2"  # deblur: kernel spec or image path
    quality: int = 10  # jpeg: quality 1-95
    peak: float = 30.0  # poisson: expected photons of a white pixel
    seed: int = 0

    def noisy(self, pixels: np.ndarray, apart: bool = True) -> np.ndarray:
        """The pixels with this corruption's Gaussian noise (none at sigma 0). Noise on top of another corruption
        draws from a stream of its own (`apart`), independent of that corruption's draws."""
        stream = (self.seed, 1) if apart else self.seed
        return dg.add_noise(pixels, self.sigma, stream) if self.sigma else pixels


def noisy(img: Image, c: Corruption) -> dict[str, Image]:
    return {f"_noisy{c.sigma:g}.png": img.with_pixels(c.noisy(img.pixels, apart=False))}


def jpeg(img: Image, c: Corruption) -> dict[str, Image]:
    """A noisy picture (when sigma > 0), then compressed."""
    return {f"_q{c.quality}.jpg": img.with_pixels(dg.jpeg_compress(c.noisy(img.pixels), c.quality))}


def text_overlay(img: Image, c: Corruption) -> dict[str, Image]:
    """White text over the image, and the mask that says where it is."""
    mask = dg.text_mask(img.height, img.width, c.seed)
    return {"_text.png": img.with_pixels(c.noisy(img.pixels) * mask + (1 - mask)), "_text_mask.png": Image(mask, "L")}


def dropped_pixels(img: Image, c: Corruption) -> dict[str, Image]:
    mask = dg.drop_mask(img.height, img.width, c.drop, c.seed)
    name = f"_drop{round(c.drop * 100)}"
    return {f"{name}.png": img.with_pixels(c.noisy(img.pixels) * mask), f"{name}_mask.png": Image(mask, "L")}


def downscaled(img: Image, c: Corruption) -> dict[str, Image]:
    """The low-resolution input (Lanczos), and the clean image cropped to a multiple of the factor when it is not
    one already (the ground truth of the same size as the result)."""
    dg.check_factor(c.factor)
    h, w = img.height - img.height % c.factor, img.width - img.width % c.factor
    files = {}
    hr = img
    if (h, w) != (img.height, img.width):
        alpha = None if img.alpha is None else img.alpha[:h, :w]
        hr = Image(img.pixels[:h, :w], img.mode, img.bit_depth, alpha, img.source_mode, img.path)
        files["_gt.png"] = hr
    low = c.noisy(dg.resize(hr.pixels, h // c.factor, w // c.factor, PILImage.Resampling.LANCZOS))
    files[f"_lr{c.factor}.png"] = Image(low, img.mode, img.bit_depth, None, img.source_mode)
    return files


def blurred(img: Image, c: Corruption) -> dict[str, Image]:
    return {"_blur.png": img.with_pixels(c.noisy(dg.blur(img.pixels, dg.parse_kernel(c.kernel)), apart=False))}


def photon_counts(img: Image, c: Corruption) -> dict[str, Image]:
    """Photon counts at `peak` for a white pixel, as an image (counts / peak), Gaussian read noise on top if
    sigma > 0."""
    counts = dg.add_photon_noise(img.pixels, c.peak, c.seed)
    return {f"_peak{c.peak:g}.png": img.with_pixels(c.noisy(counts))}
