"""One optimisation step after another, in MLX: the backend half of the DIP loop."""

from __future__ import annotations

from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from dip_core.backend import SessionSpec
from dip_core.weights import Weights
from dip_mlx.ops import MLXOperator
from dip_mlx.skip import SkipNet


class MLXSession:
    """A network, its Adam state, z and the loss MSE(A(net(z + noise)), y) on one device.

    The whole step (input noise, forward, loss, backward, Adam) is one
    `mx.compile`d function. The noise comes from a key the session holds and
    splits at every step, so a seed reproduces a run exactly and a snapshot
    (or a checkpoint) carries the noise stream with it.
    """

    def __init__(self, backend: Any, spec: SessionSpec) -> None:
        self.backend = backend
        self.key = mx.random.key(spec.seed)
        self.net: SkipNet = backend.build(spec.cfg, spec.weights)
        self.opt = optim.Adam(learning_rate=spec.lr, bias_correction=True)  # torch's Adam always corrects
        self.opt.init(self.net.trainable_parameters())
        self.z = backend.to_array(spec.z)
        self.y = backend.to_array(spec.observed)
        op = MLXOperator(spec.op)
        std = spec.reg_noise_std
        loss_and_grad = nn.value_and_grad(self.net, lambda net, x: _loss(net, op, x, self.y))
        state = [self.net.state, self.opt.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(z: mx.array, key: mx.array) -> tuple[mx.array, mx.array, mx.array]:
            key, sub = mx.random.split(key)
            x = z + std * mx.random.normal(z.shape, key=sub) if std > 0 else z
            (loss, out), grads = loss_and_grad(self.net, x)
            self.opt.update(self.net, grads)
            return loss, out, key

        self._step = step
        self._state = state

    def step(self) -> tuple[float, np.ndarray]:
        """One Adam step; returns its loss and the output it was computed from."""
        loss, out, self.key = self._step(self.z, self.key)
        mx.eval(loss, out, self.key, self._state)
        return float(loss), self.backend.to_numpy(out)

    def output(self) -> np.ndarray:
        """net(z) without input noise."""
        out = self.net(self.z)
        mx.eval(out)
        return self.backend.to_numpy(out)

    def snapshot(self) -> Any:
        # MLX arrays are immutable: keeping references is a copy.
        return (self.net.parameters(), tree_map(lambda a: a, self.opt.state), self.key)

    def restore(self, snap: Any) -> None:
        params, opt_state, key = snap
        self.net.update(params)
        for name, value in tree_map(lambda a: a, opt_state).items():  # in place: the compiled step holds this dict
            self.opt.state[name] = value
        self.key = key

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays (for a checkpoint file)."""
        params, opt_state, key = snap
        arrays = {f"net/{k}": np.array(v) for k, v in tree_flatten(params)}
        arrays.update({f"opt/{k}": np.array(v) for k, v in tree_flatten(opt_state)})
        arrays["key"] = np.array(key)
        return arrays

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot that `to_arrays` wrote."""

        def tree(prefix: str) -> Any:
            n = len(prefix)
            return tree_unflatten([(k[n:], mx.array(v)) for k, v in arrays.items() if k.startswith(prefix)])

        return (tree("net/"), tree("opt/"), mx.array(arrays["key"]))

    def set_lr(self, lr: float) -> None:
        self.opt.learning_rate = lr

    def weights(self) -> Weights:
        return self.backend.get_weights(self.net)


def _loss(net: SkipNet, op: MLXOperator, x: mx.array, y: mx.array) -> tuple[mx.array, mx.array]:
    out = net(x)
    return mx.mean(mx.square(op(out) - y)), out
