"""No-reference choice of the output: the windowed moving variance of outputs (ES-WMV).

Wang et al. (TMLR 2023) observe that the variance of the last W outputs falls
while the network fits the image and rises again once it starts fitting the
corruption; its minimum marks a good stopping point without a clean reference.
"""

from __future__ import annotations

import numpy as np


class WindowVariance:
    """Mean squared distance of the last `window` outputs to their mean, updated in O(pixels)."""

    def __init__(self, window: int = 100) -> None:
        if window < 2:
            raise ValueError("the variance window needs at least 2 outputs")
        self.window = window
        self._ring: np.ndarray | None = None
        self._sum: np.ndarray | None = None  # float64 running sum of the outputs in the window
        self._sumsq = 0.0  # running sum of their squared norms
        self._count = 0

    def push(self, x: np.ndarray) -> float | None:
        """Add an output; the window's variance once it is full, else None."""
        flat = np.asarray(x, np.float32).ravel()
        if self._ring is None or self._sum is None:
            self._ring = np.empty((self.window, flat.size), np.float32)
            self._sum = np.zeros(flat.size, np.float64)
        slot = self._count % self.window
        if self._count >= self.window:
            old = self._ring[slot]
            self._sum -= old
            self._sumsq -= float(np.dot(old.astype(np.float64), old))
        self._ring[slot] = flat
        self._sum += flat
        self._sumsq += float(np.dot(flat.astype(np.float64), flat))
        self._count += 1
        if self._count % (50 * self.window) == 0:  # wipe accumulated rounding now and then
            self._sum = self._ring.astype(np.float64).sum(axis=0)
            self._sumsq = float(np.square(self._ring.astype(np.float64)).sum())
        if self._count < self.window:
            return None
        n = self.window
        var = (self._sumsq - float(np.dot(self._sum, self._sum)) / n) / (n * flat.size)
        return max(var, 0.0)

    def state(self) -> tuple[dict[str, np.ndarray], tuple[float, int]]:
        """The window's contents and sums, exactly (checkpoints)."""
        if self._ring is None or self._sum is None:
            return {}, (self._sumsq, self._count)
        arrays = {"ring": self._ring.copy(), "sum": self._sum.copy()}
        return arrays, (self._sumsq, self._count)

    def load_state(self, arrays: dict[str, np.ndarray], scalars: tuple[float, int]) -> None:
        """Continue from what `state` returned."""
        if "ring" in arrays:
            if arrays["ring"].shape[0] != self.window:
                raise ValueError(f"a window of {arrays['ring'].shape[0]} outputs cannot go on as one of {self.window}")
            self._ring, self._sum = arrays["ring"].copy(), arrays["sum"].copy()
        self._sumsq, self._count = float(scalars[0]), int(scalars[1])
