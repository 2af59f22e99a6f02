"""Both backends' monitors offer one API (dip_core.backend.Monitors): the same methods with the same parameters,
the same state names in a checkpoint, the same scalars for the same steps. MLX adds only the two hooks that let its
session run the monitors inside its own compiled step."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from dip_core.backend import MONITOR_API, STAT_FIELDS, Monitoring
from tests.conftest import BOTH

MLX_FUSION_HOOKS = {"inputs", "take"}  # dip_mlx/monitors.py: feed and take back the update inside the step's graph
H, W, C = 5, 7, 3


def monitor_classes() -> dict[str, type]:
    from dip_mlx.monitors import MLXMonitors
    from dip_torch.monitors import TorchMonitors

    return {"mlx": MLXMonitors, "torch": TorchMonitors}


def methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}


@BOTH
def test_the_same_methods_and_parameters():
    mlx_cls, torch_cls = monitor_classes().values()
    api = set(MONITOR_API) - {"monitoring", "ema"}  # `ema`: a property on MLX, an attribute on torch
    assert methods(mlx_cls) - MLX_FUSION_HOOKS - {"ema"} == api
    assert methods(torch_cls) == api
    for name in api:
        ours = list(inspect.signature(getattr(mlx_cls, name)).parameters)
        theirs = list(inspect.signature(getattr(torch_cls, name)).parameters)
        assert ours == theirs, name


def make(backend: str, monitoring: Monitoring):
    cls = monitor_classes()[backend]
    if backend == "mlx":
        return cls(monitoring, (1, H, W, C))
    import torch

    return cls(monitoring, (1, C, H, W), torch.device("cpu"))


def as_backend(backend: str, x: np.ndarray):
    if backend == "mlx":
        import mlx.core as mx

        return mx.array(x[None])
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None])


def scalar(backend: str, x: float):
    if backend == "mlx":
        import mlx.core as mx

        return mx.array(x)
    import torch

    return torch.tensor(x)


@BOTH
@pytest.mark.parametrize("window", [0, 3])
def test_the_same_scalars_and_state_names(window):
    rng = np.random.default_rng(0)
    reference = rng.random((H, W, C)).astype(np.float32)
    monitoring = Monitoring(exp_weight=0.9, window=window, reference=reference)
    scalars, names = {}, {}
    for backend in ("mlx", "torch"):
        monitors, rng = make(backend, monitoring), np.random.default_rng(1)
        rows = []
        for i in range(5):
            out = rng.random((H, W, C)).astype(np.float32)
            loss = scalar(backend, float(i))
            rows.append(np.array(monitors.update(loss, as_backend(backend, out), None, refresh=i == 3)))
        scalars[backend] = np.array(rows)
        names[backend] = set(monitors.to_arrays())
        assert monitors.monitoring is monitoring
    assert names["mlx"] == names["torch"]
    assert scalars["mlx"].shape == (5, len(STAT_FIELDS))
    np.testing.assert_allclose(scalars["mlx"], scalars["torch"], rtol=1e-5, atol=1e-6, equal_nan=True)
