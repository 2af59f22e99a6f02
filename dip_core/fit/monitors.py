"""The monitors beside each step, in numpy: the reference the MLX and torch monitors are tested against.

A backend's session keeps its monitors on its own device (dip_mlx/monitors.py,
dip_torch/monitors.py) and hands the loop scalars only. `HostSession` is a
session whose steps already produce numpy arrays (scripted sessions in tests,
anything without a device); it computes the same monitors on the host, in
float64 where the devices use float32, so the loop's decisions can be checked
against it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dip_core.backend import Kept, Monitoring, StepStats, ema_weight, step_description
from dip_core.fit.checkpoint import under
from dip_core.fit.stopping import WindowVariance
from dip_core.problem.metrics import mse


@dataclass
class _HostHandle:
    index: int
    stats: StepStats
    out: np.ndarray | None
    ema: np.ndarray | None
    state: Any


class HostSession:
    """Session plumbing for steps computed on the host; subclasses give the model's side.

    To implement: `advance()` (one step: loss and output), `net_output()` (net(z),
    no input noise), `model_snapshot()` / `model_restore(snap)`, `set_lr`, `weights`.
    """

    pipelined = False

    def advance(self) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def net_output(self) -> np.ndarray:
        raise NotImplementedError

    def model_snapshot(self) -> Any:
        raise NotImplementedError

    def model_restore(self, snap: Any) -> None:
        raise NotImplementedError

    def start(self, monitoring: Monitoring) -> None:
        self._monitoring = monitoring
        self._ema: np.ndarray | None = None
        self._ema_n = 0  # outputs averaged so far
        self._window = WindowVariance(monitoring.window) if monitoring.window else None
        self._slots: dict[str, np.ndarray] = {}
        self._states: dict[str, Any] = {}
        self._healthy = True
        self._count = 0
        self._last: _HostHandle | None = None

    def step(self, refresh: bool = False) -> _HostHandle:
        loss, out = self.advance()
        out = np.asarray(out, np.float32)
        m = self._monitoring
        ok = self._healthy and math.isfinite(loss) and bool(np.isfinite(out).all())
        self._healthy = ok
        self._count += 1
        if not ok:
            self._last = _HostHandle(self._count, StepStats(loss, False), None, None, None)
            return self._last
        if m.exp_weight:
            w = ema_weight(m, self._ema_n)
            self._ema = out if self._ema is None else w * self._ema + (1 - w) * out
            self._ema_n += 1
        variance = self._window.push(out) if self._window is not None else None
        ref = m.reference
        stats = StepStats(
            loss=loss,
            finite=True,
            variance=variance,
            mse=mse(out, ref) if ref is not None else None,
            mse_ema=mse(self._ema, ref) if ref is not None and m.exp_weight and self._ema is not None else None,
            mse_output=mse(self.net_output(), ref) if ref is not None and m.trace_output else None,
        )
        state = self.model_snapshot() if m.keep_states else None
        self._last = _HostHandle(self._count, stats, out, self._ema, state)
        return self._last

    def read(self, handle: _HostHandle) -> StepStats:
        return handle.stats

    def keep(self, slot: str, handle: _HostHandle, what: Kept) -> None:
        if what is Kept.STATE:
            self._states[slot] = handle.state
        else:
            kept = handle.out if what is Kept.OUT else handle.ema
            if kept is None:
                raise ValueError(f"step {handle.index} has no {what.value} to keep (it was not finite, or no EMA runs)")
            self._slots[slot] = kept.copy()

    def fetch(self, slot: str) -> np.ndarray:
        return self._slots[slot]

    def ema(self) -> np.ndarray | None:
        return self._ema

    def output(self, slot: str | None = None) -> np.ndarray:
        if slot is None:
            return self.net_output()
        now = self.model_snapshot()
        self.model_restore(self._states[slot])
        out = self.net_output()
        self.model_restore(now)
        return out

    def snapshot(self) -> Any:
        return self.model_snapshot(), None if self._ema is None else self._ema.copy(), self._ema_n

    def restore(self, snap: Any) -> None:
        model, ema, self._ema_n = snap
        self.model_restore(model)
        self._ema = None if ema is None else ema.copy()
        self._healthy = True
        if self._last is not None and self._monitoring.keep_states:
            self._last.state = self.model_snapshot()  # the state kept for the step just booked: the restored one

    def to_arrays(self, snap: Any) -> dict[str, np.ndarray]:
        model, ema, n = snap
        arrays = {"model": np.asarray(model)}
        if ema is not None:
            arrays["ema"], arrays["ema_n"] = ema, np.array(n, np.int64)
        return arrays

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        ema = arrays.get("ema")
        return arrays["model"], ema, int(arrays.get("ema_n", ema is not None))  # dip 0.4: whether it had started

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"now/{k}": v for k, v in self.to_arrays(self.snapshot()).items()}
        arrays.update({f"slot/{k}": v for k, v in self._slots.items()})
        arrays.update({f"state/{k}": np.asarray(v) for k, v in self._states.items()})
        if self._window is not None:
            window, (sumsq, count) = self._window.state()
            arrays.update({f"window/{k}": v for k, v in window.items()})
            arrays["window/scalars"] = np.array([sumsq, count], np.float64)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore(self.from_arrays(under("now/", arrays)))
        self._slots = under("slot/", arrays)
        self._states = dict(under("state/", arrays))
        if self._window is not None and "window/scalars" in arrays:
            sumsq, count = arrays["window/scalars"]
            window = {k: v for k, v in under("window/", arrays).items() if k != "scalars"}
            self._window.load_state(window, (sumsq, count))

    def describe(self) -> dict[str, Any]:
        return step_description(monitors="numpy (host)")
