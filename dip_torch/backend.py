"""The PyTorch implementation of dip_core.backend.Backend."""

from __future__ import annotations

import os

import numpy as np
import torch

from dip_core.backend import Device, DeviceUnavailable, SessionSpec
from dip_core.model.config import SkipConfig, check_size
from dip_core.model.method import Method
from dip_core.model.weights import Weights, check_weights
from dip_core.problem.fidelity import SQUARED_ERROR
from dip_core.run.memory import host_free
from dip_core.system.precision import Precision, default_precision, effective
from dip_core.system.threads import choose_threads
from dip_torch.drp import Projector, objective
from dip_torch.fidelity import loss_function
from dip_torch.loop import TorchSession, adam
from dip_torch.skip import SkipNet

squared_error = loss_function(SQUARED_ERROR)  # the cross-check's loss: the loop's data term for Gaussian noise


def _resolve(device: Device) -> torch.device:
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        gpu = torch.device("mps")
    if device is Device.GPU:
        if gpu is None:
            raise DeviceUnavailable("the torch backend found no GPU (neither CUDA nor MPS); use --device cpu")
        return gpu
    if device is Device.AUTO and gpu is not None:
        return gpu
    return torch.device("cpu")


def _set_tf32(on: bool) -> None:
    """TF32 in cuDNN convolutions and cuBLAS matmuls (process-wide flags of torch)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _set_threads(requested: int | None) -> tuple[int, str]:
    """Run torch's CPU work (OpenMP, MKL, oneDNN; process-wide) on the threads dip_core/system/threads.py chooses.

    torch's OpenMP threads spin while they wait for each other: two threads on two cores beside one
    or two busy processes made a 64x64 step 12x slower than one thread. OMP_WAIT_POLICY=PASSIVE (which
    torch's libgomp honours) is left to the user: on two idle cores it made a step 1.6x slower at 64x64,
    1.2-1.4x at 128, 1.07x at 256, and on a busy machine it was no faster than the thread choice.
    """
    choice = choose_threads(requested)
    torch.set_num_threads(choice.threads)
    return torch.get_num_threads(), choice.reason


class TorchBackend:
    name = "torch"

    def __init__(
        self, device: Device = Device.AUTO, precision: Precision | None = None, threads: int | None = None
    ) -> None:
        self.torch_device = _resolve(Device(device))
        self.device = self.torch_device.type
        self.precision = effective(precision or default_precision(self.device), self.device)
        if self.device == "mps" and self.precision is Precision.BF16:
            raise DeviceUnavailable("torch runs bf16 on CUDA and the CPU; use --precision fp32 on MPS")
        # Channels-last parameters and inputs (DIP_CHANNELS_LAST=1). Off by default: on an H200 it made
        # the original DIP step slower (16-17 ms against 13.3 at 512x512).
        self.channels_last = os.environ.get("DIP_CHANNELS_LAST", "").strip() == "1"
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest algorithm once
        self.threads, self.threads_reason = _set_threads(threads)
        self.use_precision()

    def use_precision(self) -> None:
        """Set torch's process-wide TF32 flags to this backend's precision (before each step: another backend
        in the process may have set them otherwise)."""
        if self.device == "cuda":
            _set_tf32(self.precision is not Precision.FP32)

    # numpy (H, W, C) <-> torch (1, C, H, W)
    def to_tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None].to(self.torch_device)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    @staticmethod
    def to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach()[0].permute(1, 2, 0).cpu().numpy()

    def build(self, cfg: SkipConfig, weights: Weights) -> SkipNet:
        check_weights(cfg, weights)
        net = SkipNet(cfg)
        state = {name: torch.from_numpy(np.asarray(w, dtype=np.float32)) for name, w in weights.items()}
        net.load_state_dict(state, strict=True)
        net = net.to(self.torch_device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def get_weights(self, net: SkipNet) -> Weights:
        return {name: p.detach().cpu().numpy().copy() for name, p in net.named_parameters()}

    def forward(self, net: SkipNet, x: np.ndarray) -> np.ndarray:
        check_size(net.cfg, x.shape[0], x.shape[1])
        self.use_precision()
        with torch.no_grad():
            return self.to_numpy(net(self.to_tensor(x)))

    def block_outputs(self, net: SkipNet, x: np.ndarray) -> dict[str, np.ndarray]:
        check_size(net.cfg, x.shape[0], x.shape[1])
        self.use_precision()
        taps: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            net(self.to_tensor(x), taps)
        return {name: self.to_numpy(t) for name, t in taps.items()}

    def loss_and_grads(
        self, net: SkipNet, x: np.ndarray, target: np.ndarray, method: Method = Method.DIP, tv_weight: float = 0.0
    ) -> tuple[float, Weights]:
        check_size(net.cfg, x.shape[0], x.shape[1])
        self.use_precision()
        if method is Method.DRP:
            model = Projector(net, self.to_tensor(x))
            model.zero_grad(set_to_none=True)
            loss = _projector_loss(model, torch.zeros_like(model.z), self.to_tensor(target), tv_weight)
            loss.backward()
            return float(loss.detach()), _projector_grads(model)
        net.zero_grad(set_to_none=True)
        loss = squared_error(net(self.to_tensor(x)), self.to_tensor(target))
        loss.backward()
        grads = {name: p.grad.detach().cpu().numpy().copy() for name, p in net.named_parameters()}
        return float(loss.detach()), grads

    def memory_available(self) -> int | None:
        if self.torch_device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.torch_device)[0])
        if self.torch_device.type == "mps":
            # Unified memory: Metal's recommended working set (torch >= 2.5) less what torch's tensors hold;
            # psutil's `available` is only advisory here (dip_core/run/memory.py).
            limit = getattr(torch.mps, "recommended_max_memory", None)
            return None if limit is None else max(0, int(limit()) - int(torch.mps.current_allocated_memory()))
        return host_free()[0]

    def memory_advisory(self) -> int | None:
        return host_free()[1]

    def session(self, spec: SessionSpec) -> TorchSession:
        check_size(spec.cfg, spec.z.shape[0], spec.z.shape[1])
        torch.set_num_threads(self.threads)  # process-wide: another backend built since may have set its own
        return TorchSession(self, spec)

    def adam_steps(
        self,
        net: SkipNet,
        x: np.ndarray,
        noises: np.ndarray,
        target: np.ndarray,
        lr: float,
        method: Method = Method.DIP,
        tv_weight: float = 0.0,
    ) -> tuple[list[float], np.ndarray]:
        check_size(net.cfg, x.shape[0], x.shape[1])
        self.use_precision()
        z, y = self.to_tensor(x), self.to_tensor(target)
        model: SkipNet | Projector = net
        if method is Method.DRP:
            model, z = Projector(net, z), torch.zeros_like(z)
            opt = adam((p for p in model.parameters() if p.requires_grad), lr)
        else:
            opt = adam(net.parameters(), lr)
        losses = []
        for noise in noises:
            opt.zero_grad(set_to_none=True)
            if isinstance(model, Projector):
                loss = _projector_loss(model, z + self.to_tensor(noise), y, tv_weight)
            else:
                loss = squared_error(net(z + self.to_tensor(noise)), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        if isinstance(model, Projector):
            with torch.no_grad():
                return losses, self.to_numpy(model(z))
        return losses, self.forward(net, x)


def _projector_loss(model: Projector, offset: torch.Tensor, y: torch.Tensor, tv_weight: float) -> torch.Tensor:
    """The cross-check's DRP loss of a Projector for an offset to its z: on the squared error."""
    out = model(offset)
    return objective(squared_error(out, y), out, tv_weight)


def _projector_grads(model: Projector) -> Weights:
    """A Projector's gradients by canonical name (what it trains), z's as "z" (H, W, C)."""
    grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in model.net.named_parameters() if p.grad is not None}
    if model.z.grad is None:
        raise RuntimeError("z has no gradient: backward() has not run")
    return grads | {"z": TorchBackend.to_numpy(model.z.grad)}


def create(
    device: Device | str = Device.AUTO, precision: Precision | None = None, threads: int | None = None
) -> TorchBackend:
    return TorchBackend(Device(device), precision, threads)
