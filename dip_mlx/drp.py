"""The Deep Random Projector in MLX (dip_core/model/method.py): the frozen network fed a trained seed, and its loss."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from dip_mlx.layers import BatchNorm
from dip_mlx.skip import SkipNet


class Projector(nn.Module):
    """DRP's model: the skip network with its convolutions frozen at their random values, and the seed z as a
    parameter. It is called with an offset to z (the session's input noise, or zeros), so that a session runs it
    where it runs a DIP network on z; its trainable parameters are z and the BatchNorms' scales and shifts."""

    def __init__(self, net: SkipNet, z: mx.array) -> None:
        super().__init__()
        self.net = freeze_convolutions(net)
        self.z = z

    def __call__(self, offset: mx.array) -> mx.array:
        return self.net(self.z + offset)


def freeze_convolutions(net: SkipNet) -> SkipNet:
    """Freeze every parameter of `net` but the BatchNorms' (in place; MLX then neither trains nor differentiates
    them)."""
    net.freeze()
    for _, module in net.named_modules():
        if isinstance(module, BatchNorm):
            module.unfreeze()
    return net


def total_variation(x: mx.array) -> mx.array:
    """Mean anisotropic total variation of x (N, H, W, C): dip_core.problem.fidelity.total_variation."""
    dh = mx.abs(x[:, 1:, :, :] - x[:, :-1, :, :]).sum()
    dw = mx.abs(x[:, :, 1:, :] - x[:, :, :-1, :]).sum()
    return (dh + dw) / x.size


def objective(data: mx.array, out: mx.array, tv_weight: float) -> mx.array:
    """DRP's loss from the data term's value and the output x: sqrt(data term) + tv_weight x TV(x)."""
    return mx.sqrt(data) + tv_weight * total_variation(out)
