"""The MLX implementation of dip_core.backend.Backend."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from dip_core.backend import Device, DeviceUnavailable, SessionSpec
from dip_core.model.config import SkipConfig, check_size
from dip_core.model.method import Method
from dip_core.model.weights import Weights, check_weights
from dip_core.problem.fidelity import SQUARED_ERROR
from dip_core.run.memory import available_bytes, host_free
from dip_core.system.precision import Precision, default_precision, effective
from dip_core.system.threads import choose_threads
from dip_mlx import cpu_kernels as ck
from dip_mlx.drp import Projector, objective
from dip_mlx.fidelity import loss_function
from dip_mlx.loop import MLXSession, adam
from dip_mlx.skip import SkipNet


def _resolve(device: Device) -> mx.Device:
    has_gpu = mx.is_available(mx.gpu)
    if device is Device.GPU:
        if not has_gpu:
            raise DeviceUnavailable("the mlx backend found no GPU (Metal or CUDA); use --device cpu")
        return mx.gpu
    if device is Device.AUTO and has_gpu:
        return mx.gpu
    return mx.cpu


def to_mlx_layout(w: np.ndarray) -> np.ndarray:
    """Canonical (out, in, kh, kw) convolution weights to MLX's (out, kh, kw, in)."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)) if w.ndim == 4 else w


def to_canonical_layout(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 3, 1, 2)) if w.ndim == 4 else w


squared_error = loss_function(SQUARED_ERROR)  # the cross-check's loss: the loop's data term for Gaussian noise


# MLX's default device is one for the whole process, and `mx.stream(...)` sets it too while it is entered:
# a session builds its graphs inside `placed()`, under this lock, so that two sessions on two threads (`dip ui`:
# a CPU worker and a GPU worker) never trace on each other's device. Evaluation needs no default device (each
# array carries its stream), so waiting for results happens outside it.
_PLACEMENT = threading.RLock()

# MLX reads MLX_ENABLE_TF32 once, at its first GPU matmul or convolution: the first GPU
# backend of a process fixes it, and a later one that wants the other setting is refused
# (only where the setting changes something: CUDA, and Metal GPUs with matrix units).
_TF32_VAR = "MLX_ENABLE_TF32"
# MLX's reduced-precision float32 path on Metal (its "NAX" kernels, mlx/backend/metal/device.cpp) needs a GPU of
# architecture generation 17 or later (18 for phone chips: M5, A19 Pro) and macOS 26.2. M1-M4 (generations 13-16)
# have none: there, TF32 on or off, MLX runs IEEE float32. It serves matmuls and the convolutions MLX lowers to
# them (1x1, unfolded); its implicit-GEMM convolution kernels stay float32 even then.
NAX_GENERATION, NAX_GENERATION_PHONE, NAX_MACOS = 17, 18, (26, 2)


def metal_generation(architecture: str) -> int:
    """The GPU generation in a Metal architecture name as MLX reads it ('applegpu_g15s' -> 15; 0 if none)."""
    digits = architecture[-3:-1]
    return int(digits) if len(architecture) >= 3 and digits.isdigit() else 0


def metal_reduced_precision(info: Mapping[str, Any], macos: str) -> bool:
    """Whether MLX on this Metal GPU (`mx.device_info()`; macOS version `macos`, e.g. '15.1') runs float32 matmuls
    at reduced precision when TF32 is on, by MLX's own rule (see NAX_GENERATION)."""
    arch = str(info.get("architecture", ""))
    need = NAX_GENERATION_PHONE if arch.endswith("p") else NAX_GENERATION
    parts = [int(p) for p in macos.split(".")[:2] if p.isdigit()]
    version = (*parts, 0, 0)[:2]
    return metal_generation(arch) >= need and version >= NAX_MACOS


def _tf32_matters() -> bool:
    """Does MLX_ENABLE_TF32 change what this process's MLX GPU computes? On CUDA yes; on Metal only with NAX."""
    if not mx.metal.is_available():
        return True
    info = mx.device_info(mx.gpu) if hasattr(mx, "device_info") else mx.metal.device_info()
    return metal_reduced_precision(info, platform.mac_ver()[0])


def _cpu_threads(device: str, requested: int | None) -> tuple[int, str]:
    """The threads of the CPU kernels and why: the choice of dip_core/system/threads.py where the pool starts
    now, else the size it started with (fixed once per process)."""
    choice = choose_threads(requested)
    mac = platform.system() == "Darwin"
    if device != "cpu":
        unused = "unused: MLX runs on Metal" if mac else "CPU kernels only, unused on the GPU"
        return choice.threads, f"{choice.reason}; {unused}"
    n = ck.start_pool(choice.threads)
    if n is None and mac:
        # No CPU kernels on macOS: MLX's own ops, whose matrix products and convolutions go to Accelerate,
        # which threads them itself; dip sets no count there, so it names none of its own.
        cores = os.cpu_count() or 1
        return cores, f"MLX's own ops; Accelerate threads its matrix products itself, on up to {cores} cores"
    if n is None:
        return 1, f"MLX's own ops on one thread (CPU kernels {ck.status()})"
    if n != choice.threads:
        return n, f"the CPU kernels' pool started with {n} earlier in this process (fixed once per process)"
    return n, choice.reason


class MLXBackend:
    name = "mlx"
    _tf32: bool | None = None  # the TF32 setting this process's MLX GPU runs with, once a backend chose it

    def __init__(
        self, device: Device = Device.AUTO, precision: Precision | None = None, threads: int | None = None
    ) -> None:
        self.mx_device = _resolve(Device(device))
        self.placement: mx.Device | mx.Stream = self.mx_device  # where `placed()` puts this backend's work
        self.device = "gpu" if self.mx_device == mx.gpu else "cpu"
        self.precision = effective(precision or default_precision(self.device), self.device)
        if self.device == "gpu":
            if _tf32_matters():
                self._fix_tf32(self.precision is not Precision.FP32)
            elif self.precision is Precision.TF32:
                self.precision = Precision.FP32  # what runs: TF32 changes nothing on this GPU, so nothing is fixed
        self.threads, self.threads_reason = _cpu_threads(self.device, threads)

    @contextlib.contextmanager
    def placed(self) -> Iterator[None]:
        """MLX work built inside runs on this backend's device, whatever the process's default device is
        (never changed for good: `mx.set_default_device` is process-wide)."""
        with _PLACEMENT, mx.stream(self.placement):
            yield

    @classmethod
    def _fix_tf32(cls, on: bool) -> None:
        if cls._tf32 is not None and cls._tf32 != on:
            raise DeviceUnavailable(
                f"MLX fixes TF32 {'on' if cls._tf32 else 'off'} once per process; "
                "run other precisions on the MLX GPU in a process of their own"
            )
        os.environ[_TF32_VAR] = "1" if on else "0"
        cls._tf32 = on

    # numpy (H, W, C) <-> mlx (1, H, W, C)
    @staticmethod
    def to_array(x: np.ndarray) -> mx.array:
        return mx.array(np.asarray(x, dtype=np.float32)[None])

    @staticmethod
    def to_numpy(a: mx.array) -> np.ndarray:
        return np.array(a)[0]  # indexed on the host: no MLX op, so no device to place it on

    def build(self, cfg: SkipConfig, weights: Weights) -> SkipNet:
        """The network with these weights, on the CPU kernels where they serve this device and precision."""
        with self.placed():
            return self._build(cfg, weights)

    def _build(self, cfg: SkipConfig, weights: Weights) -> SkipNet:
        check_weights(cfg, weights)
        dtype = mx.bfloat16 if self.precision is Precision.BF16 else mx.float32
        net = SkipNet(cfg, kernels=ck.usable(cfg, self.mx_device, dtype))
        expected = {name for name, _ in tree_flatten(net.parameters())}
        if expected != set(weights):  # guards the name mapping itself, not user input
            diverging = sorted(expected ^ set(weights))
            raise RuntimeError(f"MLX parameter names diverge from the canonical layout: {diverging}")
        arrays = [(name, mx.array(to_mlx_layout(np.asarray(w, np.float32)))) for name, w in weights.items()]
        net.update(tree_unflatten(arrays))
        mx.eval(net.parameters())
        return net

    def get_weights(self, net: SkipNet) -> Weights:
        return {name: to_canonical_layout(np.array(p)) for name, p in tree_flatten(net.parameters())}

    def forward(self, net: SkipNet, x: np.ndarray) -> np.ndarray:
        check_size(net.cfg, x.shape[0], x.shape[1])
        with self.placed():
            out = net(self.to_array(x))
            mx.eval(out)
        return self.to_numpy(out)

    def block_outputs(self, net: SkipNet, x: np.ndarray) -> dict[str, np.ndarray]:
        check_size(net.cfg, x.shape[0], x.shape[1])
        taps: dict[str, mx.array] = {}
        with self.placed():
            net(self.to_array(x), taps)
            mx.eval(taps)
        return {name: self.to_numpy(a) for name, a in taps.items()}

    def loss_and_grads(
        self, net: SkipNet, x: np.ndarray, target: np.ndarray, method: Method = Method.DIP, tv_weight: float = 0.0
    ) -> tuple[float, Weights]:
        check_size(net.cfg, x.shape[0], x.shape[1])
        if method is Method.DRP:
            with self.placed():
                model = Projector(net, self.to_array(x))
                loss, grads = nn.value_and_grad(model, _projector_loss(tv_weight))(
                    model, mx.zeros_like(model.z), self.to_array(target)
                )
                mx.eval(loss, grads)
            return float(loss), _projector_grads(grads)
        loss_fn = nn.value_and_grad(net, lambda model, z, y: squared_error(model(z), y))
        with self.placed():
            loss, grads = loss_fn(net, self.to_array(x), self.to_array(target))
            mx.eval(loss, grads)
        return float(loss), {name: to_canonical_layout(np.array(g)) for name, g in tree_flatten(grads)}

    def memory_available(self) -> int | None:
        if self.device == "gpu":
            if mx.metal.is_available():
                # Unified memory: what Metal recommends this process keep in use, less what MLX holds (its cache
                # it reuses); psutil's `available` is only advisory here (dip_core/run/memory.py).
                info = mx.device_info(mx.gpu) if hasattr(mx, "device_info") else mx.metal.device_info()
                return max(0, int(info["max_recommended_working_set_size"]) - int(mx.get_active_memory()))
            return available_bytes()  # MLX on CUDA
        return host_free()[0]

    def memory_advisory(self) -> int | None:
        return host_free()[1]

    def session(self, spec: SessionSpec) -> MLXSession:
        check_size(spec.cfg, spec.z.shape[0], spec.z.shape[1])
        with self.placed():
            return MLXSession(self, spec)

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
        opt = adam(lr)
        model: SkipNet | Projector = net
        loss_fn = nn.value_and_grad(net, lambda model, z, y: squared_error(model(z), y))
        z, y = self.to_array(x), self.to_array(target)
        if method is Method.DRP:
            with self.placed():
                model = Projector(net, z)
            loss_fn, z = nn.value_and_grad(model, _projector_loss(tv_weight)), mx.zeros_like(z)
        losses = []
        for noise in noises:
            with self.placed():
                loss, grads = loss_fn(model, z + self.to_array(noise), y)
                opt.update(model, grads)
                mx.eval(loss, model.parameters(), opt.state)
            losses.append(float(loss))
        if isinstance(model, Projector):
            with self.placed():
                out = model(z)
                mx.eval(out)
            return losses, self.to_numpy(out)
        return losses, self.forward(net, x)


def _projector_loss(tv_weight: float) -> Any:
    """The cross-check's DRP loss of a Projector for an offset to its z: on the squared error."""

    def loss(model: Projector, offset: mx.array, y: mx.array) -> mx.array:
        out = model(offset)
        return objective(squared_error(out, y), out, tv_weight)

    return loss


def _projector_grads(grads: Any) -> Weights:
    """A Projector's gradients by canonical name, z's as "z" (H, W, C)."""
    flat = dict(tree_flatten(grads))
    named = {name.removeprefix("net."): to_canonical_layout(np.array(g)) for name, g in flat.items() if name != "z"}
    return named | {"z": np.array(flat["z"])[0]}


def create(
    device: Device | str = Device.AUTO, precision: Precision | None = None, threads: int | None = None
) -> MLXBackend:
    return MLXBackend(Device(device), precision, threads)
