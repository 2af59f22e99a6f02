"""Shared fixtures: tests run for every backend whose framework is installed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dip_core.backend import available_backends, get_backend
from dip_core.system.threads import THREADS_VAR, core_count

# A backend's CPU thread count follows the machine's load (dip_core/system/threads.py), and another count changes the
# last bits of a result: the tests compare runs bit for bit, so they pin it (tests of the choice inject theirs).
os.environ.setdefault(THREADS_VAR, str(core_count()))

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
