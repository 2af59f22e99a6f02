"""Picking a backend: lazy imports, clear messages when a framework or device is missing."""

from __future__ import annotations

import importlib.util

import pytest

from dip_core import backend as backend_module
from dip_core.backend import Backend, BackendUnavailable, DeviceUnavailable, get_backend


def test_backends_implement_the_protocol(backend):
    assert isinstance(backend, Backend)
    assert backend.device == "cpu"


def test_unknown_backend_and_device():
    with pytest.raises(BackendUnavailable, match="unknown backend 'jax'"):
        get_backend("jax")
    with pytest.raises(DeviceUnavailable, match="unknown device 'tpu'"):
        get_backend("torch", "tpu")


@pytest.mark.parametrize("name, framework", [("mlx", "mlx"), ("torch", "torch")])
def test_missing_framework_names_the_install_command(monkeypatch, name, framework):
    real = importlib.util.find_spec

    def fake(module, *args):
        return None if module == framework else real(module, *args)

    monkeypatch.setattr(backend_module.importlib.util, "find_spec", fake)
    with pytest.raises(BackendUnavailable, match="pip install"):
        get_backend(name)
    assert name not in backend_module.available_backends()


def test_gpu_request_fails_cleanly_without_a_gpu(backend):
    import torch

    if backend.name == "torch" and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pytest.skip("this machine has a GPU")
    if backend.name == "mlx":
        import mlx.core as mx

        if mx.is_available(mx.gpu):
            pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceUnavailable, match="no GPU"):
        get_backend(backend.name, "gpu")


def test_framework_is_imported_lazily():
    import subprocess
    import sys

    code = (
        "import dip_core.backend, dip_core.model.config, dip_core.model.weights, dip_core.run.crosscheck, sys; "
        "print('mlx' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
