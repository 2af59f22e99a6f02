"""Large images in overlapping tiles: one fit per tile, blended without seams.

Each tile is restored on its own (its own network, same settings and seed);
where tiles overlap their results are mixed with weights that ramp linearly
from one tile to the next across the overlap, so no pixel sees a jump from one
fit to another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dip_core.errors import UserError


class TileError(UserError):
    """Tile settings that cannot cover the image."""


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    def scaled(self, f: int) -> Tile:
        return Tile(self.top * f, self.left * f, self.height * f, self.width * f)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[self.top : self.top + self.height, self.left : self.left + self.width]


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of tiles along one side: `tile` long, evenly spread, overlapping by at least `overlap`."""
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))  # the fewest tiles that keep the overlap
    starts = [round(k * (length - tile) / (n - 1)) for k in range(n)]
    return [(s, s + tile) for s in starts]


def plan(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles that cover an image, row by row."""
    if tile < 8:
        raise TileError(f"tiles must be at least 8 pixels, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise TileError(
            f"the overlap (--overlap, 32 by default) must be between 0 and half the tile ({tile // 2}), got {overlap}"
        )
    rows, cols = spans(height, tile, overlap), spans(width, tile, overlap)
    return [Tile(top, left, bottom - top, right - left) for top, bottom in rows for left, right in cols]


def _ramp(start: int, end: int, neighbours: list[tuple[int, int]]) -> np.ndarray:
    """Weights along one side of a tile: 1 inside, rising/falling linearly across each overlap."""
    n = end - start
    w = np.ones(n, np.float64)
    pos = np.arange(start, end) + 0.5
    for s, e in neighbours:
        if s < start < e <= end:  # a neighbour before: rise across [start, e)
            w = np.minimum(w, np.clip((pos - start) / (e - start), 0, 1))
        elif start <= s < end < e:  # a neighbour after: fall across [s, end)
            w = np.minimum(w, np.clip((end - pos) / (end - s), 0, 1))
    return w


def weights(tiles: list[Tile], t: Tile) -> np.ndarray:
    """(h, w, 1) blending weights of tile `t` among `tiles`."""
    rows = [(o.top, o.top + o.height) for o in tiles if o.left == t.left and o != t]
    cols = [(o.left, o.left + o.width) for o in tiles if o.top == t.top and o != t]
    wy = _ramp(t.top, t.top + t.height, rows)
    wx = _ramp(t.left, t.left + t.width, cols)
    return (wy[:, None] * wx[None, :])[..., None]


def blend(tiles: list[Tile], results: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """One image from overlapping tile results (the weights are normalised where tiles meet)."""
    channels = results[0].shape[2]
    acc = np.zeros((height, width, channels), np.float64)
    total = np.zeros((height, width, 1), np.float64)
    for t, r in zip(tiles, results, strict=True):
        w = weights(tiles, t)
        acc[t.top : t.top + t.height, t.left : t.left + t.width] += w * r
        total[t.top : t.top + t.height, t.left : t.left + t.width] += w
    return (acc / total).astype(np.float32)


def run_tiles(
    tiles: list[Tile], restore_tile: Callable[[int, Tile], Any], on_tile: Callable[[int, int], None] | None = None
) -> list[Any]:
    """Restore every tile in turn (`restore_tile(index, tile)`), telling `on_tile(index, count)` before each."""
    out = []
    for k, t in enumerate(tiles):
        if on_tile is not None:
            on_tile(k, len(tiles))
        out.append(restore_tile(k, t))
    return out
