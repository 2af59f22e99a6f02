"""The Python API: `restore(task, image, options, **changes) -> Result`, one image or in tiles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dip_core.fit.loop import StepInfo
from dip_core.problem.image import Image
from dip_core.problem.registry import Task
from dip_core.problem.tasks import ProblemError
from dip_core.run.options import RunOptions
from dip_core.run.prepare import ImageLike, Result, options_with, prepare, resumed_threads
from dip_core.run.tiled import restore_tiled


def restore(
    task: Task | str,
    image: ImageLike,
    options: RunOptions | None = None,
    *,
    mask: ImageLike | None = None,
    reference: ImageLike | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_save: Callable[[int, Image], None] | None = None,
    save_to: str | Path | None = None,
    **changes: Any,
) -> Result:
    """Restore one image with Deep Image Prior.

    `task` is one of denoise, jpeg, inpaint, restore, sr, deblur. `options` (a
    RunOptions; keyword arguments change its fields) holds every setting: backend,
    device, precision, threads, seed, the preset and any of its fields (iters, lr,
    reg_noise_std, exp_weight, backtrack, net, input, ...), the choice of the result
    (keep, stop, window, patience, noise_sigma), the mask's handling (strict_mask,
    keep_known), padding, tiles and outputs on the way.
    `kernel` may also be a numpy array. `save_to` (a path) gets the result when
    the run ends, and with `options.save_every` the result so far every that many
    iterations too, as `on_save(i, image)` does (`result.save(path)` writes it
    afterwards). With
    `checkpoint` and `options.checkpoint_every`, the whole run state is written
    there every that many iterations; `resume` goes on from that file to the same
    result an uninterrupted run gives. A tiled run keeps its finished tiles in
    `checkpoint` after every tile and `resume` goes on from the next one.
    """
    opts, _ = options_with(options, changes)
    if opts.tile:
        if opts.save_every or opts.checkpoint_every:
            raise ProblemError("--save-every and --checkpoint-every do not work with tiles")
        rest = {k: v for k, v in changes.items() if k not in ("tile", "overlap")}  # given as arguments
        tiled = restore_tiled(task, image, opts.tile, opts.overlap, options, mask=mask, reference=reference,
                              on_step=on_step, checkpoint=checkpoint, resume=resume, **rest)  # fmt: skip
        if save_to is not None:
            tiled.save(save_to)
        return tiled
    if resume and checkpoint is not None:
        changes = {"threads": resumed_threads(opts, checkpoint), **changes}
    p = prepare(task, image, options, mask=mask, reference=reference, **changes)
    return p.run(checkpoint=checkpoint, resume=resume, on_step=on_step, on_save=on_save, save_to=save_to)
