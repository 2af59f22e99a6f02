"""The data-fidelity term in MLX (dip_core.problem.fidelity has the numpy reference and the levels)."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from dip_core.problem.fidelity import POISSON_FLOOR, Fidelity, FidelityKind


def loss_function(fidelity: Fidelity) -> Callable[[mx.array, mx.array], mx.array]:
    """The loss of A(x) against y, as a scalar array (float32)."""
    if fidelity.kind is FidelityKind.MSE:
        return lambda a, y: mx.mean(mx.square(a - y))
    peak = fidelity.peak
    tiny = 1e-30  # keeps the log of a count of 0 finite (it is multiplied by that 0)

    def deviance(a: mx.array, y: mx.array) -> mx.array:
        mu, k = peak * mx.maximum(a, POISSON_FLOOR), peak * y
        return mx.mean(2 * (k * (mx.log(mx.maximum(k, tiny)) - mx.log(mu)) - (k - mu))) / peak

    return deviance
