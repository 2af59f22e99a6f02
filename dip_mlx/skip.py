"""The paper's skip network in MLX."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from dip_core.config import SkipConfig
from dip_core.params import merge_channels
from dip_mlx.layers import BatchNorm, Conv, ConvBlock, upsample


class Scale(nn.Module):
    """One scale: optional skip branch, two encoder convs, the deeper scales, the decoder."""

    def __init__(self, cfg: SkipConfig, i: int, d_in: int) -> None:
        super().__init__()
        common = {"bias": cfg.need_bias, "pad": cfg.pad, "act": cfg.act}
        n_down, n_up, n_skip = cfg.channels_down[i], cfg.channels_up[i], cfg.channels_skip[i]
        if n_skip:
            self.skip = ConvBlock(d_in, n_skip, cfg.filter_skip_size, **common)
        self.down1 = ConvBlock(d_in, n_down, cfg.filter_size_down, halve=cfg.downsample, **common)
        self.down2 = ConvBlock(n_down, n_down, cfg.filter_size_down, **common)
        self.merge_bn = BatchNorm(merge_channels(cfg, i))
        self.up1 = ConvBlock(merge_channels(cfg, i), n_up, cfg.filter_size_up, **common)
        if cfg.need1x1_up:
            self.up2 = ConvBlock(n_up, n_up, 1, **common)
        self.upsample = cfg.upsample


class SkipNet(nn.Module):
    def __init__(self, cfg: SkipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_ins = (cfg.in_channels, *cfg.channels_down[:-1])
        self.scales = [Scale(cfg, i, d_ins[i]) for i in range(cfg.depth)]
        self.head = Conv(cfg.channels_up[0], cfg.out_channels, 1, bias=cfg.need_bias, pad=cfg.pad)

    def _scale(self, i: int, x: mx.array, taps: dict | None) -> mx.array:
        s = self.scales[i]
        deeper = _tap(taps, f"scales.{i}.down1", s.down1(x))
        deeper = _tap(taps, f"scales.{i}.down2", s.down2(deeper))
        if i + 1 < len(self.scales):
            deeper = self._scale(i + 1, deeper, taps)
        # Upsampling an odd side gives one pixel too many: crop to this scale's size.
        deeper = upsample(deeper, s.upsample)[:, : x.shape[1], : x.shape[2], :]
        if "skip" in s:
            deeper = mx.concatenate([_tap(taps, f"scales.{i}.skip", s.skip(x)), deeper], axis=-1)
        y = _tap(taps, f"scales.{i}.up1", s.up1(_tap(taps, f"scales.{i}.merge_bn", s.merge_bn(deeper))))
        return _tap(taps, f"scales.{i}.up2", s.up2(y)) if "up2" in s else y

    def __call__(self, x: mx.array, taps: dict | None = None) -> mx.array:
        """Output for x (N, H, W, C); with `taps`, also records every block's output by name."""
        y = _tap(taps, "head", self.head(self._scale(0, x, taps)))
        return mx.sigmoid(y) if self.cfg.need_sigmoid else y


def _tap(taps: dict | None, name: str, value: mx.array) -> mx.array:
    if taps is not None:
        taps[name] = value
    return value
