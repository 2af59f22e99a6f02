"""FLOPs of one optimisation step, counted from the network's layers."""

from __future__ import annotations

from dip_core.model.config import Downsample, SkipConfig
from dip_core.model.params import conv_specs


def conv_output_sizes(cfg: SkipConfig, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Output size of every convolution, by name."""
    sizes: dict[str, tuple[int, int]] = {}
    h, w = height, width
    for i in range(cfg.depth):
        hd, wd = -(-h // 2), -(-w // 2)
        p = f"scales.{i}"
        sizes[f"{p}.skip.conv"] = (h, w)
        sizes[f"{p}.down1.conv"] = (hd, wd) if cfg.downsample is Downsample.STRIDE else (h, w)
        sizes[f"{p}.down2.conv"] = (hd, wd)
        sizes[f"{p}.up1.conv"] = (h, w)
        sizes[f"{p}.up2.conv"] = (h, w)
        h, w = hd, wd
    sizes["head"] = (height, width)
    return sizes


def forward_flops(cfg: SkipConfig, height: int, width: int) -> int:
    """Multiply-adds x 2 of every convolution (the elementwise layers add < 2%)."""
    sizes = conv_output_sizes(cfg, height, width)
    total = 0
    for c in conv_specs(cfg):
        h, w = sizes[c.name]
        total += 2 * c.c_in * c.c_out * c.kernel * c.kernel * h * w
    return total


def step_flops(cfg: SkipConfig, height: int, width: int) -> int:
    """Forward, plus the input- and weight-gradient of every convolution: 3x the forward."""
    return 3 * forward_flops(cfg, height, width)
