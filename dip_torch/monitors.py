"""The loop's monitors on the torch device: EMA, windowed variance, MSE against a reference.

The same monitors as dip_mlx/monitors.py, written for torch: every tensor stays
on the device the step ran on; the loop gets one small vector of scalars per
step. A step that is not finite (or follows one, until the session is restored)
changes nothing.

The window's variance is kept as per-pixel sums of (x - shift) and (x - shift)^2
over the last W outputs, updated as one output enters and one leaves; `shift`
is the window's mean at the last exact recomputation (`refresh`, every W steps),
so float32 keeps its digits where the variance is small. The window is the one
tensor updated in place; the others are replaced at every step, so a step's
EMA can be kept by reference.

The slot an output goes to is counted on the host, as in dip_mlx: the window is
written by plain slice assignment, not `index_copy_`, which has no MPS kernel
before torch 2.8 and ran about 100x slower on MPS than on the CPU after that
(pytorch/pytorch#185750).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dip_core.backend import Monitoring, ema_count

# A step's scalars come back as one vector, in the order of dip_core.backend.STAT_FIELDS.
_STATE = ("ema", "ema_n", "healthy", "ring", "s1", "s2", "shift", "count")


class TorchMonitors:
    """Monitor state (tensors on `device`) for outputs of shape `shape` (1, C, h, w), and its update."""

    def __init__(self, monitoring: Monitoring, shape: tuple[int, ...], device: torch.device) -> None:
        self.monitoring = monitoring
        w = monitoring.window
        pixels = math.prod(shape)
        size = (pixels,) if w else (0,)

        def zeros(*s: int) -> torch.Tensor:
            return torch.zeros(s, device=device)

        self.ema = zeros(*shape)
        self.ema_n = torch.zeros((), device=device)  # outputs averaged so far
        self.healthy = torch.ones((), dtype=torch.bool, device=device)
        self.ring = zeros(w, pixels) if w else zeros(0)
        self.s1, self.s2, self.shift = zeros(*size), zeros(*size), zeros(*size)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.pushes = 0  # outputs queued into the window (= its count while every step is finite)
        ref = monitoring.reference
        self.reference = None
        if ref is not None:
            self.reference = torch.from_numpy(np.ascontiguousarray(np.asarray(ref, np.float32).transpose(2, 0, 1)))
            self.reference = self.reference[None].to(device)
        self._nan = torch.tensor(math.nan, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, out: torch.Tensor, traced: torch.Tensor | None, refresh: bool) -> torch.Tensor:
        """Take in one step; returns its scalars (dip_core.backend.STAT_FIELDS), on the device."""
        m = self.monitoring
        ok = self.healthy & torch.isfinite(loss) & torch.isfinite(out).all()
        self.healthy = ok
        w = m.exp_weight
        if w:
            k = m.ema_warmup
            n = self.ema_n
            weight = torch.clamp(n / (n + k), max=w) if k else w  # dip_core.backend.ema_weight
            blended = torch.where(n > 0, weight * self.ema + (1 - weight) * out, out)
            self.ema = torch.where(ok, blended, self.ema)
            self.ema_n = n + ok.float()
        variance = self._nan
        if m.window:
            variance = self._push(out.reshape(-1), ok, m.window, refresh)
        mse = mse_ema = mse_output = self._nan
        ref = self.reference
        if ref is not None:
            mse = torch.mean(torch.square(out - ref))
            if w:
                mse_ema = torch.mean(torch.square(self.ema - ref))
            if traced is not None:
                mse_output = torch.mean(torch.square(traced - ref))
        return torch.stack([loss.detach().float(), ok.float(), variance, mse, mse_ema, mse_output])

    def _push(self, x: torch.Tensor, ok: torch.Tensor, window: int, refresh: bool) -> torch.Tensor:
        # The slot on the host: a non-finite step rewrites its slot unchanged, and the rollback that follows it
        # sets `pushes` back to the count the window really took in, so this is count % window where it matters.
        slot = self.pushes % window
        old = self.ring[slot]  # a view: read before the slot is written below
        self.shift = torch.where(ok & (self.count == 0), x, self.shift)
        dx = x - self.shift
        do = torch.where(self.count >= window, old - self.shift, 0.0)
        self.s1 = torch.where(ok, self.s1 + dx - do, self.s1)
        self.s2 = torch.where(ok, self.s2 + dx * dx - do * do, self.s2)
        self.ring[slot] = torch.where(ok, x, old)
        self.count = self.count + ok.long()
        self.pushes += 1
        if refresh:
            # Exactly, around the mean of the slots filled so far (in order), which becomes the shift;
            # kept as they were while a non-finite step waits for its rollback.
            n = min(self.pushes, window)
            var, mean = torch.var_mean(self.ring[:n], dim=0, correction=0)
            self.shift = torch.where(self.healthy, mean, self.shift)
            self.s1 = torch.where(self.healthy, 0.0, self.s1)
            self.s2 = torch.where(self.healthy, var * n, self.s2)
        mean = self.s1 / window
        variance = torch.clamp(torch.mean(self.s2 / window - mean * mean), min=0.0)
        return torch.where(self.count >= window, variance, self._nan)

    def keep_ema(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The EMA and how many outputs it has averaged (what a snapshot carries; never changed in place)."""
        return self.ema, self.ema_n

    def restore(self, ema: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Back to a snapshot's EMA; the steps after it are monitored again (a rollback: waits for the device)."""
        self.ema, self.ema_n = ema
        self.healthy = torch.ones_like(self.healthy)
        self.pushes = int(self.count)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).detach().cpu().numpy().copy() for k in _STATE}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        arrays = {**arrays, "ema_n": ema_count(arrays)}  # a checkpoint before format 5 has `ema_on`
        for k in _STATE:
            setattr(self, k, torch.from_numpy(arrays[k].copy()).to(self.healthy.device))
        self.pushes = int(arrays["count"])
