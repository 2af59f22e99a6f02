"""Tiles: cover the image, blend without seams, and give the input's size back."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dip_core.run.tiled import restore_tiled
from dip_core.run.tiles import TileError, blend, plan, spans
from tests.conftest import BACKENDS


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(10, 16, 4), (16, 16, 4), (50, 24, 8), (101, 32, 16), (33, 8, 0)]
)
def test_spans_cover_the_side_with_the_overlap(length, tile, overlap):
    s = spans(length, tile, overlap)
    assert s[0][0] == 0 and s[-1][1] == length
    assert all(e - b == min(tile, length) for b, e in s)
    for (b0, e0), (b1, _) in itertools.pairwise(s):
        assert e0 - b1 >= overlap and b1 > b0  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize(("tile", "overlap"), [(4, 0), (16, 9), (16, -1)])
def test_bad_tile_settings_are_refused(tile, overlap):
    with pytest.raises(TileError):
        plan(40, 40, tile, overlap)


def test_blending_constant_tiles_gives_a_ramp_not_a_step():
    tiles = plan(20, 61, 24, 12)
    results = [np.full((t.height, t.width, 1), float(k), np.float32) for k, t in enumerate(tiles)]
    out = blend(tiles, results, 20, 61)[0, :, 0]
    assert out[0] == 0 and out[-1] == len(tiles) - 1
    steps = np.diff(out)
    # A hard cut would jump by 1; blended, the change is spread over each overlap (where up
    # to three evenly spread tiles meet, their values differ by at most 2).
    assert (steps >= 0).all() and steps.max() <= 2 / 12 + 1e-6
    same = blend(tiles, [np.ones_like(r) for r in results], 20, 61)
    assert np.allclose(same, 1)  # the weights are a partition of unity


def smooth(h, w):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.5 + 0.3 * np.sin(3 * xx + yy), 0.5 + 0.3 * np.cos(2 * yy - xx), 0.3 + 0.4 * xx], -1).astype(
        np.float32
    )


def _excess_jumps(out, clean):
    """Per column: mean |horizontal difference| of the result beyond that of the clean image."""
    return np.abs(np.diff(out, axis=1)).mean(axis=(0, 2)) - np.abs(np.diff(clean, axis=1)).mean(axis=(0, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tiled_run_of_a_smooth_image_shows_no_seam(backend):
    clean = smooth(36, 72)
    common = {"backend": backend, "device": "cpu", "iters": 150, "net": "tiny", "input_channels": 4, "exp_weight": 0.0}
    # Without overlap the cut between the first two tiles (column 36) is the largest jump of the image ...
    hard = restore_tiled("denoise", clean, 36, 0, **common)
    ex = _excess_jumps(hard.pixels, clean)
    assert int(np.argmax(ex)) == 35
    # ... with the overlap blended, no column where tiles meet stands out from the rest.
    r = restore_tiled("denoise", clean, 36, 12, **common)
    assert r.pixels.shape == clean.shape and len(r.report["tiles"]) == 3
    ex = _excess_jumps(r.pixels, clean)
    edges = sorted({t[1] for t in (x["box"] for x in r.report["tiles"]) if t[1] > 0})
    edges += sorted({t[1] + t[3] for t in (x["box"] for x in r.report["tiles"]) if t[1] + t[3] < 72})
    others = np.delete(ex, [e - 1 for e in edges])
    assert ex[[e - 1 for e in edges]].max() <= others.max()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("task", "options"), [("sr", {"factor": 2}), ("restore", {"drop": 0.5})])
def test_tiled_tasks_come_back_at_the_output_size(backend, task, options):
    x = smooth(27, 41)
    r = restore_tiled(task, x, 16, 4, backend=backend, device="cpu", iters=3, net="tiny", input_channels=4, **options)
    f = options.get("factor", 1)
    assert r.pixels.shape == (27 * f, 41 * f, 3) and np.isfinite(r.pixels).all()
    assert len(r.report["tiles"]) == len(plan(27, 41, 16, 4))
