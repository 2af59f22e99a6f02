"""The one interface both backends implement, and how to pick one."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dip_core.errors import UserError
from dip_core.model.config import SkipConfig
from dip_core.model.method import Method
from dip_core.model.weights import Weights
from dip_core.problem.degrade import Operator
from dip_core.problem.fidelity import SQUARED_ERROR, Fidelity
from dip_core.system.allocator import tune_allocator
from dip_core.system.precision import Precision


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
    """Everything a backend needs to run the loss of a method: numpy arrays and settings only."""

    cfg: SkipConfig
    weights: Weights  # initial weights, canonical layout
    z: np.ndarray  # (H, W, in_channels) network input (drp: its initial value; the method trains it)
    observed: np.ndarray  # y: (h, w, C) the corrupted image the loss compares A(out) with
    op: Operator  # the degradation A
    lr: float
    reg_noise_std: float
    seed: int  # seeds the backend's noise stream
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the output the loop sees
    precision: Precision = Precision.FP32
    fidelity: Fidelity = SQUARED_ERROR  # the loss's data term: squared error, or the Poisson deviance
    # dip: every weight trained on the data term; drp: the convolutions frozen, z and the BatchNorms trained on
    # sqrt(data term) + tv_weight x TV(output) (dip_core/model/method.py, the numpy reference in problem/fidelity.py).
    method: Method = Method.DIP
    tv_weight: float = 0.0


@dataclass(frozen=True)
class Monitoring:
    """What a session computes beside every step, on its own device, for the loop's decisions.

    The loop reads back scalars only (`StepStats`); images stay where the step ran
    until the loop asks for one (`fetch`, `output`).
    """

    exp_weight: float = 0.0  # EMA of outputs (ema = w * ema + (1 - w) * out); 0: none
    # With a warm-up k, the weight after n outputs is min(w, n / (n + k)): the average's centre lies about n / (k + 1)
    # outputs back until w caps it, and it forgets the first ones (0: w from the first output).
    ema_warmup: int = 0
    window: int = 0  # windowed variance of the last `window` outputs (ES-WMV); 0: none
    reference: np.ndarray | None = None  # the clean image (h, w, C): MSE of the output and of the EMA
    trace_output: bool = False  # with a reference: MSE of net(z) too (one more forward per step)
    keep_states: bool = False  # the parameters after a step may be kept (`keep(..., Kept.STATE)`)


def ema_weight(monitoring: Monitoring, n: float) -> float:
    """The EMA's weight for the output that follows `n` averaged ones (the host's form of the backends' update)."""
    w, k = monitoring.exp_weight, monitoring.ema_warmup
    return min(w, n / (n + k)) if k else w


def ema_count(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The EMA's count of outputs in a snapshot's or the monitors' arrays (float32, a scalar). Checkpoints before
    format 5 kept only whether it had started (`ema_on`): 1 then, which is exact for an EMA without warm-up (the
    only kind those releases ran)."""
    n = arrays["ema_n"] if "ema_n" in arrays else arrays["ema_on"]
    return np.asarray(n, np.float32)


@dataclass(frozen=True)
class StepStats:
    """The scalars of one step, on the host. A step that is not finite is not monitored."""

    loss: float  # the data term (the fidelity's loss; drp optimises its square root plus TV, and reports this)
    finite: bool  # loss and output finite (and every step since the last restore)
    variance: float | None = None  # over the window, once it is full
    mse: float | None = None  # output (net(z + noise)) against the reference
    mse_ema: float | None = None  # EMA against the reference
    mse_output: float | None = None  # net(z) against the reference (trace_output)


STAT_FIELDS = ("loss", "finite", "variance", "mse", "mse_ema", "mse_output")  # a step's scalars, in this order


def step_stats(values: list[float], monitoring: Monitoring) -> StepStats:
    """StepStats from the vector a session's step returned (NaN where a monitor is off or not ready yet)."""
    v = dict(zip(STAT_FIELDS, values, strict=True))
    ref = monitoring.reference is not None
    wanted = {
        "variance": bool(monitoring.window),
        "mse": ref,
        "mse_ema": ref and bool(monitoring.exp_weight),
        "mse_output": ref and monitoring.trace_output,
    }
    given = {k: v[k] if on and not math.isnan(v[k]) else None for k, on in wanted.items()}
    return StepStats(loss=v["loss"], finite=bool(v["finite"]), **given)


class Kept(str, Enum):
    """What `Session.keep` copies from a step into a slot, on the device."""

    OUT = "out"  # the output the step was computed from
    EMA = "ema"  # the EMA after the step
    STATE = "state"  # the parameters after the step (`output(slot)` evaluates net(z) with them)


class Monitors(Protocol):
    """The monitors beside a session's step, on its device (dip_mlx/monitors.py, dip_torch/monitors.py): the EMA
    of outputs, the windowed variance of the outputs, the MSE against a reference. Both backends' classes offer
    exactly this API (tests/backends/test_monitors_api.py); arrays are the backend's own, `to_arrays` and `load`
    speak numpy with the same names and shapes on both (a checkpoint's monitor state)."""

    monitoring: Monitoring

    def update(self, loss: Any, out: Any, traced: Any | None, refresh: bool) -> Any:
        """Take in one step's loss and output (and net(z), when traced); returns its scalars (STAT_FIELDS) on the
        device. `refresh`: recompute the window's sums exactly after this step."""
        ...

    @property
    def ema(self) -> Any:
        """The EMA of outputs so far."""
        ...

    def keep_ema(self) -> tuple[Any, Any]:
        """The EMA and how many outputs it has averaged (0: not started): what a snapshot keeps."""
        ...

    def restore(self, ema: tuple[Any, Any]) -> None:
        """Back to a snapshot's EMA after a rollback; the steps after it are monitored again."""
        ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...

    def load(self, arrays: dict[str, np.ndarray]) -> None: ...


MONITOR_API = ("monitoring", "update", "ema", "keep_ema", "restore", "to_arrays", "load")


@runtime_checkable
class Session(Protocol):
    """One network being fitted: Adam steps on MSE(A(net(z + noise)), y), with monitors beside it.

    `step` queues a step and returns a handle at once; `read` waits for that
    step's scalars. A `pipelined` session lets the loop queue step i+1 before it
    reads step i, so the device never waits for the host; the loop keeps from a
    handle only while it is the last or the last but one step queued (and, on a
    session that is not pipelined, the parameters of the last one only).
    """

    pipelined: bool

    def start(self, monitoring: Monitoring) -> None:
        """Set up the monitors (before the first step)."""
        ...

    def step(self, refresh: bool = False) -> Any:
        """Queue one step and its monitors; `refresh` recomputes the window's sums exactly."""
        ...

    def read(self, handle: Any) -> StepStats: ...

    def keep(self, slot: str, handle: Any, what: Kept) -> None:
        """Keep the step's output, EMA or parameters in `slot` (on the device). The parameters of a step
        the loop rolled back while booking it are those it rolled back to."""
        ...

    def fetch(self, slot: str) -> np.ndarray:
        """A kept image, on the host (h, w, C)."""
        ...

    def ema(self) -> np.ndarray | None:
        """The EMA as it stands, on the host (None before the first monitored step or without EMA)."""
        ...

    def output(self, slot: str | None = None) -> np.ndarray:
        """net(z) with no input noise, on the host: now, or with the parameters kept in `slot`."""
        ...

    def snapshot(self) -> Any:
        """Parameters, optimizer state, noise stream and EMA, to come back to."""
        ...

    def restore(self, snap: Any) -> None: ...

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays, exactly (checkpoints)."""
        ...

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot `to_arrays` gave, back in this session's framework."""
        ...

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything the session holds (state, monitors, kept slots) as numpy arrays (checkpoints)."""
        ...

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Go on from `state_arrays`' output."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def weights(self) -> Weights: ...

    def describe(self) -> dict[str, Any]:
        """How the step runs, for reports: `step_description`'s keys (precision, kernels, fused optimizer, ...)."""
        ...


# How a session runs its step (Session.describe), the same keys from every backend; None where one does not apply.
STEP_KEYS = (
    "precision",  # what fp32 work runs as (Precision's value)
    "pipelined",  # the next step is queued while the loop books this one (a GPU)
    "compiled",  # the whole step is one compiled graph (MLX)
    "fused_adam",  # Adam in one kernel over every parameter (torch)
    "cpu_kernels",  # MLX's own CPU kernels for the network's hot ops: "on", "off" and why
    "channels_last",  # torch's NHWC memory layout
    "cudnn_benchmark",  # torch on CUDA: cuDNN picks its algorithms by timing them
    "monitors",  # where the monitors run, when not beside the step on its device
)


def step_description(**values: Any) -> dict[str, Any]:
    """A session's `describe()`: every key of STEP_KEYS, None for those not given; an unknown key is a bug."""
    unknown = sorted(set(values) - set(STEP_KEYS))
    if unknown:
        raise ValueError(f"not step description keys (dip_core.backend.STEP_KEYS): {unknown}")
    return {key: values.get(key) for key in STEP_KEYS}


@runtime_checkable
class Backend(Protocol):
    """A framework that can build, run and train the skip network.

    Arrays cross this interface as numpy float32 in (height, width, channels)
    layout for images and in the canonical layout of dip_core.model.params for weights.
    A `net` is an opaque handle owned by the backend.
    """

    name: str
    device: str  # resolved device, e.g. "cpu", "cuda", "mps", "gpu"
    precision: Precision  # what fp32 work runs as on that device (dip_core.system.precision)
    threads: int  # CPU threads its work runs on (dip_core.system.threads chooses them)
    threads_reason: str  # why that many, for `dip doctor` and the report

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

    def loss_and_grads(
        self, net: Any, x: np.ndarray, target: np.ndarray, method: Method = Method.DIP, tv_weight: float = 0.0
    ) -> tuple[float, Weights]:
        """dip: MSE(net(x), target) and its gradient for every parameter. drp: the projector's loss,
        sqrt(MSE) + tv_weight x TV(net(x)), and its gradient for what drp trains (the BatchNorms, and x as "z")."""
        ...

    def memory_available(self) -> int | None:
        """Bytes free on the device, beyond which a fit is refused (None when unknown or only advisory)."""
        ...

    def memory_advisory(self) -> int | None:
        """Bytes free by a figure that only warns (psutil's on macOS's unified memory; None elsewhere)."""
        ...

    def session(self, spec: SessionSpec) -> Session:
        """Start fitting a network (the backend's loop.py)."""
        ...

    def adam_steps(
        self,
        net: Any,
        x: np.ndarray,
        noises: np.ndarray,
        target: np.ndarray,
        lr: float,
        method: Method = Method.DIP,
        tv_weight: float = 0.0,
    ) -> tuple[list[float], np.ndarray]:
        """One Adam step per entry of `noises` on MSE(net(x + noise), target) (drp: on the projector's loss,
        training x and the BatchNorms only).

        Returns the loss of every step and the output for x after the last one (drp: for the trained x).
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


# Names of resolved devices (a report's "device") that may be given back as a device choice.
_DEVICE_ALIASES = {"cuda": Device.GPU, "mps": Device.GPU, "metal": Device.GPU}


def parse_device(device: Device | str) -> Device:
    """A device choice; the resolved names a report gives (cuda, mps) mean the GPU."""
    if isinstance(device, str) and device.lower() in _DEVICE_ALIASES:
        return _DEVICE_ALIASES[device.lower()]
    try:
        return Device(device)
    except ValueError:
        raise DeviceUnavailable(
            f"unknown device {device!r}; choose one of {', '.join(d.value for d in Device)}"
        ) from None


def get_backend(
    name: BackendName | str = BackendName.MLX,
    device: Device | str = Device.AUTO,
    precision: Precision | str | None = None,
    threads: int | None = None,
) -> Backend:
    """Import a backend lazily and bind it to a device, a precision (None: the device's default) and a number
    of CPU threads (None: the cores free now)."""
    try:
        name = BackendName(name)
    except ValueError:
        raise BackendUnavailable(
            f"unknown backend {name!r}; choose one of {', '.join(b.value for b in BackendName)}"
        ) from None
    device = parse_device(device)
    if precision is not None:
        try:
            precision = Precision(precision)
        except ValueError:
            choices = ", ".join(p.value for p in Precision)
            raise UserError(f"unknown precision {precision!r}; choose one of {choices}") from None
    framework = _FRAMEWORKS[name]
    tune_allocator()  # before the framework allocates anything: see dip_core/system/allocator.py
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
    return module.create(device, precision, threads)
