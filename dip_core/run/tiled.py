"""Images too large for one fit, restored in overlapping tiles: `restore_tiled` and its checked set-up.

Each tile is a run of its own (dip_core.run.prepare.prepare) with the same settings, seed and thread count; the
finished tiles are kept in a checkpoint after each one, so an interrupted run goes on from the next.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dip_core.fit.checkpoint import digest, load_checkpoint, save_checkpoint
from dip_core.fit.loop import StepInfo
from dip_core.problem.degrade import OpKind
from dip_core.problem.image import Image
from dip_core.problem.metrics import psnr, ssim
from dip_core.problem.presets import Preset
from dip_core.problem.registry import Task, spec_of
from dip_core.problem.tasks import Problem, ProblemError
from dip_core.run.options import RunOptions
from dip_core.run.prepare import (
    ImageLike,
    Prepared,
    Result,
    options_with,
    output_image,
    prepare,
    resumed_threads,
    set_up,
    sources_of,
    warnings_before,
    worse_than_input,
)
from dip_core.run.report import Report
from dip_core.run.tiles import Tile, blend, plan


@dataclass
class PreparedTiles:
    """A tiled run checked and set up: the whole problem, its tiles, and the first tile to fit prepared
    (checked, no network built) as every tile will be."""

    task: Task
    image: Image
    options: RunOptions  # the whole run's
    preset: Preset
    problem: Problem
    reference: np.ndarray | None
    tiles: list[Tile]
    factor: int  # output pixels per input pixel (sr), else 1
    per_tile: RunOptions  # every tile's: no tiles, no drop or colour (the mask is cut), the first tile's threads
    blur: np.ndarray | None
    first: Prepared  # the first tile with known pixels
    first_index: int
    empty: frozenset[int]  # tiles whose mask has no known pixel: kept as the input, not fitted

    @property
    def warnings(self) -> list[str]:
        """What the user should know before the run (see `Prepared.warnings`)."""
        return self.first.warnings

    def identity(self) -> dict[str, Any]:
        """What a tiled checkpoint must match to be resumed: the inputs, the settings and the tiles."""
        be = self.first.backend
        keep = {k: v for k, v in self.options.to_dict().items() if k not in ("threads", "device", "precision")}
        op = self.problem.op
        return {
            "kind": "tiles",
            "backend": be.name,
            "device": be.device,
            "precision": be.precision.value,
            "threads": be.threads,
            "options": keep,
            "tiles": [[t.top, t.left, t.height, t.width] for t in self.tiles],
            "inputs": digest(self.problem.observed, self.problem.mask, op.kernel, self.reference),
        }

    def check_resume(self, checkpoint: str | Path) -> None:
        """Raise the problem with resuming from `checkpoint` (unreadable, another run's) before the run starts."""
        load_checkpoint(checkpoint, self.identity())

    def run(
        self,
        *,
        on_step: Callable[[StepInfo], None] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> Result:
        """Restore tile after tile (see `restore_tiled`)."""
        problem, tiles, f = self.problem, self.tiles, self.factor
        run = self.identity()
        results = [t.scaled(f)(problem.corrupted) for t in tiles]
        reports: list[dict[str, Any]] = []
        if resume:
            if checkpoint is None:
                raise ProblemError("resume needs the checkpoint file to go on from")
            arrays = load_checkpoint(checkpoint, run)
            reports = json.loads(arrays["reports"].tobytes())
            for k in range(len(reports)):
                results[k] = arrays[f"tile{k}"]
        resumed = len(reports)
        for k in range(resumed, len(tiles)):
            t = tiles[k]
            box = {"box": [t.top, t.left, t.height, t.width]}
            try:  # Ctrl-C between two fits (building the next tile's network) ends the run like one within a fit
                if on_tile is not None:
                    on_tile(k, len(tiles))
                if k in self.empty:
                    reports.append({**box, "iters": 0, "seconds": 0.0, "rollbacks": 0, "skipped": "no known pixels"})
                else:
                    p = self.first if k == self.first_index else self.prepare_tile(t)
                    r = p.run(on_step=on_step)
                    if r.report["interrupted"]:
                        break  # an unfinished tile keeps its input: the tiles are all-or-nothing
                    results[k] = r.pixels
                    reports.append({**box, **_tile_summary(r.report)})
                if checkpoint is not None:
                    arrays = {f"tile{j}": results[j] for j in range(len(reports))}
                    arrays["reports"] = np.frombuffer(json.dumps(reports).encode(), np.uint8)
                    save_checkpoint(checkpoint, arrays, run)
            except KeyboardInterrupt:
                break
        return self._result(results, reports, resumed)

    def prepare_tile(self, t: Tile) -> Prepared:
        """Tile `t` as a run of its own."""
        return _prepare_tile(self.task, self.problem, self.reference, self.factor, self.per_tile, self.blur, t)

    def _result(self, results: list[np.ndarray], reports: list[dict[str, Any]], resumed: int) -> Result:
        """The tiles blended into the result, and the whole run's report."""
        task, problem, tiles, f = self.task, self.problem, self.tiles, self.factor
        finished = len(reports) == len(tiles)
        blended = blend([t.scaled(f) for t in tiles], results, problem.out_height, problem.out_width)
        out_image = output_image(self.image, blended, problem)
        be = self.first.backend
        report: Report = {
            "task": task.value,
            "backend": be.name,
            "device": be.device,
            "tiles": reports,
            "tiles_total": len(tiles),
            "tiles_resumed": resumed,
            "tile": self.options.tile,
            "overlap": self.options.overlap,
            "iters": sum(r["iters"] for r in reports),
            "seconds": sum(r["seconds"] for r in reports),
            "interrupted": not finished,
            "finished": finished,
            "rollbacks": sum(r["rollbacks"] for r in reports),
            "seed": self.options.seed,
            "precision": be.precision.value,
            "threads": be.threads,
            "size": [problem.out_height, problem.out_width],
            "preset": self.preset.to_dict(),
            "selection": "tiles",
            "result_iter": None,
            "keep_known": self.first.keep_known,
            "sources": self.first.sources,
        }
        report["ms_per_iter"] = 1000 * report["seconds"] / max(report["iters"], 1)
        if self.reference is not None:
            report["psnr_input"] = psnr(problem.corrupted, self.reference)
            report["psnr_result"] = psnr(out_image.pixels, self.reference)
            report["ssim"] = ssim(out_image.pixels, self.reference)
        report["warnings"] = self.warnings + (worse_than_input(report, self.first.preset_iters) if finished else [])
        return Result(out_image, report, None, problem, self.reference)


def _prepare_tile(
    task: Task,
    problem: Problem,
    ref: np.ndarray | None,
    f: int,
    per_tile: RunOptions,
    blur: np.ndarray | None,
    t: Tile,
) -> Prepared:
    """Tile `t` as a run of its own: the full image's mask (drawn once with --drop, or from a colour) and
    reference are cut with the tiles."""
    return prepare(
        task, t(problem.image.pixels), per_tile,
        mask=None if problem.mask is None else t(problem.mask)[..., 0],
        reference=None if ref is None else t.scaled(f)(ref),
        **({"kernel": blur} if blur is not None else {}),
    )  # fmt: skip


def prepare_tiled(
    task: Task | str,
    image: ImageLike,
    tile: int,
    overlap: int = 32,
    options: RunOptions | None = None,
    *,
    mask: ImageLike | None = None,
    reference: ImageLike | None = None,
    **changes: Any,
) -> PreparedTiles:
    """Everything `restore_tiled` does before the first step, every input and setting checked."""
    changes = {**changes, "tile": tile, "overlap": overlap}
    task, img, opts, blur, settings, problem, ref = set_up(task, image, options, changes, mask, reference)
    tiles = plan(img.height, img.width, tile, overlap)
    f = settings.factor if spec_of(task).operator is OpKind.DOWNSAMPLE else 1
    m = problem.mask
    empty = frozenset(k for k, t in enumerate(tiles) if m is not None and not t(m).any())
    first_index = min(set(range(len(tiles))) - empty)  # the whole mask has known pixels: some tile does
    per_tile = replace(opts, tile=0, drop=None, mask_color=None)
    first = _prepare_tile(task, problem, ref, f, per_tile, blur, tiles[first_index])
    per_tile = replace(per_tile, threads=first.backend.threads)  # every tile as the first: the same sums
    warnings = warnings_before(task, opts, problem)
    if empty:
        warnings.append(
            f"{len(empty)} of {len(tiles)} tiles have no known pixel: they keep the input (a larger --tile avoids it)"
        )
    first = replace(first, options=per_tile, sources=sources_of(img, mask, reference, opts, blur), warnings=warnings)
    return PreparedTiles(task, img, opts, settings, problem, ref, tiles, f, per_tile, blur, first, first_index, empty)


def restore_tiled(
    task: Task | str,
    image: ImageLike,
    tile: int,
    overlap: int = 32,
    options: RunOptions | None = None,
    *,
    mask: ImageLike | None = None,
    reference: ImageLike | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    **changes: Any,
) -> Result:
    """Restore an image too large for one fit in overlapping tiles of `tile` input pixels.

    Every tile is one `restore` with the same options, seed and thread count; the
    results are blended linearly across each `overlap`. `on_tile(index, count)` is
    called before each tile. An interrupted tile ends the run: it and the tiles
    not reached keep the corrupted input, and the report says `finished: false`.
    With `checkpoint`, the finished tiles are written there after each one, and
    `resume` goes on from the first unfinished tile.
    """
    if resume and checkpoint is not None:
        changes = {"threads": resumed_threads(options_with(options, changes)[0], checkpoint), **changes}
    tiled = prepare_tiled(task, image, tile, overlap, options, mask=mask, reference=reference, **changes)
    return tiled.run(on_step=on_step, on_tile=on_tile, checkpoint=checkpoint, resume=resume)


# What a tiled run's report keeps of each tile's (the PSNRs where the tile had a reference).
TILE_KEYS = (
    "backend", "device", "precision", "threads", "iters", "seconds", "interrupted", "rollbacks", "result_iter",
    "selection", "psnr_input", "psnr_result",
)  # fmt: skip


def _tile_summary(rep: Report) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if k in TILE_KEYS}
