"""The loop's monitors on the MLX device: EMA, windowed variance, MSE against a reference.

Everything here is a compiled function of arrays that stay where the step ran;
the loop gets one small vector of scalars per step (dip_core.backend.StepStats).
A step that is not finite (or follows one, until the session is restored)
changes nothing: its output is neither averaged nor pushed into the window.

The window's variance is kept as per-pixel sums of (x - shift) and (x - shift)^2
over the last W outputs, updated as one output enters and one leaves; `shift`
is the window's mean at the last exact recomputation (`refresh`, every W steps),
so float32 keeps its digits where the variance is small.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mlx.core as mx
import numpy as np

from dip_core.backend import Monitoring, ema_count

# A step's scalars come back as one vector, in the order of dip_core.backend.STAT_FIELDS.
_STATE = ("ema", "ema_n", "healthy", "s1", "s2", "shift", "count")


class MLXMonitors:
    """Monitor state (MLX arrays) for outputs of shape `shape` (1, h, w, C), and its update.

    `function` is the update as a pure function of arrays: a session calls it
    inside its own compiled step (one dispatch for step and monitors), fed by
    `inputs()` and its results handed back to `take()`; `update` runs it alone.

    The window is a list of W arrays, one per output, and the slot an output goes
    to is counted here, on the host: updating one slot of a (W, pixels) array
    next to a read of it would make MLX copy the whole window at every step.
    Non-finite steps write nothing; the rollback that follows them (`restore`)
    sets the slot back to the count of outputs the window really took in.
    """

    def __init__(self, monitoring: Monitoring, shape: tuple[int, ...]) -> None:
        self.monitoring = m = monitoring
        w = m.window
        pixels = math.prod(shape) if w else 0
        self.arrays: dict[str, mx.array] = {
            "ema": mx.zeros(shape),
            "ema_n": mx.array(0.0),  # outputs averaged so far
            "healthy": mx.array(True),
            "s1": mx.zeros((pixels,)),
            "s2": mx.zeros((pixels,)),
            "shift": mx.zeros((pixels,)),
            "count": mx.array(0, mx.int32),
        }
        self.ring = [mx.zeros((pixels,))] * w
        self.pushes = 0  # outputs queued into the window (= its count while every step is finite)
        ref = m.reference
        self.reference = mx.zeros((0,)) if ref is None else mx.array(np.asarray(ref, np.float32)[None])
        self.key = (m.exp_weight, m.ema_warmup, w, ref is not None, m.trace_output)  # what the update depends on
        self.function = _update_function(*self.key)
        self.fresh: list[mx.array] = []

    def inputs(self) -> list[mx.array]:
        """The arrays `function` takes after (loss, out, traced)."""
        w = self.monitoring.window
        old = self.ring[self.pushes % w] if w else mx.zeros((0,))
        return [self.reference, old, *(self.arrays[k] for k in _STATE)]

    def take(self, results: list[mx.array], refresh: bool) -> mx.array:
        """Keep what `function` returned (lazily); with `refresh`, recompute the window's sums exactly
        afterwards. Returns the step's scalars (dip_core.backend.STAT_FIELDS)."""
        *state, row, stats = results
        self.arrays = dict(zip(_STATE, state, strict=True))
        self.fresh = [*state]  # what this step computed: queued with it
        w = self.monitoring.window
        if w:
            self.ring[self.pushes % w] = row
            self.pushes += 1
            self.fresh.append(row)
            if refresh:
                a = self.arrays
                rows = self.ring[: min(self.pushes, w)]  # the slots filled so far, in order
                a["shift"], a["s1"], a["s2"] = _refresh(rows, a["healthy"], a["shift"], a["s1"], a["s2"])
                self.fresh += [a["shift"], a["s1"], a["s2"]]
        return stats

    def update(self, loss: mx.array, out: mx.array, traced: mx.array | None, refresh: bool) -> mx.array:
        """Take in one step on its own (lazily); returns its scalars."""
        traced = traced if traced is not None else mx.zeros((0,))
        return self.take(_compiled(self.function)(loss, out, traced, *self.inputs()), refresh)

    @property
    def ema(self) -> mx.array:
        return self.arrays["ema"]

    def keep_ema(self) -> tuple[mx.array, mx.array]:
        """The EMA and how many outputs it has averaged (what a snapshot carries)."""
        return self.arrays["ema"], self.arrays["ema_n"]

    def restore(self, ema: tuple[mx.array, mx.array]) -> None:
        """Back to a snapshot's EMA; the steps after it are monitored again (a rollback: waits for the device)."""
        self.arrays.update(ema=ema[0], ema_n=ema[1], healthy=mx.array(True))
        self.pushes = int(self.arrays["count"].item())

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: np.array(v) for k, v in self.arrays.items()}
        arrays["ring"] = np.stack([np.array(r) for r in self.ring]) if self.ring else np.zeros((0,), np.float32)
        return arrays

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = {k: mx.array(arrays[k]) for k in _STATE if k != "ema_n"} | {"ema_n": mx.array(ema_count(arrays))}
        self.ring = [mx.array(r) for r in arrays["ring"]] if self.monitoring.window else []
        self.pushes = int(arrays["count"])


@functools.cache
def _update_function(w: float, warmup: int, window: int, with_ref: bool, trace: bool) -> Any:
    """The update of one step and its scalars, as a pure function of arrays (made once per kind of monitoring)."""

    def update(loss, out, traced, ref, old, ema, ema_n, healthy, s1, s2, shift, count):
        ok = healthy & mx.isfinite(loss) & mx.all(mx.isfinite(out))
        nan = mx.array(math.nan)
        if w:
            weight = mx.minimum(w, ema_n / (ema_n + warmup)) if warmup else w  # dip_core.backend.ema_weight
            ema = mx.where(ok, mx.where(ema_n > 0, weight * ema + (1 - weight) * out, out), ema)
            ema_n = ema_n + ok.astype(mx.float32)
        row, variance = old, nan
        if window:
            x = out.reshape(-1)
            shift = mx.where(ok & (count == 0), x, shift)
            dx = x - shift
            do = mx.where(count >= window, old - shift, 0.0)
            s1 = mx.where(ok, s1 + dx - do, s1)
            s2 = mx.where(ok, s2 + dx * dx - do * do, s2)
            row = mx.where(ok, x, old)
            count = count + ok.astype(mx.int32)
            mean = s1 / window
            variance = mx.where(count >= window, mx.maximum(mx.mean(s2 / window - mean * mean), 0.0), nan)
        mse = mse_ema = mse_output = nan
        if with_ref:
            mse = mx.mean(mx.square(out - ref))
            if w:
                mse_ema = mx.mean(mx.square(ema - ref))
            if trace:
                mse_output = mx.mean(mx.square(traced - ref))
        stats = mx.stack([loss, ok.astype(mx.float32), variance, mse, mse_ema, mse_output])
        return ema, ema_n, ok, s1, s2, shift, count, row, stats

    return update


@functools.cache
def _compiled(function: Any) -> Any:
    return mx.compile(function)


@mx.compile
def _refresh(rows: list[mx.array], healthy: mx.array, shift: mx.array, s1: mx.array, s2: mx.array) -> Any:
    """The window's sums recomputed exactly from its outputs, around their mean (which becomes the shift, so
    the first sum is zero); kept as they were while a non-finite step waits for its rollback. Sums of the rows
    one by one: MLX's reduction over the first axis of a stacked window is several times slower on the CPU."""
    mean = functools.reduce(mx.add, rows) / len(rows)
    squares = functools.reduce(mx.add, [mx.square(r - mean) for r in rows])
    return mx.where(healthy, mean, shift), mx.where(healthy, 0.0, s1), mx.where(healthy, squares, s2)
