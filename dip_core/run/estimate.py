"""How long a run will take, from the measured time of its first steps, and what the cheaper choices the
paper allows (fewer iterations, a smaller network, a downscaled image) take on the same machine.

Every figure comes from timed steps on this machine: the steps of a network do not scale with its FLOPs
alone (a small network is bound by memory traffic: measured 4x slower than its FLOPs predict), so each
alternative is timed on a session of its own. Only the tiles of one run are scaled by their FLOPs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from dip_core.backend import Monitoring, Session
from dip_core.fit.settings import Stop
from dip_core.model.config import NETS, SkipConfig
from dip_core.model.flops import step_flops
from dip_core.problem.degrade import resize
from dip_core.problem.image import Image, from_array
from dip_core.problem.registry import Task, spec_of
from dip_core.run.prepare import ImageLike, Prepared, prepare
from dip_core.run.tiled import PreparedTiles, prepare_tiled
from dip_core.run.tiles import plan

# Alternatives are offered when a run is estimated to take longer than this.
LONG_RUN_S = 600.0


@dataclass(frozen=True)
class Alternative:
    change: str  # what to do differently, as the user would type or do it
    estimate: Estimate
    note: str  # what it costs in quality


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.4 h`, `2.1 days`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """The (height, width) of each fit of a run: the whole image, or each tile."""
    if not tile:
        return [(height, width)]
    return [(t.height, t.width) for t in plan(height, width, tile, overlap)]


def cost(cfg: SkipConfig, sizes: list[tuple[int, int]], iters: int, ms: float, ref: int) -> float:
    """Seconds for `iters` steps of each fit in `sizes`, from `ms` per step of a fit of `ref` FLOPs."""
    return sum(ms * step_flops(cfg, h, w) / ref * iters for h, w in sizes) / 1000


@dataclass(frozen=True)
class Estimate:
    """A run's expected time: measured ms per step of its first fit, times its steps."""

    task: Task
    cfg: SkipConfig
    height: int  # the output's size
    width: int
    tile: int  # 0: one fit
    overlap: int
    iters: int  # planned per fit (the most, with auto-stop)
    ms_per_iter: float  # measured on the first fit
    auto_stop: bool

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return boxes(self.height, self.width, self.tile, self.overlap)

    @property
    def seconds(self) -> float:
        return cost(self.cfg, self.sizes, self.iters, self.ms_per_iter, self._ref)

    @property
    def _ref(self) -> int:
        h, w = self.sizes[0]
        return step_flops(self.cfg, h, w)

    def line(self) -> str:
        """One line: the measured step, the steps and the total."""
        n = len(self.sizes)
        tiles = f" x {n} tiles" if n > 1 else ""
        most = " at most (auto-stop may end sooner)" if self.auto_stop else ""
        return (
            f"estimate: {self.ms_per_iter / 1000:.3g} s/iter x {self.iters} iterations{tiles} = "
            f"{duration(self.seconds)}{most}"
        )

    def halved(self) -> Estimate:
        """The same run with half the iterations: the cheapest choice, and exact arithmetic."""
        return replace(self, iters=max(1, self.iters // 2))


# Steps are timed for at least this long (and at least MIN_STEPS of them), so that one slow step does not
# decide an estimate.
TIME_FOR_S = 0.5
MIN_STEPS = 2
MAX_STEPS = 50


def time_steps(session: Session, monitoring: Monitoring) -> float:
    """ms per step of `session` (with the loop's monitors), after one step of warm-up (compilation,
    autotuning), over at least TIME_FOR_S and MIN_STEPS steps. The session is spent: time a session of its
    own, not the run's."""
    session.start(monitoring)
    session.read(session.step())
    start = time.perf_counter()
    steps = 0
    while steps < MIN_STEPS or (time.perf_counter() - start < TIME_FOR_S and steps < MAX_STEPS):
        session.read(session.step())
        steps += 1
    return 1000 * (time.perf_counter() - start) / steps


def measure(prepared: Prepared | PreparedTiles) -> Estimate:
    """Time the first fit of a prepared run on a session of its own."""
    p = prepared.first if isinstance(prepared, PreparedTiles) else prepared
    fs = p.fit_settings
    ms = time_steps(
        p.backend.session(p.spec), Monitoring(exp_weight=fs.exp_weight, ema_warmup=fs.ema_warmup, window=fs.window)
    )
    return estimate_of(prepared, ms)


def estimate_of(prepared: Prepared | PreparedTiles, ms_per_iter: float) -> Estimate:
    """The estimate of a prepared run from the measured ms per step of its first fit."""
    tile = overlap = 0
    if isinstance(prepared, PreparedTiles):
        p, f = prepared.first, prepared.factor
        tile, overlap = f * prepared.options.tile, f * prepared.options.overlap
    else:
        p = prepared
    h, w = prepared.problem.out_height, prepared.problem.out_width
    auto = p.fit_settings.stop is Stop.AUTO
    return Estimate(p.task, p.cfg, h, w, tile, overlap, p.preset.iters, ms_per_iter, auto)


def alternatives(
    prepared: Prepared | PreparedTiles, base: Estimate, mask: ImageLike | None = None
) -> list[Alternative]:
    """The paper's cheaper choices for a prepared run (whose estimate is `base`), each timed on this machine
    (a few steps each); a choice that is not cheaper here is left out."""
    p = prepared.first if isinstance(prepared, PreparedTiles) else prepared
    opts, task, img = prepared.options, p.task, prepared.image

    def like(task: Task, image: Image, **changes: Any) -> Prepared | PreparedTiles:
        o = replace(opts, **changes)
        if o.tile:
            return prepare_tiled(task, image, o.tile, o.overlap, o, mask=mask)
        return prepare(task, image, o, mask=mask)

    half_iters = base.halved()
    alts = [Alternative(f"--iters {half_iters.iters}", half_iters, "fits less: less detail, or more noise left")]
    small = NETS["small"].with_(in_channels=p.cfg.in_channels, out_channels=p.cfg.out_channels)
    h, w = base.sizes[0]
    if step_flops(small, h, w) < step_flops(p.cfg, h, w):
        note = "3 scales of 16 channels: a weaker prior, softer results"
        alts.append(Alternative("--net small", measure(like(task, img, net="small")), note))
    # Downscaling averages the corruption away only where it is noise-like (the registry's estimate_downscaled).
    if spec_of(task).estimate_downscaled and min(img.height, img.width) >= 64:
        half = from_array(resize(img.pixels, img.height // 2, img.width // 2))
        note = "a quarter of the pixels, the noise averaged down; the result is half the size"
        alts.append(Alternative("the image downscaled 2x, restored at that size", measure(like(task, half)), note))
        if not opts.tile or opts.tile // 2 >= 8:  # tiles (and overlaps) of half the input pixels must exist
            sr_options = {"factor": 2, "preset": None, "net": None, "iters": None, "input_channels": None}
            # Tiles of half the input pixels: the same fits at full size.
            sr = measure(like(Task.SR, half, tile=opts.tile // 2, overlap=opts.overlap // 2, **sr_options))
            note = "full size again; its network runs at full size"
            alts.append(Alternative("`dip run sr --factor 2` on the downscaled image, back to full size", sr, note))
    return [a for a in alts if a.estimate.seconds < base.seconds]
