"""Building blocks of the skip network in MLX (NHWC)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from dip_core.config import BN_EPS, LEAKY_SLOPE, Act, Downsample, Pad, Upsample


def activation(x: mx.array, act: Act) -> mx.array:
    if act is Act.LEAKY_RELU:
        return mx.maximum(x, LEAKY_SLOPE * x)
    if act is Act.SWISH:
        return x * mx.sigmoid(x)
    if act is Act.ELU:
        return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))
    return x


def pad(x: mx.array, amount: int, mode: Pad) -> mx.array:
    if amount == 0:
        return x
    widths = [(0, 0), (amount, amount), (amount, amount), (0, 0)]
    return mx.pad(x, widths, mode="reflect" if mode is Pad.REFLECTION else "constant")


def downsample(x: mx.array, mode: Downsample) -> mx.array:
    """2x2 pooling that rounds odd sides up (the odd edge row/column is repeated)."""
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        x = mx.pad(x, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)], mode="edge")
        h, w = h + h % 2, w + w % 2
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return blocks.mean(axis=(2, 4)) if mode is Downsample.AVG else blocks.max(axis=(2, 4))


_UPSAMPLERS = {
    Upsample.BILINEAR: nn.Upsample(scale_factor=2.0, mode="linear", align_corners=False),
    Upsample.NEAREST: nn.Upsample(scale_factor=2.0, mode="nearest"),
}


def upsample(x: mx.array, mode: Upsample) -> mx.array:
    return _UPSAMPLERS[mode](x)


class BatchNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        mean = x.mean(axis=(0, 1, 2), keepdims=True)
        var = mx.square(x - mean).mean(axis=(0, 1, 2), keepdims=True)
        return (x - mean) * mx.rsqrt(var + BN_EPS) * self.weight + self.bias


class Conv(nn.Module):
    """Padding then convolution; stride 2 or a pooling when it halves the size.

    Weights are (out, kh, kw, in), MLX's layout; the backend converts to and
    from the canonical (out, in, kh, kw).
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        # Filled from canonical numpy weights by the backend; never used uninitialised.
        self.weight = mx.zeros((c_out, kernel, kernel, c_in))
        if bias:
            self.bias = mx.zeros((c_out,))
        self.stride = 2 if halve is Downsample.STRIDE else 1
        self.amount = (kernel - 1) // 2
        self.pad_mode = pad
        self.pool = halve if halve in (Downsample.AVG, Downsample.MAX) else None

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.conv2d(pad(x, self.amount, self.pad_mode), self.weight, stride=self.stride)
        if "bias" in self:
            y = y + self.bias
        return downsample(y, self.pool) if self.pool is not None else y


class ConvBlock(nn.Module):
    """Conv, BatchNorm, activation: the unit every scale is made of."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, act: Act, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        self.conv = Conv(c_in, c_out, kernel, bias=bias, pad=pad, halve=halve)
        self.bn = BatchNorm(c_out)
        self.act = act

    def __call__(self, x: mx.array) -> mx.array:
        return activation(self.bn(self.conv(x)), self.act)
