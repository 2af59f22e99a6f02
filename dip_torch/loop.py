"""One optimisation step after another, in PyTorch: the backend half of the DIP loop."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dip_core.backend import Kept, Monitoring, SessionSpec, StepStats, ema_count, step_description, step_stats
from dip_core.fit.checkpoint import under
from dip_core.model.method import Method
from dip_core.model.weights import Weights
from dip_core.system.precision import Precision
from dip_torch.drp import Projector, objective
from dip_torch.fidelity import loss_function
from dip_torch.monitors import TorchMonitors
from dip_torch.ops import TorchOperator
from dip_torch.skip import SkipNet


@dataclass
class _Handle:
    """A queued step: its scalars (on their way to the host), output, EMA, and parameters when states are kept."""

    stats: torch.Tensor
    ready: Any  # the device's event recorded after the copy to the host (None where reading waits anyway)
    out: torch.Tensor
    ema: torch.Tensor
    params: list[torch.Tensor] | None
    index: int


def _cuda_event() -> Any:
    return torch.cuda.Event()


def _mps_event() -> Any:
    return torch.mps.event.Event()  # torch >= 2.1


# How a step's scalars reach the host on each GPU kind without stalling it: the event recorded after their
# non-blocking copy, and whether the host buffers are pinned. MPS pins host memory only in recent torch
# (2026); its non-blocking copy into a plain host tensor wraps those pages for the GPU in place, so none is
# needed there. Devices not listed (the CPU) are read directly: a CPU step has run to its end when it returns.
READBACK: dict[str, tuple[Callable[[], Any], bool]] = {"cuda": (_cuda_event, True), "mps": (_mps_event, False)}


class TorchSession:
    """A network, its Adam state, z and the loss of A(net(z + noise)) against y on one device, with monitors.

    On CUDA and MPS the step's scalars are copied to host memory without waiting
    (`pipelined`, READBACK): the loop reads step i while step i+1 runs.

    With the Deep Random Projector (`spec.method`), the model is a `Projector`: the network with its
    convolutions frozen and z among its parameters; the session's own z is then zeros (the offset the noise is
    added to) and the loss is DRP's, while the step still reports the data term as its loss.
    """

    def __init__(self, backend: Any, spec: SessionSpec) -> None:
        self.backend = backend
        dev = backend.torch_device
        self.device = dev
        # Pipelined on a GPU, where the scalars come back through a non-blocking copy and an event (a plain
        # `.tolist()` on the device tensor would wait for everything queued, with nothing queued behind it).
        self._readback = READBACK.get(dev.type)
        self.pipelined = self._readback is not None
        self.skip: SkipNet = backend.build(spec.cfg, spec.weights)
        self.z = backend.to_tensor(spec.z)
        self.net: SkipNet | Projector = self.skip
        self.loss = loss_function(spec.fidelity)
        self.tv_weight: float | None = None  # drp: the weight of TV in its loss
        if spec.method is Method.DRP:
            self.net, self.z = Projector(self.skip, self.z), torch.zeros_like(self.z)
            self.tv_weight = spec.tv_weight
        self.opt = adam((p for p in self.net.parameters() if p.requires_grad), spec.lr)
        self.y = backend.to_tensor(spec.observed)
        self.op = TorchOperator(spec.op, dev)
        self.reg_noise_std = spec.reg_noise_std
        self.gen = torch.Generator(device=dev).manual_seed(spec.seed)
        h, w = spec.z.shape[:2]
        top, left, ch, cw = spec.crop or (0, 0, h, w)
        self._crop: Callable[[torch.Tensor], torch.Tensor] = lambda t: t[..., top : top + ch, left : left + cw]
        self._shape = (1, spec.cfg.out_channels, ch, cw)
        self.bf16 = spec.precision is Precision.BF16
        self._steps = 0
        self.start(Monitoring())

    def start(self, monitoring: Monitoring) -> None:
        self.monitoring = monitoring
        self.monitors = TorchMonitors(monitoring, self._shape, self.device)
        self._trace = monitoring.trace_output and monitoring.reference is not None
        self._slots: dict[str, torch.Tensor] = {}
        self._states: dict[str, list[torch.Tensor]] = {}
        self._last: _Handle | None = None
        # On a GPU the parameters after each step go into a ring of two: the loop may keep
        # step i's after step i+1 has changed them in place.
        self._param_ring: list[list[torch.Tensor]] = []
        if monitoring.keep_states and self.pipelined:
            self._param_ring = [[p.detach().clone() for p in self.net.parameters()] for _ in range(2)]
        # On a GPU each step's scalars go to host memory, in a ring of two (on the CPU they are read directly).
        self._stats_host: list[torch.Tensor] = []
        if self._readback is not None:
            self._stats_host = [torch.empty(6, pin_memory=self._readback[1]) for _ in range(2)]

    def _autocast(self) -> Any:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, refresh: bool = False) -> _Handle:
        self.backend.use_precision()
        self.opt.zero_grad(set_to_none=True)
        x = self.z
        if self.reg_noise_std > 0:
            noise = torch.randn(self.z.shape, generator=self.gen, device=self.z.device, dtype=self.z.dtype)
            x = self.z + self.reg_noise_std * noise
        with self._autocast():
            out = self.net(x)
        out = out.float()  # the degradation and the loss in float32, as MLX computes them
        loss = self.loss(self.op(out), self.y)
        (loss if self.tv_weight is None else objective(loss, out, self.tv_weight)).backward()
        self.opt.step()
        out = self._crop(out.detach())
        traced = None
        if self._trace:
            with torch.no_grad(), self._autocast():
                traced = self._crop(self.net(self.z).float())
        stats = self.monitors.update(loss.detach(), out, traced, refresh)
        params = None
        if self._param_ring:
            params = self._param_ring[self._steps % 2]
            torch._foreach_copy_(params, [p.detach() for p in self.net.parameters()])
        ready = None
        if self._stats_host:
            host = self._stats_host[self._steps % 2]
            host.copy_(stats, non_blocking=True)
            ready = self._readback[0]()
            ready.record()
            stats = host
        self._steps += 1
        self._last = _Handle(stats, ready, out, self.monitors.ema, params, self._steps)
        return self._last

    def read(self, handle: _Handle) -> StepStats:
        if handle.ready is not None:
            handle.ready.synchronize()
        return step_stats(handle.stats.tolist(), self.monitoring)

    def keep(self, slot: str, handle: _Handle, what: Kept) -> None:
        if what is not Kept.STATE:
            # Outputs and EMAs are never changed in place: a reference is a copy.
            self._slots[slot] = handle.out if what is Kept.OUT else handle.ema
            return
        if handle.params is not None:
            source = handle.params
        elif handle.index == self._steps:
            source = [p.detach() for p in self.net.parameters()]  # the last step: its parameters are the live ones
        else:
            raise RuntimeError("the parameters of an earlier step are kept only by a pipelined session")
        self._states[slot] = [p.clone() for p in source]

    def fetch(self, slot: str) -> np.ndarray:
        return self.backend.to_numpy(self._slots[slot])

    def ema(self) -> np.ndarray | None:
        ema, n = self.monitors.keep_ema()
        return self.backend.to_numpy(ema) if self.monitoring.exp_weight and float(n) > 0 else None

    @torch.no_grad()
    def output(self, slot: str | None = None) -> np.ndarray:
        """net(z) without input noise (with the parameters kept in `slot`), in the run's precision."""
        self.backend.use_precision()
        if slot is None:
            with self._autocast():
                out = self.net(self.z).float()
        else:
            names = [name for name, _ in self.net.named_parameters()]
            params = dict(zip(names, self._states[slot], strict=True))
            with self._autocast():
                out = torch.func.functional_call(self.net, params, (self.z,)).float()
        return self.backend.to_numpy(self._crop(out))

    def snapshot(self) -> Any:
        ema = self.monitors.keep_ema()  # replaced, never changed in place: references do
        return (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.opt.state_dict()), self.gen.get_state(), ema)

    def restore(self, snap: Any) -> None:
        net_state, opt_state, gen_state, ema = snap
        self.net.load_state_dict(net_state)  # copies into the parameters
        # Adam's load_state_dict keeps the very tensors it is given, and steps change them in place:
        # without a copy, the snapshot would follow the run after the first rollback to it.
        self.opt.load_state_dict(copy.deepcopy(opt_state))
        self.gen.set_state(gen_state)
        self.monitors.restore(ema)
        if self._last is not None:
            self._last.params = None  # the state kept for the step just booked is the one it rolled back to

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays (for a checkpoint file)."""
        net_state, opt_state, gen_state, (ema, ema_n) = snap
        arrays = {f"net/{k}": _numpy(v) for k, v in net_state.items()}
        for index, slots in opt_state["state"].items():
            for name, value in slots.items():
                arrays[f"opt/{index}/{name}"] = _numpy(value)
        arrays["opt/lr"] = np.array([g["lr"] for g in opt_state["param_groups"]], np.float64)
        arrays["gen"] = gen_state.numpy().copy()
        arrays.update(ema=_numpy(ema), ema_n=_numpy(ema_n))
        return arrays

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot that `to_arrays` wrote."""
        dev = self.device
        net_state = {k[4:]: _tensor(v, dev) for k, v in arrays.items() if k.startswith("net/")}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            parts = key.split("/")
            if parts[0] == "opt" and len(parts) == 3:
                # Fused Adam keeps its step count beside the parameters, on their device.
                state.setdefault(int(parts[1]), {})[parts[2]] = _tensor(value, dev)
        groups = copy.deepcopy(self.opt.state_dict()["param_groups"])
        for group, lr in zip(groups, arrays["opt/lr"], strict=True):
            group["lr"] = float(lr)
        ema = (_tensor(arrays["ema"], dev), _tensor(ema_count(arrays), dev))
        return (net_state, {"state": state, "param_groups": groups}, torch.from_numpy(arrays["gen"].copy()), ema)

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"now/{k}": v for k, v in self.to_arrays(self.snapshot()).items()}
        arrays.update({f"monitors/{k}": v for k, v in self.monitors.to_arrays().items()})
        arrays.update({f"slot/{k}": _numpy(v) for k, v in self._slots.items()})
        names = [name for name, _ in self.net.named_parameters()]
        for slot, params in self._states.items():
            arrays.update({f"state/{slot}/{n}": _numpy(p) for n, p in zip(names, params, strict=True)})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        dev = self.device
        self.restore(self.from_arrays(under("now/", arrays)))
        self.monitors.load(under("monitors/", arrays))  # restore() set the EMA only; the rest as saved
        self._slots = {k: _tensor(v, dev) for k, v in under("slot/", arrays).items()}
        names = [name for name, _ in self.net.named_parameters()]
        kept = {k.split("/", 1)[0] for k in under("state/", arrays)}
        self._states = {s: [_tensor(arrays[f"state/{s}/{n}"], dev) for n in names] for s in kept}

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def weights(self) -> Weights:
        return self.backend.get_weights(self.skip)

    def describe(self) -> dict[str, Any]:
        return step_description(
            precision=self.backend.precision.value,
            fused_adam=bool(self.opt.defaults.get("fused")),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark) if self.device.type == "cuda" else None,
            channels_last=self.backend.channels_last,
            compiled=False,
            pipelined=self.pipelined,
        )


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam as both the sessions and the cross-check run it: fused (one kernel for every parameter on a GPU,
    a vectorised loop on the CPU) where this torch has it for the device."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(a.copy()).to(device)
