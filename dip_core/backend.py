"""The one interface both backends implement, and how to pick one."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dip_core.allocator import tune_allocator
from dip_core.config import SkipConfig
from dip_core.degrade import Operator
from dip_core.errors import UserError
from dip_core.weights import Weights


class BackendName(str, Enum):
    MLX = "mlx"
    TORCH = "torch"


class Device(str, Enum):
    AUTO = "auto"  # the accelerator when one is present (Metal, CUDA, MPS), else the CPU
    CPU = "cpu"
    GPU = "gpu"  # fail unless an accelerator is present


class BackendUnavailable(UserError):
    """The framework behind a backend is not installed."""


class DeviceUnavailable(UserError):
    """The requested device does not exist on this machine for this backend."""


@dataclass(frozen=True)
class SessionSpec:
    """Everything a backend needs to run the DIP loss: numpy arrays and settings only."""

    cfg: SkipConfig
    weights: Weights  # initial weights, canonical layout
    z: np.ndarray  # (H, W, in_channels) network input
    observed: np.ndarray  # y: (h, w, C) the corrupted image the loss compares A(out) with
    op: Operator  # the degradation A
    lr: float
    reg_noise_std: float
    seed: int  # seeds the backend's noise stream


@runtime_checkable
class Session(Protocol):
    """One network being fitted: Adam steps on MSE(A(net(z + noise)), y)."""

    def step(self) -> tuple[float, np.ndarray]:
        """One optimisation step: its loss and the (H, W, C) output it was computed from."""
        ...

    def output(self) -> np.ndarray:
        """net(z) with no input noise."""
        ...

    def snapshot(self) -> Any:
        """Parameters, optimizer state and noise stream, to come back to."""
        ...

    def restore(self, snap: Any) -> None: ...

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays, exactly (checkpoints)."""
        ...

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot `to_arrays` gave, back in this session's framework."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def weights(self) -> Weights: ...


@runtime_checkable
class Backend(Protocol):
    """A framework that can build, run and train the skip network.

    Arrays cross this interface as numpy float32 in (height, width, channels)
    layout for images and in the canonical layout of dip_core.params for weights.
    A `net` is an opaque handle owned by the backend.
    """

    name: str
    device: str  # resolved device, e.g. "cpu", "cuda", "mps", "gpu"

    def build(self, cfg: SkipConfig, weights: Weights) -> Any:
        """A network with exactly these weights (checked strictly)."""
        ...

    def get_weights(self, net: Any) -> Weights:
        """The network's current parameters in the canonical layout."""
        ...

    def forward(self, net: Any, x: np.ndarray) -> np.ndarray:
        """Output image (H, W, out_channels) for input x (H, W, in_channels)."""
        ...

    def block_outputs(self, net: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        """Output of every block (conv + BN + act, merge BN, head) by name, in forward order."""
        ...

    def loss_and_grads(self, net: Any, x: np.ndarray, target: np.ndarray) -> tuple[float, Weights]:
        """MSE(net(x), target) and its gradient for every parameter."""
        ...

    def memory_available(self) -> int | None:
        """Bytes free on the device (None when unknown)."""
        ...

    def session(self, spec: SessionSpec) -> Session:
        """Start fitting a network (the backend's loop.py)."""
        ...

    def adam_steps(
        self, net: Any, x: np.ndarray, noises: np.ndarray, target: np.ndarray, lr: float
    ) -> tuple[list[float], np.ndarray]:
        """One Adam step per entry of `noises` on MSE(net(x + noise), target).

        Returns the loss of every step and the output for x after the last one.
        The net's parameters are updated in place.
        """
        ...


_MODULES = {BackendName.MLX: "dip_mlx.backend", BackendName.TORCH: "dip_torch.backend"}
_FRAMEWORKS = {BackendName.MLX: "mlx", BackendName.TORCH: "torch"}


def install_hint(name: BackendName | str) -> str:
    """The command that installs a backend's framework on this platform."""
    name = BackendName(name)
    if name is BackendName.MLX:
        if sys.platform == "darwin":
            return 'pip install "mlx"'
        return 'pip install "mlx[cpu]"  (or "mlx[cuda12]" on NVIDIA)'
    return 'pip install "torch"'


def available_backends() -> list[str]:
    """Names of the backends whose framework is installed."""
    return [b.value for b in BackendName if importlib.util.find_spec(_FRAMEWORKS[b]) is not None]


def get_backend(name: BackendName | str = BackendName.MLX, device: Device | str = Device.AUTO) -> Backend:
    """Import a backend lazily and bind it to a device."""
    try:
        name = BackendName(name)
    except ValueError:
        raise BackendUnavailable(
            f"unknown backend {name!r}; choose one of {', '.join(b.value for b in BackendName)}"
        ) from None
    try:
        device = Device(device)
    except ValueError:
        raise DeviceUnavailable(
            f"unknown device {device!r}; choose one of {', '.join(d.value for d in Device)}"
        ) from None
    framework = _FRAMEWORKS[name]
    tune_allocator()  # before the framework allocates anything: see dip_core/allocator.py
    if importlib.util.find_spec(framework) is None:
        raise BackendUnavailable(f"the {name.value} backend needs {framework}: {install_hint(name)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == framework:
            raise BackendUnavailable(
                f"the {name.value} backend cannot import {framework} ({exc}): {install_hint(name)}"
            ) from None
        raise
    return module.create(device)
