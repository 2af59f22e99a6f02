"""The data-fidelity term in PyTorch (dip_core.problem.fidelity has the numpy reference and the levels)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dip_core.problem.fidelity import POISSON_FLOOR, Fidelity, FidelityKind


def loss_function(fidelity: Fidelity) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of A(x) against y, as a scalar tensor (float32)."""
    if fidelity.kind is FidelityKind.MSE:
        return lambda a, y: torch.mean((a - y) ** 2)
    peak = fidelity.peak
    tiny = 1e-30  # keeps the log of a count of 0 finite (it is multiplied by that 0)

    def deviance(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, k = peak * torch.clamp(a, min=POISSON_FLOOR), peak * y
        return torch.mean(2 * (k * (torch.log(torch.clamp(k, min=tiny)) - torch.log(mu)) - (k - mu))) / peak

    return deviance
