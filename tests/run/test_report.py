"""The one report type: every key a run writes (whole, tiled, with and without a reference, every kind of task) is
declared in `Report`, so a reader can trust the type; and the summary line reads a report of each kind."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from dip_core.run.api import restore
from dip_core.run.report import Report
from dip_core.run.summary import summary_line
from dip_core.run.tiled import TILE_KEYS, restore_tiled
from tests.common import TINY_NET

DECLARED = set(typing.get_type_hints(Report))
H, W = 21, 27  # odd sides on purpose


def image(channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((H, W, channels)).astype(np.float32)


CASES = {
    "denoise with a reference": ("denoise", {"reference": image(seed=1)}),
    "inpaint with a mask": ("inpaint", {"mask": np.pad(np.ones((H - 6, W - 6)), 3).astype(np.float32)}),
    "sr with a reference": ("sr", {"factor": 2, "reference": np.repeat(np.repeat(image(seed=1), 2, 0), 2, 1)}),
    "poisson": ("poisson", {"peak": 30.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_key_a_run_writes_is_declared(backend, case):
    task, extra = CASES[case]
    r = restore(task, image(), backend=backend.name, device="cpu", iters=3, checkpoint_every=0, **TINY_NET, **extra)
    assert set(r.report) <= DECLARED, sorted(set(r.report) - DECLARED)
    assert summary_line(r.report).startswith(f"{task} on {backend.name}")


def test_a_tiled_report_and_its_tiles_are_declared(backend):
    r = restore_tiled("denoise", image(), 16, 4, backend=backend.name, device="cpu", iters=2, reference=image(seed=1),
                      **TINY_NET)  # fmt: skip
    assert set(r.report) <= DECLARED, sorted(set(r.report) - DECLARED)
    assert {"tiles", "tiles_total", "tile", "overlap"} <= set(r.report)
    for tile in r.report["tiles"]:
        assert set(tile) - {"box"} <= set(TILE_KEYS)
    assert "tiles" in summary_line(r.report)
