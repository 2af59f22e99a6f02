"""The Deep Random Projector in PyTorch (dip_core/model/method.py): the frozen network fed a trained seed, and its
loss."""

from __future__ import annotations

import torch
from torch import nn

from dip_core.model.method import Method, trains
from dip_torch.skip import SkipNet


class Projector(nn.Module):
    """DRP's model: the skip network with its convolutions frozen at their random values, and the seed z as a
    parameter. It is called with an offset to z (the session's input noise, or zeros), so that a session runs it
    where it runs a DIP network on z; its trainable parameters are z and the BatchNorms' scales and shifts."""

    def __init__(self, net: SkipNet, z: torch.Tensor) -> None:
        super().__init__()
        self.net = freeze_convolutions(net)
        # Contiguous: Adam's state read back from a checkpoint is, and the fused step pairs elements by memory, so a
        # seed with the strides of a permuted image would resume into another trajectory.
        self.z = nn.Parameter(z.detach().clone(memory_format=torch.contiguous_format))

    def forward(self, offset: torch.Tensor) -> torch.Tensor:
        return self.net(self.z + offset)


def freeze_convolutions(net: SkipNet) -> SkipNet:
    """Freeze every parameter of `net` but the BatchNorms' (in place: no gradient, so Adam never moves them)."""
    for name, p in net.named_parameters():
        p.requires_grad_(trains(Method.DRP, name))
    return net


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean anisotropic total variation of x (N, C, H, W): dip_core.problem.fidelity.total_variation."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().sum()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().sum()
    return (dh + dw) / x.numel()


def objective(data: torch.Tensor, out: torch.Tensor, tv_weight: float) -> torch.Tensor:
    """DRP's loss from the data term's value and the output x: sqrt(data term) + tv_weight x TV(x)."""
    return torch.sqrt(data) + tv_weight * total_variation(out)
