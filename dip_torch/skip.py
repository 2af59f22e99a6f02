"""The paper's skip network in PyTorch."""

from __future__ import annotations

import torch
from torch import nn

from dip_core.model.config import SkipConfig
from dip_core.model.params import merge_channels
from dip_torch.layers import BatchNorm, Conv, ConvBlock, upsample


class Scale(nn.Module):
    """One scale: optional skip branch, two encoder convs, the deeper scales, the decoder."""

    def __init__(self, cfg: SkipConfig, i: int, d_in: int) -> None:
        super().__init__()
        common = {"bias": cfg.need_bias, "pad": cfg.pad, "act": cfg.act}
        n_down, n_up, n_skip = cfg.channels_down[i], cfg.channels_up[i], cfg.channels_skip[i]
        self.skip = ConvBlock(d_in, n_skip, cfg.filter_skip_size, **common) if n_skip else None
        self.down1 = ConvBlock(d_in, n_down, cfg.filter_size_down, halve=cfg.downsample, **common)
        self.down2 = ConvBlock(n_down, n_down, cfg.filter_size_down, **common)
        self.merge_bn = BatchNorm(merge_channels(cfg, i))
        self.up1 = ConvBlock(merge_channels(cfg, i), n_up, cfg.filter_size_up, **common)
        self.up2 = ConvBlock(n_up, n_up, 1, **common) if cfg.need1x1_up else None
        self.upsample = cfg.upsample


class SkipNet(nn.Module):
    def __init__(self, cfg: SkipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_ins = (cfg.in_channels, *cfg.channels_down[:-1])
        self.scales = nn.ModuleList(Scale(cfg, i, d_ins[i]) for i in range(cfg.depth))
        self.head = Conv(cfg.channels_up[0], cfg.out_channels, 1, bias=cfg.need_bias, pad=cfg.pad)
        self.input_bn = BatchNorm(cfg.in_channels) if cfg.input_bn else None

    def _scale(self, i: int, x: torch.Tensor, taps: dict | None) -> torch.Tensor:
        s = self.scales[i]
        deeper = _tap(taps, f"scales.{i}.down1", s.down1(x))
        deeper = _tap(taps, f"scales.{i}.down2", s.down2(deeper))
        if i + 1 < len(self.scales):
            deeper = self._scale(i + 1, deeper, taps)
        # Upsampling an odd side gives one pixel too many: crop to this scale's size.
        deeper = upsample(deeper, s.upsample)[..., : x.shape[-2], : x.shape[-1]]
        if s.skip is not None:
            deeper = torch.cat([_tap(taps, f"scales.{i}.skip", s.skip(x)), deeper], dim=1)
        y = _tap(taps, f"scales.{i}.up1", s.up1(_tap(taps, f"scales.{i}.merge_bn", s.merge_bn(deeper))))
        return _tap(taps, f"scales.{i}.up2", s.up2(y)) if s.up2 is not None else y

    def forward(self, x: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """Output for x (N, C, H, W); with `taps`, also records every block's output by name."""
        if self.input_bn is not None:
            x = _tap(taps, "input_bn", self.input_bn(x))
        y = _tap(taps, "head", self.head(self._scale(0, x, taps)))
        return torch.sigmoid(y) if self.cfg.need_sigmoid else y


def _tap(taps: dict | None, name: str, value: torch.Tensor) -> torch.Tensor:
    if taps is not None:
        taps[name] = value
    return value
