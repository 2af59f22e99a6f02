"""Building blocks of the skip network in PyTorch (NCHW)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dip_core.model.config import BN_EPS, LEAKY_SLOPE, Act, Downsample, Pad, Upsample


def activation(x: torch.Tensor, act: Act) -> torch.Tensor:
    if act is Act.LEAKY_RELU:
        return F.leaky_relu(x, LEAKY_SLOPE)
    if act is Act.SWISH:
        return x * torch.sigmoid(x)
    if act is Act.ELU:
        return F.elu(x)
    return x


def pad(x: torch.Tensor, amount: int, mode: Pad) -> torch.Tensor:
    if amount == 0:
        return x
    return F.pad(x, (amount, amount, amount, amount), mode="reflect" if mode is Pad.REFLECTION else "constant")


def downsample(x: torch.Tensor, mode: Downsample) -> torch.Tensor:
    """2x2 pooling that rounds odd sides up (the odd edge row/column is repeated)."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2) if mode is Downsample.AVG else F.max_pool2d(x, 2)


def upsample(x: torch.Tensor, mode: Upsample) -> torch.Tensor:
    if mode is Upsample.BILINEAR:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return F.interpolate(x, scale_factor=2, mode="nearest")


class BatchNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=BN_EPS)


class Conv(nn.Module):
    """Padding then convolution; stride 2 or a pooling when it halves the size."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        # Filled from canonical numpy weights by the backend; never used uninitialised.
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.stride = 2 if halve is Downsample.STRIDE else 1
        self.amount = (kernel - 1) // 2
        self.pad_mode = pad
        self.pool = halve if halve in (Downsample.AVG, Downsample.MAX) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(pad(x, self.amount, self.pad_mode), self.weight, self.bias, stride=self.stride)
        return downsample(x, self.pool) if self.pool is not None else x


class ConvBlock(nn.Module):
    """Conv, BatchNorm, activation: the unit every scale is made of."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, act: Act, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        self.conv = Conv(c_in, c_out, kernel, bias=bias, pad=pad, halve=halve)
        self.bn = BatchNorm(c_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.bn(self.conv(x)), self.act)
