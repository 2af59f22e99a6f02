"""One optimisation step after another, in PyTorch: the backend half of the DIP loop."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from dip_core.backend import SessionSpec
from dip_core.weights import Weights
from dip_torch.ops import TorchOperator
from dip_torch.skip import SkipNet


class TorchSession:
    """A network, its Adam state, z and the loss MSE(A(net(z + noise)), y) on one device."""

    def __init__(self, backend: Any, spec: SessionSpec) -> None:
        self.backend = backend
        dev = backend.torch_device
        self.net: SkipNet = backend.build(spec.cfg, spec.weights)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=spec.lr)
        self.z = backend.to_tensor(spec.z)
        self.y = backend.to_tensor(spec.observed)
        self.op = TorchOperator(spec.op, dev)
        self.reg_noise_std = spec.reg_noise_std
        self.gen = torch.Generator(device=dev).manual_seed(spec.seed)

    def step(self) -> tuple[float, np.ndarray]:
        """One Adam step; returns its loss and the output it was computed from."""
        self.opt.zero_grad(set_to_none=True)
        x = self.z
        if self.reg_noise_std > 0:
            noise = torch.randn(self.z.shape, generator=self.gen, device=self.z.device, dtype=self.z.dtype)
            x = self.z + self.reg_noise_std * noise
        out = self.net(x)
        loss = torch.mean((self.op(out) - self.y) ** 2)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), self.backend.to_numpy(out)

    def output(self) -> np.ndarray:
        """net(z) without input noise."""
        with torch.no_grad():
            return self.backend.to_numpy(self.net(self.z))

    def snapshot(self) -> Any:
        return (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.opt.state_dict()), self.gen.get_state())

    def restore(self, snap: Any) -> None:
        net_state, opt_state, gen_state = snap
        self.net.load_state_dict(net_state)
        self.opt.load_state_dict(opt_state)
        self.gen.set_state(gen_state)

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays (for a checkpoint file)."""
        net_state, opt_state, gen_state = snap
        arrays = {f"net/{k}": v.detach().cpu().numpy().copy() for k, v in net_state.items()}
        for index, slots in opt_state["state"].items():
            for name, value in slots.items():
                arrays[f"opt/{index}/{name}"] = value.detach().cpu().numpy().copy()
        arrays["opt/lr"] = np.array([g["lr"] for g in opt_state["param_groups"]], np.float64)
        arrays["gen"] = gen_state.numpy().copy()
        return arrays

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot that `to_arrays` wrote."""
        dev = self.backend.torch_device
        net_state = {k[4:]: torch.from_numpy(v.copy()).to(dev) for k, v in arrays.items() if k.startswith("net/")}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            parts = key.split("/")
            if parts[0] == "opt" and len(parts) == 3:
                tensor = torch.from_numpy(value.copy())
                # Adam keeps its step count on the CPU; the moments live with the parameters.
                state.setdefault(int(parts[1]), {})[parts[2]] = tensor if parts[2] == "step" else tensor.to(dev)
        groups = copy.deepcopy(self.opt.state_dict()["param_groups"])
        for group, lr in zip(groups, arrays["opt/lr"], strict=True):
            group["lr"] = float(lr)
        return (net_state, {"state": state, "param_groups": groups}, torch.from_numpy(arrays["gen"].copy()))

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def weights(self) -> Weights:
        return self.backend.get_weights(self.net)
