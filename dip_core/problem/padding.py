"""Any image size: reflect-pad the problem to a size the network takes, crop the result back.

The skip network halves its input `depth` times. A side that is not a multiple
of 2**depth still passes (each upsampled branch is cropped to its scale), but
the last row and column then sit differently at each scale; a side below the
network's minimum cannot pass at all. Padding the observed image by
reflection to the next multiple of 2**depth (and at least the minimum) avoids
both; the loop then only ever sees the crop that matches the user's image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from dip_core.model.config import SkipConfig, min_size
from dip_core.problem.degrade import OpKind
from dip_core.problem.tasks import Problem


class PadMode(str, Enum):
    REFLECT = "reflect"  # pad to a multiple of 2**depth (and the minimum size) by reflection
    NONE = "none"  # only what the minimum size needs; the network crops odd sides inside


@dataclass(frozen=True)
class Crop:
    """Where the user's image lies in the padded output."""

    top: int
    left: int
    height: int
    width: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[self.top : self.top + self.height, self.left : self.left + self.width]


def padded_side(side: int, cfg: SkipConfig, mode: PadMode, factor: int = 1) -> int:
    """The output side the network will work at for an output side `side`.

    With super-resolution the padding is added to the low-resolution input, so
    the padded side is also a multiple of `factor`.
    """
    need = max(side, min_size(cfg))
    step = math.lcm(2**cfg.depth, factor) if mode is PadMode.REFLECT else factor
    return -(-need // step) * step


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    return np.pad(x, ((top, bottom), (left, right), (0, 0)), mode="reflect")


def pad_problem(problem: Problem, cfg: SkipConfig, mode: PadMode | str = PadMode.REFLECT) -> tuple[Problem, Crop]:
    """The problem at a size the network takes, and the crop that gives back the user's size."""
    mode = PadMode(mode)
    f = problem.op.factor if problem.op.kind is OpKind.DOWNSAMPLE else 1
    h, w = problem.out_height, problem.out_width
    ph, pw = padded_side(h, cfg, mode, f), padded_side(w, cfg, mode, f)
    crop = Crop(0, 0, h, w)
    if (ph, pw) == (h, w):
        return problem, crop
    # Padding is split evenly between the sides (in input pixels for super-resolution).
    dy, dx = (ph - h) // f, (pw - w) // f
    top, left = dy // 2, dx // 2
    sides = (top, dy - top, left, dx - left)
    op = problem.op
    if op.kind is OpKind.MASK and op.mask is not None:
        op = replace(op, mask=_pad(op.mask, *sides))
    padded = replace(problem, observed=_pad(problem.observed, *sides), op=op, out_height=ph, out_width=pw)
    return padded, Crop(top * f, left * f, h, w)
