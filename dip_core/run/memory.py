"""Estimating the memory a fit needs, before starting it, and what a device has free.

A backend says what its device has free twice: `memory_available()`, a figure that
refuses a fit beyond it (a GPU's own: CUDA's free memory, Metal's recommended working
set less what the framework holds), and `memory_advisory()`, psutil's `available`
where it only warns. On macOS psutil leaves out compressed and purgeable memory that
the system gives back on demand, and knows nothing of the GPU's working-set limit: as
the one figure it made an 8 GB Mac refuse 256x256 fits that run.
"""

from __future__ import annotations

import platform
from typing import Any

from dip_core.errors import UserError
from dip_core.model.config import SkipConfig
from dip_core.model.params import count_params, merge_channels

# Bytes kept per activation element over one training step: float32 values of the
# block's padded input, convolution, BatchNorm and activation outputs, their
# gradients on the way back, and the framework's temporaries. Measured on the CPU
# (peak RSS growth over three default-net steps at 256x256): torch 21, MLX 39.
BYTES_PER_ACTIVATION = 40
BYTES_PER_PARAM = 16  # value, gradient, Adam's two moments
FIXED_OVERHEAD = 512 * 2**20  # framework, compiled graph, buffers (measured: MLX ~0.6 GiB at 128x128)


class MemoryError_(UserError):
    """The fit would not fit in the memory available. The message gives the command line's choices; `page` says
    the same with the choices of `dip ui`'s page, which has no flags."""

    def __init__(self, message: str, page: str) -> None:
        super().__init__(message)
        self.page = page


def activation_elements(cfg: SkipConfig, height: int, width: int) -> int:
    """Elements of every block output for one forward pass at this size."""
    total = 0
    h, w = height, width
    for i in range(cfg.depth):
        hd, wd = -(-h // 2), -(-w // 2)
        total += h * w * (cfg.channels_skip[i] + merge_channels(cfg, i) + 2 * cfg.channels_up[i])
        total += hd * wd * 2 * cfg.channels_down[i]
        h, w = hd, wd
    return total


MONITOR_IMAGES = 8  # beside the window: its two sums and shift, the EMA, the kept candidates (monitors.py)


def estimate_bytes(cfg: SkipConfig, height: int, width: int, window: int = 0) -> int:
    """Bytes a fit needs on its device; `window`: outputs the variance monitor keeps there (float32 images)."""
    activations = BYTES_PER_ACTIVATION * activation_elements(cfg, height, width)
    monitors = 4 * (window + MONITOR_IMAGES) * height * width * cfg.out_channels if window else 0
    return activations + BYTES_PER_PARAM * count_params(cfg) + FIXED_OVERHEAD + monitors


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def host_free() -> tuple[int | None, int | None]:
    """What the host has free, as (refusing, advisory) bytes: psutil's `available` refuses a fit on Linux and
    only warns on macOS (unified memory, see above)."""
    free = available_bytes()
    return (None, free) if platform.system() == "Darwin" else (free, None)


def _tile_that_fits(cfg: SkipConfig, free: int, window: int) -> int:
    """The largest tile side (a multiple of 64) whose fit the estimate puts within `free`."""
    side = 64
    while side < 8192 and estimate_bytes(cfg, side + 64, side + 64, window) <= free:
        side += 64
    return side


def shortfall(cfg: SkipConfig, height: int, width: int, backend: Any, window: int = 0) -> tuple[int, int] | None:
    """(bytes needed, bytes free) when the estimate exceeds what the backend's device has free, else None."""
    need = estimate_bytes(cfg, height, width, window)
    free = backend.memory_available()
    return (need, free) if free is not None and need > free else None


def check_memory(
    cfg: SkipConfig, height: int, width: int, backend: Any, window: int = 0, image: tuple[int, int] | None = None
) -> list[str]:
    """Raise when the estimate for a fit at height x width (padded for the network) exceeds what the backend's
    device has free; `image`: the (width, height) the user knows, named in the message. Returns the warnings to
    print where only the host's advisory figure (psutil on macOS) is exceeded."""
    shown_w, shown_h = image or (width, height)
    short = shortfall(cfg, height, width, backend, window)
    if short is None:
        need, free = estimate_bytes(cfg, height, width, window), backend.memory_advisory()
        if free is None or need <= free:
            return []
        return [
            f"a {shown_w}x{shown_h} image needs about {need / 2**30:.1f} GiB and psutil counts {free / 2**30:.1f} "
            f"GiB available on this Mac ({backend.device}); it leaves out memory macOS frees on demand, so the run "
            "goes ahead (it may swap; --tile or --net small use less)"
        ]
    need, free = short
    what = (
        f"a {shown_w}x{shown_h} image needs about {need / 2**30:.1f} GiB to restore but {backend.device} has "
        f"{free / 2**30:.1f} GiB free"
    )
    raise MemoryError_(
        f"{what}; restore it in tiles (--tile {_tile_that_fits(cfg, free, window)}), use a smaller network "
        "(--net small) or downscale it (add --estimate to see how long each takes here)",
        f"{what}: choose a smaller Network (small or tiny), or upload a smaller image",
    )
