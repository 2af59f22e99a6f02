"""One optimisation step after another, in MLX: the backend half of the DIP loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from dip_core.backend import Kept, Monitoring, SessionSpec, StepStats, ema_count, step_description, step_stats
from dip_core.fit.checkpoint import under
from dip_core.model.method import Method
from dip_core.model.weights import Weights
from dip_core.system.precision import Precision
from dip_mlx.drp import Projector, objective
from dip_mlx.fidelity import loss_function
from dip_mlx.monitors import MLXMonitors
from dip_mlx.ops import MLXOperator
from dip_mlx.skip import SkipNet


@dataclass
class _Handle:
    """A queued step: its scalars, output and EMA (lazy arrays), and parameters when states are kept."""

    stats: mx.array
    out: mx.array
    ema: mx.array
    params: Any


def _placed(method: Any) -> Any:
    """Run a session's method with its MLX work on the session's device (the backend's `placed()`)."""

    @wraps(method)
    def run(self: MLXSession, *args: Any, **kwargs: Any) -> Any:
        with self.backend.placed():
            return method(self, *args, **kwargs)

    return run


class MLXSession:
    """A network, its Adam state, z and the loss of A(net(z + noise)) against y on one device, with monitors.

    With the Deep Random Projector (`spec.method`), the model is a `Projector`: the network with its
    convolutions frozen and z among its parameters; the session's own z is then zeros (the offset the noise is
    added to) and the loss is DRP's, while the step still reports the data term as its loss.

    The whole step (input noise, forward, loss, backward, Adam) and its monitors
    (dip_mlx/monitors.py) are one `mx.compile`d function; `step` queues it with
    `mx.async_eval` and returns, so the loop decides about step i while step i+1
    runs. The noise comes from a key the session holds and splits at every step,
    so a seed reproduces a run exactly and a snapshot (or a checkpoint) carries
    the noise stream with it.

    Every graph is built inside the backend's `placed()` (its device, whatever the
    process's default is), so two sessions on two devices in one process each keep
    their own; their compiled steps are traced once, on it.
    """

    pipelined = True

    def __init__(self, backend: Any, spec: SessionSpec) -> None:
        self.backend = backend
        self.key = mx.random.key(spec.seed)
        self.skip: SkipNet = backend.build(spec.cfg, spec.weights)
        self.z = backend.to_array(spec.z)
        self.net: SkipNet | Projector = self.skip
        data_term = loss_function(spec.fidelity)
        loss = _data_loss(data_term)
        if spec.method is Method.DRP:
            self.net, self.z = Projector(self.skip, self.z), mx.zeros_like(self.z)
            loss = _projector_loss(data_term, spec.tv_weight)
        self.opt = adam(spec.lr)
        self.opt.init(self.net.trainable_parameters())
        self.y = backend.to_array(spec.observed)
        h, w = spec.z.shape[:2]
        top, left, ch, cw = spec.crop or (0, 0, h, w)
        self._crop: Callable[[mx.array], mx.array] = lambda a: a[:, top : top + ch, left : left + cw, :]
        self._shape = (1, ch, cw, spec.cfg.out_channels)
        self.bf16 = spec.precision is Precision.BF16
        op = MLXOperator(spec.op)
        self._loss_and_grad = nn.value_and_grad(self.net, lambda net, x: _loss(net, op, loss, x, self.y, self.bf16))
        self._std = spec.reg_noise_std
        self._state = [self.net.state, self.opt.state]
        self._compiled: dict[tuple, Any] = {}
        self.start(Monitoring())

    @_placed
    def start(self, monitoring: Monitoring) -> None:
        self.monitoring = monitoring
        self.monitors = MLXMonitors(monitoring, self._shape)
        # Nothing lazy is left for another thread: on Metal a stream belongs to the thread that made it, and
        # `dip ui` makes a session on a request's thread and runs it on a worker's.
        mx.eval(self.key, self.z, self.y, self._state, self.monitors.arrays, self.monitors.ring)
        self._trace = monitoring.trace_output and monitoring.reference is not None
        self._slots: dict[str, mx.array] = {}
        self._states: dict[str, Any] = {}
        self._last: _Handle | None = None
        if self.monitors.key not in self._compiled:
            self._compiled[self.monitors.key] = self._compile(self.monitors.function)
        self._step = self._compiled[self.monitors.key]

    def _compile(self, monitor: Any) -> Any:
        """The whole step and its monitors as one compiled function (one per kind of monitoring)."""
        std, trace = self._std, self._trace

        @partial(mx.compile, inputs=self._state, outputs=self._state)
        def step(z: mx.array, key: mx.array, *monitor_inputs: mx.array) -> tuple[mx.array, ...]:
            key, sub = mx.random.split(key)
            x = z + std * mx.random.normal(z.shape, key=sub) if std > 0 else z
            (_, loss, out), grads = self._loss_and_grad(self.net, x)
            self.opt.update(self.net, grads)
            out = self._crop(out)
            traced = self._crop(_forward(self.net, z, self.bf16)) if trace else mx.zeros((0,))
            return (out, key, *monitor(loss, out, traced, *monitor_inputs))

        return step

    def step(self, refresh: bool = False) -> _Handle:
        with self.backend.placed():  # the graph; queueing and running it need no default device
            out, self.key, *results = self._step(self.z, self.key, *self.monitors.inputs())
            stats = self.monitors.take(results, refresh)
        params = self.net.parameters() if self.monitoring.keep_states else None
        mx.async_eval(stats, out, self.key, self._state, self.monitors.fresh)
        self._last = _Handle(stats, out, self.monitors.ema, params)
        return self._last

    def read(self, handle: _Handle) -> StepStats:
        return step_stats(handle.stats.tolist(), self.monitoring)

    def keep(self, slot: str, handle: _Handle, what: Kept) -> None:
        # MLX arrays are immutable: keeping a reference is a copy.
        if what is Kept.STATE:
            self._states[slot] = handle.params
        else:
            self._slots[slot] = handle.out if what is Kept.OUT else handle.ema

    def fetch(self, slot: str) -> np.ndarray:
        return self.backend.to_numpy(self._slots[slot])

    @_placed
    def ema(self) -> np.ndarray | None:
        ema, n = self.monitors.keep_ema()
        return self.backend.to_numpy(ema) if self.monitoring.exp_weight and n.item() > 0 else None

    @_placed
    def output(self, slot: str | None = None) -> np.ndarray:
        """net(z) without input noise (with the parameters kept in `slot`), in the run's precision."""
        if slot is None:
            out = _forward(self.net, self.z, self.bf16)
        else:
            now = self.net.parameters()
            self.net.update(self._states[slot])
            out = _forward(self.net, self.z, self.bf16)
            self.net.update(now)
        return self.backend.to_numpy(self._crop(out))

    def snapshot(self) -> Any:
        # MLX arrays are immutable: keeping references is a copy.
        return (self.net.parameters(), tree_map(lambda a: a, self.opt.state), self.key, self.monitors.keep_ema())

    @_placed
    def restore(self, snap: Any) -> None:
        params, opt_state, key, ema = snap
        self.net.update(params)
        for name, value in tree_map(lambda a: a, opt_state).items():  # in place: the compiled step holds this dict
            self.opt.state[name] = _fill(self.opt.state.get(name), value)
        self.key = key
        self.monitors.restore(ema)
        if self._last is not None and self._last.params is not None:
            self._last.params = params  # the state kept for the step just booked is the one it rolled back to

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        """A snapshot as named numpy arrays (for a checkpoint file)."""
        params, opt_state, key, (ema, ema_n) = snap
        arrays = {f"net/{k}": np.array(v) for k, v in tree_flatten(params)}
        arrays.update({f"opt/{k}": np.array(v) for k, v in tree_flatten(opt_state)})
        arrays.update(key=np.array(key), ema=np.array(ema), ema_n=np.array(ema_n))
        return arrays

    @_placed
    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The snapshot that `to_arrays` wrote."""
        ema = (mx.array(arrays["ema"]), mx.array(ema_count(arrays)))
        return (_tree(arrays, "net/"), _tree(arrays, "opt/"), mx.array(arrays["key"]), ema)

    @_placed
    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"now/{k}": v for k, v in self.to_arrays(self.snapshot()).items()}
        arrays.update({f"monitors/{k}": v for k, v in self.monitors.to_arrays().items()})
        arrays.update({f"slot/{k}": np.array(v) for k, v in self._slots.items()})
        for slot, params in self._states.items():
            arrays.update({f"state/{slot}/{k}": np.array(v) for k, v in tree_flatten(params)})
        return arrays

    @_placed
    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore(self.from_arrays(under("now/", arrays)))
        self.monitors.load(under("monitors/", arrays))  # restore() set the EMA only; the rest as saved
        self._slots = {k: mx.array(v) for k, v in under("slot/", arrays).items()}
        names = {k.split("/", 1)[0] for k in under("state/", arrays)}
        self._states = {name: _tree(arrays, f"state/{name}/") for name in names}

    def set_lr(self, lr: float) -> None:
        self.opt.learning_rate = lr

    def weights(self) -> Weights:
        return self.backend.get_weights(self.skip)

    def describe(self) -> dict[str, Any]:
        return step_description(
            precision=self.backend.precision.value, cpu_kernels=self.skip.kernels, compiled=True,
            fused_adam=False, pipelined=self.pipelined,
        )  # fmt: skip


def adam(lr: float) -> optim.Adam:
    """Adam as both the sessions and the cross-check run it: with bias correction, as torch's Adam always has."""
    return optim.Adam(learning_rate=lr, bias_correction=True)


def _fill(template: Any, values: Any) -> Any:
    """`values` in the structure of `template`: a checkpoint's trees (tree_flatten) lose empty branches, such as
    the Adam state of DRP's frozen convolutions, which the optimizer's tree_map still expects."""
    if isinstance(template, dict) and isinstance(values, dict):
        return {k: _fill(v, values[k]) if k in values else v for k, v in template.items()}
    if isinstance(template, list) and isinstance(values, list):
        return [_fill(t, v) for t, v in zip(template, values, strict=False)] + template[len(values) :]
    return values


def _tree(arrays: dict[str, np.ndarray], prefix: str) -> Any:
    return tree_unflatten([(k, mx.array(v)) for k, v in under(prefix, arrays).items()])


def _forward(net: SkipNet | Projector, x: mx.array, bf16: bool) -> mx.array:
    if not bf16:
        return net(x)
    # Forward (and so backward) in bfloat16; the parameters, the loss and Adam stay float32.
    params = net.parameters()
    net.update(tree_map(lambda p: p.astype(mx.bfloat16), params))
    out = net(x.astype(mx.bfloat16)).astype(mx.float32)
    net.update(params)
    return out


# A method's loss of A(x) = a against y for the output x: (what is minimised, the data term).
Loss = Callable[[mx.array, mx.array, mx.array], tuple[mx.array, mx.array]]


def _data_loss(data_term: Callable[[mx.array, mx.array], mx.array]) -> Loss:
    """DIP's: the data term itself."""

    def loss(a: mx.array, y: mx.array, out: mx.array) -> tuple[mx.array, mx.array]:
        data = data_term(a, y)
        return data, data

    return loss


def _projector_loss(data_term: Callable[[mx.array, mx.array], mx.array], tv_weight: float) -> Loss:
    """DRP's: sqrt(data term) + tv_weight x TV (dip_mlx/drp.py)."""

    def loss(a: mx.array, y: mx.array, out: mx.array) -> tuple[mx.array, mx.array]:
        data = data_term(a, y)
        return objective(data, out, tv_weight), data

    return loss


def _loss(
    net: SkipNet | Projector, op: MLXOperator, loss: Loss, x: mx.array, y: mx.array, bf16: bool
) -> tuple[mx.array, mx.array, mx.array]:
    """(what is minimised, the data term, the output): the first is differentiated."""
    out = _forward(net, x, bf16)
    minimised, data = loss(op(out), y, out)
    return minimised, data, out
