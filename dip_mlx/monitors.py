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

import math
from typing import Any

import mlx.core as mx
import numpy as np

from dip_core.backend import Monitoring

# Order of the scalars in the vector a step returns.
LOSS, OK, VARIANCE, MSE, MSE_EMA, MSE_OUTPUT = range(6)
_STATE = ("ema", "ema_on", "healthy", "ring", "s1", "s2", "shift", "count")


class MLXMonitors:
    """Monitor state (MLX arrays) for outputs of shape `shape` (1, h, w, C), and its update."""

    def __init__(self, monitoring: Monitoring, shape: tuple[int, ...]) -> None:
        self.monitoring = monitoring
        w = monitoring.window
        pixels = math.prod(shape)
        self.arrays: dict[str, mx.array] = {
            "ema": mx.zeros(shape),
            "ema_on": mx.array(False),
            "healthy": mx.array(True),
            "ring": mx.zeros((w, pixels)) if w else mx.zeros((0,)),
            "s1": mx.zeros((pixels,)) if w else mx.zeros((0,)),
            "s2": mx.zeros((pixels,)) if w else mx.zeros((0,)),
            "shift": mx.zeros((pixels,)) if w else mx.zeros((0,)),
            "count": mx.array(0, mx.int32),
        }
        ref = monitoring.reference
        self.reference = None if ref is None else mx.array(np.asarray(ref, np.float32)[None])
        self._update = {flag: mx.compile(_make_update(monitoring, flag)) for flag in (False, True)}

    def update(self, loss: mx.array, out: mx.array, output: mx.array | None, refresh: bool) -> mx.array:
        """Take in one step (lazily); returns its scalars (see the indices above)."""
        a = self.arrays
        ref = self.reference if self.reference is not None else mx.zeros((0,))
        traced = output if output is not None else mx.zeros((0,))
        *state, stats = self._update[refresh](loss, out, traced, ref, *(a[k] for k in _STATE))
        self.arrays = dict(zip(_STATE, state, strict=True))
        return stats

    @property
    def ema(self) -> mx.array:
        return self.arrays["ema"]

    def keep_ema(self) -> tuple[mx.array, mx.array]:
        """The EMA and whether it has started (what a snapshot carries)."""
        return self.arrays["ema"], self.arrays["ema_on"]

    def restore(self, ema: tuple[mx.array, mx.array]) -> None:
        """Back to a snapshot's EMA; the steps after it are monitored again."""
        self.arrays.update(ema=ema[0], ema_on=ema[1], healthy=mx.array(True))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.arrays.items()}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = {k: mx.array(arrays[k]) for k in _STATE}


def _make_update(m: Monitoring, refresh: bool) -> Any:
    """The update as a pure function (compiled once per `refresh`)."""
    w, window = m.exp_weight, m.window
    with_ref = m.reference is not None

    def update(loss, out, traced, ref, ema, ema_on, healthy, ring, s1, s2, shift, count):
        ok = healthy & mx.isfinite(loss) & mx.all(mx.isfinite(out))
        nan = mx.array(math.nan)
        if w:
            ema = mx.where(ok, mx.where(ema_on, w * ema + (1 - w) * out, out), ema)
            ema_on = ema_on | ok
        variance = nan
        if window:
            x = out.reshape(-1)
            slot = count % window
            old = mx.take(ring, slot, axis=0)
            shift = mx.where(ok & (count == 0), x, shift)
            dx = x - shift
            do = mx.where(count >= window, old - shift, 0.0)
            s1 = mx.where(ok, s1 + dx - do, s1)
            s2 = mx.where(ok, s2 + dx * dx - do * do, s2)
            ring = mx.slice_update(ring, mx.where(ok, x, old)[None], slot.reshape(1), axes=(0,))
            count = count + ok.astype(mx.int32)
            n = mx.minimum(count, window)
            if refresh:
                valid = (mx.arange(window) < n)[:, None]
                nf = mx.maximum(n, 1).astype(mx.float32)
                shift = mx.where(n > 0, mx.where(valid, ring, 0.0).sum(axis=0) / nf, shift)
                d = mx.where(valid, ring - shift, 0.0)
                s1, s2 = d.sum(axis=0), (d * d).sum(axis=0)
            mean = s1 / window
            variance = mx.where(count >= window, mx.maximum(mx.mean(s2 / window - mean * mean), 0.0), nan)
        mse = mse_ema = mse_output = nan
        if with_ref:
            mse = mx.mean(mx.square(out - ref))
            if w:
                mse_ema = mx.mean(mx.square(ema - ref))
            if m.trace_output:
                mse_output = mx.mean(mx.square(traced - ref))
        stats = mx.stack([loss, ok.astype(mx.float32), variance, mse, mse_ema, mse_output])
        return ema, ema_on, ok, ring, s1, s2, shift, count, stats

    return update
