"""Shared fixtures: tests run for every backend whose framework is installed."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.backend import available_backends, get_backend

BACKENDS = available_backends()
if "mlx" in BACKENDS:
    import dip_mlx  # noqa: F401  (loads the fast BLAS before any test imports mlx.core)
BOTH = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both mlx and torch installed")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param, "cpu")


@pytest.fixture(scope="session")
def mlx_backend():
    if "mlx" not in BACKENDS:
        pytest.skip("mlx is not installed")
    return get_backend("mlx", "cpu")


@pytest.fixture(scope="session")
def torch_backend():
    if "torch" not in BACKENDS:
        pytest.skip("torch is not installed")
    return get_backend("torch", "cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
