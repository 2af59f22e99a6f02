"""Reading and writing images with Pillow: float pixels in, the input's size and mode out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from dip_core.errors import UserError
from dip_core.system.atomic import atomic_write

# Suffixes we write, and the Pillow format for each.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
IMAGE_SUFFIXES = (*FORMATS, ".webp")


class ImageError(UserError):
    """A file that cannot be read or written as an image."""


@dataclass
class Image:
    """Pixels as float32 (H, W, C) in [0, 1], C = 1 (grey) or 3 (colour).

    `alpha` is the untouched alpha channel of the input (uint8 or uint16), written
    back as it was; `mode` and `bit_depth` say how to write the result so that it
    has the input's mode.
    """

    pixels: np.ndarray
    mode: str = "RGB"  # mode to write: L, LA, RGB, RGBA, I;16
    bit_depth: int = 8
    alpha: np.ndarray | None = None
    source_mode: str = "RGB"  # Pillow mode of the file as read
    path: Path | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    def with_pixels(self, pixels: np.ndarray) -> Image:
        """Same mode and alpha, new pixels (same height and width)."""
        return Image(pixels.astype(np.float32), self.mode, self.bit_depth, self.alpha, self.source_mode, self.path)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image")
    if not os.access(path, os.R_OK):
        raise ImageError(f"cannot read {path}: permission denied")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")


def load_image(path: str | Path) -> Image:
    """Read an image file; EXIF orientation applied, palette and CMYK made RGB."""
    path = Path(path)
    _check_readable(path)
    try:
        with PILImage.open(path) as opened:
            opened.load()
            return from_pil(ImageOps.exif_transpose(opened), path)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read {path} as an image: {exc}") from None
    except PILImage.DecompressionBombError as exc:
        raise ImageError(f"{path} is too large to open safely: {exc}") from None


def from_pil(im: PILImage.Image, path: Path | None = None) -> Image:
    """Convert a Pillow image to float pixels, remembering how to write it back."""
    source = im.mode
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode == "La":
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    elif im.mode == "RGBX":
        im = im.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:  # a float image (TIFF) may hold NaN or infinity: no restoration can start from those
            where = f"{path}: " if path else "the image: "
            raise ImageError(f"{where}{bad} of its {arr.size} pixels are not finite (NaN or infinity)")
        scale = 65535.0 if im.mode.startswith("I") else 1.0
        pixels = np.clip(arr / scale, 0.0, 1.0)[..., None]
        bits = 16 if im.mode.startswith("I") else 8
        mode = "I;16" if bits == 16 else "L"
        return Image(pixels.astype(np.float32), mode, bits, None, source, path)
    arr = np.asarray(im)
    if im.mode == "L":
        return Image((arr / 255.0).astype(np.float32)[..., None], "L", 8, None, source, path)
    if im.mode == "LA":
        return Image((arr[..., :1] / 255.0).astype(np.float32), "LA", 8, arr[..., 1].copy(), source, path)
    if im.mode == "RGB":
        return Image((arr / 255.0).astype(np.float32), "RGB", 8, None, source, path)
    if im.mode == "RGBA":
        return Image((arr[..., :3] / 255.0).astype(np.float32), "RGBA", 8, arr[..., 3].copy(), source, path)
    raise ImageError(f"unsupported image mode {im.mode!r}" + (f" in {path}" if path else ""))


def from_array(array: np.ndarray) -> Image:
    """An Image from a numpy array: (H, W), (H, W, 1|3|4); uint8, uint16 or float in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    bits = 16 if a.dtype == np.uint16 else 8
    if a.dtype == np.uint8:
        f = a / 255.0
    elif a.dtype == np.uint16:
        f = a / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError("the image array holds NaN or infinite values")
        f = a.astype(np.float64)
        if f.min() < 0 or f.max() > 1:
            raise ImageError("a float image array must lie in [0, 1]")
    else:
        raise ImageError(f"unsupported image array dtype {a.dtype}")
    alpha = None
    if a.shape[2] == 4:
        alpha = a[..., 3].copy()
        f = f[..., :3]
    grey = f.shape[2] == 1
    mode = ("I;16" if bits == 16 else "L") if grey else "RGB"
    if alpha is not None:
        mode = "RGBA"
    return Image(f.astype(np.float32), mode, bits, alpha, mode, None)


def to_pil(image: Image) -> PILImage.Image:
    """The Pillow image to write: the input's mode, alpha put back untouched."""
    p = np.clip(image.pixels, 0.0, 1.0)
    if image.mode == "I;16":
        return PILImage.fromarray(np.round(p[..., 0] * 65535).astype(np.uint16))
    u8 = np.round(p * 255).astype(np.uint8)
    if image.channels == 1:
        if image.alpha is not None:
            return PILImage.fromarray(np.dstack([u8[..., 0], _alpha8(image.alpha)]))
        return PILImage.fromarray(u8[..., 0])
    if image.alpha is not None:
        return PILImage.fromarray(np.dstack([u8, _alpha8(image.alpha)]))
    return PILImage.fromarray(u8)


def _alpha8(alpha: np.ndarray) -> np.ndarray:
    return alpha if alpha.dtype == np.uint8 else np.round(alpha / 257.0).astype(np.uint8)


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {path.name}: use one of {', '.join(FORMATS)}")
    return fmt


def save_image(path: str | Path, image: Image, *, quality: int = 95) -> None:
    """Write atomically; the format follows the suffix (JPEG drops alpha)."""
    path = Path(path)
    fmt = output_format(path)
    if not path.parent.is_dir():
        raise ImageError(f"cannot write {path}: directory {path.parent} does not exist")
    im = to_pil(image)
    if fmt == "JPEG" and im.mode not in ("L", "RGB"):
        im = im.convert("RGB" if image.channels == 3 else "L")
    options = {"quality": quality} if fmt == "JPEG" else {}
    try:
        with atomic_write(path) as fh:
            im.save(fh, format=fmt, **options)
    except OSError as exc:
        raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None
