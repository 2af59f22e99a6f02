"""The paper's skip network in MLX."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from dip_core.model.config import Act, Pad, SkipConfig
from dip_core.model.params import merge_channels
from dip_mlx import cpu_kernels as ck
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
    """The network; `kernels` (chosen once, when it is built) runs it on the compiled CPU kernels."""

    def __init__(self, cfg: SkipConfig, kernels: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.kernels = kernels
        d_ins = (cfg.in_channels, *cfg.channels_down[:-1])
        self.scales = [Scale(cfg, i, d_ins[i]) for i in range(cfg.depth)]
        self.head = Conv(cfg.channels_up[0], cfg.out_channels, 1, bias=cfg.need_bias, pad=cfg.pad)
        if cfg.input_bn:
            self.input_bn = BatchNorm(cfg.in_channels)

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
        if "input_bn" in self:
            x = _tap(taps, "input_bn", self.input_bn(x))
        if self.kernels and x.shape[0] == 1 and x.dtype == mx.float32 and self._kernels_fit(x.shape[1], x.shape[2]):
            y = self._head_kernels(self._scale_kernels(0, self._input_kernels(x), taps), taps)
        else:
            y = _tap(taps, "head", self.head(self._scale(0, x, taps)))
        return mx.sigmoid(y) if self.cfg.need_sigmoid else y

    # The same network on the compiled CPU kernels (dip_mlx/cpu_kernels.py): the same
    # parameters, BatchNorm after every convolution but the head, so those convolutions'
    # biases cancel and are not applied (their gradient is zero, as it is in exact arithmetic).

    def _border(self, i: int) -> int:
        """Padding that scale i's input needs: the most its skip and first down convolutions read."""
        cfg = self.cfg
        skip = (cfg.filter_skip_size - 1) // 2 if cfg.channels_skip[i] else 0
        return max(skip, (cfg.filter_size_down - 1) // 2)

    def _kernels_fit(self, h: int, w: int) -> bool:
        """Reflection padding needs every padded side longer than its padding."""
        cfg = self.cfg
        if cfg.pad is not Pad.REFLECTION:
            return True
        q_down, q_up = (cfg.filter_size_down - 1) // 2, (cfg.filter_size_up - 1) // 2
        for i in range(cfg.depth):
            h2, w2 = (h + 2 * q_down - cfg.filter_size_down) // 2 + 1, (w + 2 * q_down - cfg.filter_size_down) // 2 + 1
            deeper = self._border(i + 1) if i + 1 < cfg.depth else 0
            if min(h, w) <= max(self._border(i), q_up) or min(h2, w2) <= max(q_down, deeper):
                return False
            h, w = h2, w2
        return True

    def _input_kernels(self, x: mx.array) -> ck.ActBuf:
        return ck.from_image(x, self._border(0), self.cfg.pad)

    def _block_kernels(self, block: ConvBlock, x: ck.ActBuf, stride: int, pad: int) -> ck.ActBuf:
        y = ck.conv(x, block.conv.weight, stride)
        return ck.bn_act([y], block.bn.weight, block.bn.bias, self.cfg.act, pad, self.cfg.pad)

    def _scale_kernels(self, i: int, x: ck.ActBuf, taps: dict | None) -> ck.ActBuf:
        cfg, s = self.cfg, self.scales[i]
        deepest = i + 1 == len(self.scales)
        q_down, q_up = (cfg.filter_size_down - 1) // 2, (cfg.filter_size_up - 1) // 2
        deeper = _tap_buf(taps, f"scales.{i}.down1", self._block_kernels(s.down1, x, 2, q_down))
        deeper = self._block_kernels(s.down2, deeper, 1, 0 if deepest else self._border(i + 1))
        deeper = _tap_buf(taps, f"scales.{i}.down2", deeper)
        if not deepest:
            deeper = self._scale_kernels(i + 1, deeper, taps)
        parts = [ck.upsample(deeper, x.h, x.w, s.upsample)]
        if "skip" in s:
            parts.insert(0, _tap_buf(taps, f"scales.{i}.skip", self._block_kernels(s.skip, x, 1, 0)))
        merged = ck.bn_act(parts, s.merge_bn.weight, s.merge_bn.bias, Act.NONE, q_up, cfg.pad)
        merged = _tap_buf(taps, f"scales.{i}.merge_bn", merged)
        y = _tap_buf(taps, f"scales.{i}.up1", self._block_kernels(s.up1, merged, 1, 0))
        return _tap_buf(taps, f"scales.{i}.up2", self._block_kernels(s.up2, y, 1, 0)) if "up2" in s else y

    def _head_kernels(self, x: ck.ActBuf, taps: dict | None) -> mx.array:
        y = ck.conv(x, self.head.weight, 1).image()
        if "bias" in self.head:
            y = y + self.head.bias
        return _tap(taps, "head", y)


def _tap_buf(taps: dict | None, name: str, value: ck.ActBuf) -> ck.ActBuf:
    if taps is not None:
        taps[name] = value.image()
    return value


def _tap(taps: dict | None, name: str, value: mx.array) -> mx.array:
    if taps is not None:
        taps[name] = value
    return value
