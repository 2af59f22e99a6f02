"""From a task and the user's files to the problem the loop solves: y, A and the output size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dip_core.errors import UserError
from dip_core.problem.degrade import (
    DegradationError,
    Operator,
    OpKind,
    check_factor,
    drop_mask,
    resize,
)
from dip_core.problem.image import Image
from dip_core.problem.registry import Task, spec_of

# A mask pixel is "known" from this grey level up. Within MASK_TOLERANCE of black or white a pixel is
# taken as pure; anything between is grey: rounded by default (anti-aliased edges, JPEG ringing), refused
# by the strict check.
MASK_THRESHOLD = 0.5
MASK_TOLERANCE = 0.05
# A mask with more than this share of grey pixels is no black-and-white mask with soft edges but something else
# (a photo given as the mask): refused rather than rounded into a meaningless pattern.
MASK_MOSTLY_GREY = 0.5


class ProblemError(UserError):
    """Inputs that do not make a problem (mask of another size, missing option...)."""


@dataclass
class Problem:
    task: Task
    image: Image  # the user's input: its mode and alpha decide how the result is written
    observed: np.ndarray  # y, the corrupted image the loss compares A(out) with
    op: Operator
    out_height: int
    out_width: int
    corrupted: np.ndarray  # the input as seen at the output size (PSNR of the input, plots)
    mask: np.ndarray | None = None  # (H, W, 1), 1 = known
    mask_rounded: int = 0  # grey pixels of the user's mask rounded to black or white
    simulated: bool = False  # the corruption was applied here (--drop): the input itself is the ground truth


def mask_from_image(mask: Image, height: int, width: int, strict: bool = False) -> tuple[np.ndarray, int]:
    """A binary (H, W, 1) mask from a black-and-white image (white = known), rounded at 50 % grey, and the number
    of grey pixels that were rounded. `strict` refuses grey pixels instead; a mask mostly grey is refused always."""
    if (mask.height, mask.width) != (height, width):
        raise ProblemError(f"the mask is {mask.width}x{mask.height} but the image is {width}x{height}; they must match")
    grey = mask.pixels.mean(axis=2)
    between = int(((grey > MASK_TOLERANCE) & (grey < 1 - MASK_TOLERANCE)).sum())
    if between and strict:
        raise ProblemError(
            f"the mask must be black and white only: {between} of its {grey.size} pixels "
            f"({percent(between, grey.size)}) are grey "
            "(leave out --strict-mask to round them at 50 %)"
        )
    if between > MASK_MOSTLY_GREY * grey.size:
        raise ProblemError(
            f"the mask is mostly grey ({percent(between, grey.size)} of its pixels are neither black nor white): "
            "is it a photo? A mask is white where the image is known and black where it is to be filled in"
        )
    known = (grey >= MASK_THRESHOLD).astype(np.float32)[..., None]
    if not known.any():
        raise ProblemError("the mask has no known (white) pixels: there is nothing to fit")
    return known, between


def percent(part: int, whole: int) -> str:
    """`12.5%`, `0.03%`: never `0.0%` for a part that is not zero."""
    share = 100.0 * part / whole
    if share >= 1 or share == 0:
        return f"{share:.1f}%"
    return f"{share:.1g}%" if share >= 0.01 else "<0.01%"


def parse_color(spec: str) -> tuple[float, float, float]:
    """`white`, `black`, `red`, ..., `#rrggbb` or `R,G,B` (0-255) as floats in [0, 1]."""
    from PIL import ImageColor

    text = spec.strip()
    try:
        if "," in text:
            rgb = tuple(int(v) for v in text.split(","))
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        else:
            rgb = ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ProblemError(f"unknown colour {spec!r}: use a name, #rrggbb or R,G,B") from None
    r, g, b = (v / 255.0 for v in rgb)
    return r, g, b


def mask_from_color(image: Image, color: str, tolerance: float = 2 / 255) -> Image:
    """The mask of an overlay drawn in one pure colour: pixels of that colour are unknown (black)."""
    target = np.asarray(parse_color(color), np.float32)
    pixels = image.pixels if image.channels == 3 else np.repeat(image.pixels, 3, axis=2)
    overlay = np.all(np.abs(pixels - target) <= tolerance, axis=2)
    if not overlay.any():
        raise ProblemError(f"no pixel of the image has the colour {color}: there is no overlay to inpaint")
    known = (~overlay).astype(np.float32)[..., None]
    return Image(known, "L")


def make_problem(
    task: Task | str,
    image: Image,
    *,
    mask: Image | None = None,
    factor: int | None = None,
    kernel: np.ndarray | None = None,
    drop: float | None = None,
    seed: int = 0,
    strict_mask: bool = False,
) -> Problem:
    """Describe the loss for `task` on `image` (the corrupted input, or the clean one with `drop`): the task's
    registered operator decides what it needs."""
    spec = spec_of(task)
    task, kind = spec.task, spec.operator
    x, h, w = image.pixels, image.height, image.width
    if kind is OpKind.IDENTITY:
        return Problem(task, image, x, Operator(OpKind.IDENTITY), h, w, x)
    if kind is OpKind.MASK:
        if mask is not None and drop is not None:
            raise ProblemError("give either --mask or --drop, not both")
        rounded = 0
        if mask is not None:
            m, rounded = mask_from_image(mask, h, w, strict_mask)
        elif drop is not None and "drop" in spec.options:
            try:
                m = drop_mask(h, w, drop, seed)
            except DegradationError as exc:
                raise ProblemError(str(exc)) from None
        else:
            need = "--mask (white = known)" + (" or --drop FRACTION" if "drop" in spec.options else "")
            raise ProblemError(f"{task.value} needs {need}")
        y = x * m
        op = Operator(OpKind.MASK, mask=m)
        return Problem(task, image, y, op, h, w, y, mask=m, mask_rounded=rounded, simulated=mask is None)
    if kind is OpKind.DOWNSAMPLE:
        if factor is None:
            raise ProblemError(f"{task.value} needs --factor 2, 4 or 8")
        check_factor(factor)
        hr_h, hr_w = h * factor, w * factor
        return Problem(task, image, x, Operator(OpKind.DOWNSAMPLE, factor=factor), hr_h, hr_w, resize(x, hr_h, hr_w))
    if kernel is None:
        raise ProblemError(f"{task.value} needs --kernel (gaussian:SIGMA, box:SIZE, motion:LENGTH,ANGLE or an image)")
    if kernel.shape[0] > h or kernel.shape[1] > w:
        raise ProblemError(f"the blur kernel ({kernel.shape[1]}x{kernel.shape[0]}) is larger than the image")
    return Problem(task, image, x, Operator(OpKind.BLUR, kernel=kernel), h, w, x)
