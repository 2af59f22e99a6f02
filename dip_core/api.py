"""The Python API: `restore(task, image, options, **changes) -> Result`."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from dip_core.backend import Backend, Session, SessionSpec, get_backend
from dip_core.checkpoint import Checkpointing, digest, load_checkpoint
from dip_core.config import SkipConfig, load_config
from dip_core.degrade import parse_kernel, resize
from dip_core.fit import FitResult, FitSettings, StepInfo, fit
from dip_core.image import Image, from_array, load_image, save_image
from dip_core.inputs import make_input
from dip_core.memory import check_memory
from dip_core.metrics import noise_sigma_estimate, psnr, ssim
from dip_core.options import RunOptions, Stop
from dip_core.padding import Crop, pad_problem
from dip_core.params import count_params
from dip_core.presets import Preset, Task, preset_for
from dip_core.tasks import Problem, ProblemError, make_problem, mask_from_color
from dip_core.tiles import blend, plan
from dip_core.weights import init_weights

ImageLike = str | Path | np.ndarray | Image


@dataclass
class Result:
    image: Image  # the restored image, in the input's mode (alpha carried through)
    report: dict[str, Any]  # everything measured and every setting used
    fit: FitResult | None  # None for a tiled run (one fit per tile)
    problem: Problem
    reference: np.ndarray | None = None

    @property
    def pixels(self) -> np.ndarray:
        return self.image.pixels


def as_image(value: ImageLike, what: str = "image") -> Image:
    if isinstance(value, Image):
        return value
    if isinstance(value, (str, Path)):
        return load_image(value)
    if isinstance(value, np.ndarray):
        return from_array(value)
    raise ProblemError(f"{what} must be a path, a numpy array or a dip Image, got {type(value).__name__}")


def resolve_preset(task: Task | str, preset: str | None = None, factor: int | None = None, **overrides: Any) -> Preset:
    """The task's preset (or the named one) with overrides applied; None values are ignored."""
    base = preset_for(task, preset, factor)
    if factor is not None:
        overrides["factor"] = factor
    return base.override(**overrides)


def _noise_level(task: Task, problem: Any, given: float | None) -> tuple[float | None, str | None]:
    """Denoising: the noise's standard deviation (image units) for the overfitting check, and its source."""
    if task is not Task.DENOISE:
        return None, None
    if given is not None:
        return given / 255, "given"
    return noise_sigma_estimate(problem.observed), "estimated"


@dataclass
class Prepared:
    """A run set up and not started: the session, what `fit` gets, and what the report needs."""

    task: Task
    image: Image
    options: RunOptions
    preset: Preset  # with the overrides applied
    problem: Problem
    reference: np.ndarray | None
    cfg: SkipConfig
    backend: Backend
    session: Session
    fit_settings: FitSettings
    padded: Problem  # the problem at the size the network runs at
    crop: Crop
    noise_source: str | None  # denoising: where fit_settings.noise_sigma came from


def prepare(
    task: Task | str,
    image: ImageLike,
    options: RunOptions | None = None,
    *,
    mask: ImageLike | None = None,
    reference: ImageLike | None = None,
    **changes: Any,
) -> Prepared:
    """Everything `restore` does before the first step (same arguments, no tiles): the session on its
    device and the loop's settings, e.g. to time the loop as `dip run` runs it."""
    opts, blur = _options(options, changes)
    task = _task(task)
    img = as_image(image)
    settings = resolve_preset(task, opts.preset, opts.factor, **opts.overrides())
    problem = _problem(task, img, settings, opts, mask, blur)
    ref = _reference(reference, problem)
    cfg = load_config(settings.net).with_(in_channels=settings.input_channels, out_channels=img.channels)
    padded, crop = pad_problem(problem, cfg, opts.pad)
    h, w = padded.out_height, padded.out_width
    be = get_backend(opts.backend, opts.device, opts.precision, opts.threads)
    check_memory(cfg, h, w, be, window=opts.window)  # the variance monitor keeps `window` outputs on the device
    weights = init_weights(cfg, opts.seed)
    z = make_input(settings.input, settings.input_channels, h, w, seed=opts.seed + 1)
    spec = SessionSpec(
        cfg, weights, z, padded.observed, padded.op, settings.lr, settings.reg_noise_std, opts.seed,
        crop=(crop.top, crop.left, crop.height, crop.width), precision=be.precision,
    )  # fmt: skip
    noise, noise_source = _noise_level(task, problem, opts.noise_sigma)
    fit_settings = FitSettings(
        iters=settings.iters,
        exp_weight=settings.exp_weight,
        backtrack=settings.backtrack,
        backtrack_db=settings.backtrack_db,
        check_every=settings.check_every,
        lr=settings.lr,
        keep=opts.keep,
        stop=opts.stop or default_stop(task, opts.iters),
        patience=opts.patience,
        window=opts.window,
        trace_output=opts.trace_output,
        noise_sigma=noise,
        save_every=opts.save_every,
    )
    return Prepared(
        task, img, opts, settings, problem, ref, cfg, be, be.session(spec), fit_settings, padded, crop, noise_source
    )


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
    device, precision, seed, the preset and any of its fields (iters, lr,
    reg_noise_std, exp_weight, backtrack, net, input, ...), the choice of the result
    (keep, stop, window, patience, noise_sigma), padding, tiles and outputs on the way.
    `kernel` may also be a numpy array. Every `options.save_every` iterations the
    result so far goes to `on_save(i, image)`, or is written to `save_to`. With
    `checkpoint` and `options.checkpoint_every`, the whole run state is written
    there every that many iterations; `resume` goes on from that file to the same
    result an uninterrupted run gives.
    """
    opts, _ = _options(options, changes)
    if opts.tile:
        if checkpoint is not None or resume or opts.save_every:
            raise ProblemError("checkpoints, --resume and --save-every do not work with tiles yet")
        return restore_tiled(task, image, opts.tile, opts.overlap, options, mask=mask, reference=reference,
                             on_step=on_step, **changes)  # fmt: skip
    p = prepare(task, image, options, mask=mask, reference=reference, **changes)
    task, opts, settings, be, ref = p.task, p.options, p.preset, p.backend, p.reference
    saving = on_save is not None or save_to is not None
    fit_settings = p.fit_settings if saving else replace(p.fit_settings, save_every=0)
    stop, noise = fit_settings.stop, fit_settings.noise_sigma
    ckpt = None
    if checkpoint is not None:
        run = {
            "task": task.value,
            "backend": be.name,
            "device": be.device,
            "precision": be.precision.value,
            "seed": opts.seed,
            "preset": {k: v for k, v in settings.to_dict().items() if k not in ("iters", "note")},
            "net": p.cfg.to_dict(),
            "fit": {
                "keep": opts.keep.value,
                "stop": stop.value,
                "window": opts.window,
                "patience": opts.patience,
                "trace": opts.trace_output,
                "noise_sigma": noise,
            },
            "pad": opts.pad.value,
            "inputs": digest(p.padded.observed, p.padded.op.mask, p.padded.op.kernel, ref),
        }
        arrays = load_checkpoint(checkpoint, run) if resume else None
        every = opts.checkpoint_every
        if arrays is not None and not every:
            every = int(arrays.get("checkpoint/every", 0))
        ckpt = Checkpointing(Path(checkpoint), every, run, arrays)
    elif resume:
        raise ProblemError("resume needs the checkpoint file to go on from")

    def saved(i: int, pixels: np.ndarray) -> None:
        result_so_far = output_image(p.image, pixels, p.problem)
        if save_to is not None:
            save_image(save_to, result_so_far)
        if on_save is not None:
            on_save(i, result_so_far)

    result = fit(p.session, fit_settings, reference=ref, on_step=on_step, checkpoint=ckpt, on_save=saved)
    out_image = output_image(p.image, result.result, p.problem)
    report = _report(task, be, p.cfg, settings, opts, p.problem, result, ref, out_image)
    report["stopping"] = {"stop": stop.value, "window": opts.window, "patience": opts.patience}
    if noise is not None:
        report["stopping"].update({"noise_sigma": 255 * noise, "noise_sigma_source": p.noise_source})
    size = [p.padded.out_height, p.padded.out_width]
    report["padding"] = {"mode": opts.pad.value, "size": size, "offset": [p.crop.top, p.crop.left]}
    if ckpt is not None:
        report["checkpoint"] = {"path": str(ckpt.path), "every": ckpt.every, "resumed": ckpt.resume is not None}
    return Result(out_image, report, result, p.problem, ref)


def _options(options: RunOptions | None, changes: dict[str, Any]) -> tuple[RunOptions, np.ndarray | None]:
    """The run's options with keyword changes, and a blur kernel given as an array (a spec string is an option)."""
    kernel = changes.get("kernel")
    if isinstance(kernel, np.ndarray):
        return RunOptions.of(options, **{k: v for k, v in changes.items() if k != "kernel"}), kernel
    return RunOptions.of(options, **changes), None


AUTO_STOP_TASKS = frozenset({Task.DENOISE, Task.JPEG, Task.RESTORE, Task.SR})


def default_stop(task: Task | str, iters: int | None) -> Stop:
    """ES-WMV auto-stop where it was measured to help (denoise, jpeg, restore, sr) unless an iteration count is given.

    The preset's count is then the most the run may take.
    """
    return Stop.AUTO if Task(task) in AUTO_STOP_TASKS and iters is None else Stop.FIXED


def _task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ProblemError(f"unknown task {task!r}; choose one of {', '.join(t.value for t in Task)}") from None


def _problem(
    task: Task, img: Image, settings: Preset, opts: RunOptions, mask: ImageLike | None, blur: np.ndarray | None
) -> Problem:
    if mask is not None and opts.mask_color is not None:
        raise ProblemError("give either a mask or a mask colour, not both")
    mask_img = as_image(mask, "mask") if mask is not None else None
    if opts.mask_color is not None:
        mask_img = mask_from_color(img, opts.mask_color)
    kernel = blur if blur is not None else (parse_kernel(opts.kernel) if opts.kernel is not None else None)
    factor = settings.factor if task is Task.SR else None
    return make_problem(task, img, mask=mask_img, factor=factor, kernel=kernel, drop=opts.drop, seed=opts.seed)


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
    **changes: Any,
) -> Result:
    """Restore an image too large for one fit in overlapping tiles of `tile` input pixels.

    Every tile is one `restore` with the same options (and seed); the results
    are blended linearly across each `overlap`. `on_tile(index, count)` is
    called before each tile. An interrupted tile ends the run: tiles not reached
    keep the corrupted input.
    """
    if changes.get("checkpoint") is not None or changes.get("resume"):
        raise ProblemError("checkpoints and --resume do not work with tiles yet")
    opts, blur = _options(options, changes)
    task = _task(task)
    img = as_image(image)
    settings = resolve_preset(task, opts.preset, opts.factor, **opts.overrides())
    problem = _problem(task, img, settings, opts, mask, blur)
    ref = _reference(reference, problem)
    tiles = plan(img.height, img.width, tile, overlap)
    f = settings.factor if task is Task.SR else 1
    # The full image's mask (drawn once with --drop, or from a colour) is cut with the tiles.
    per_tile = replace(opts, tile=0, drop=None, mask_color=None)
    clean = problem.image.pixels
    results = [t.scaled(f)(problem.corrupted) for t in tiles]
    reports: list[dict[str, Any]] = []
    for k, t in enumerate(tiles):
        if on_tile is not None:
            on_tile(k, len(tiles))
        r = restore(
            task, t(clean), per_tile, mask=None if problem.mask is None else t(problem.mask)[..., 0],
            reference=None if ref is None else t.scaled(f)(ref), on_step=on_step,
            **({"kernel": blur} if blur is not None else {}),
        )  # fmt: skip
        results[k] = r.fit.result
        reports.append({"box": [t.top, t.left, t.height, t.width], **_tile_summary(r.report)})
        if r.report["interrupted"]:
            break
    blended = blend([t.scaled(f) for t in tiles], results, problem.out_height, problem.out_width)
    out_image = output_image(img, blended, problem)
    report: dict[str, Any] = {
        "task": task.value,
        "backend": reports[0]["backend"],
        "device": reports[0]["device"],
        "tiles": reports,
        "tile": tile,
        "overlap": overlap,
        "iters": sum(r["iters"] for r in reports),
        "seconds": sum(r["seconds"] for r in reports),
        "interrupted": any(r["interrupted"] for r in reports) or len(reports) < len(tiles),
        "rollbacks": sum(r["rollbacks"] for r in reports),
        "seed": opts.seed,
        "precision": reports[0]["precision"],
        "size": [problem.out_height, problem.out_width],
        "preset": settings.to_dict(),
        "selection": "tiles",
        "result_iter": None,
    }
    report["ms_per_iter"] = 1000 * report["seconds"] / max(report["iters"], 1)
    if ref is not None:
        report.update(
            psnr_input=psnr(problem.corrupted, ref),
            psnr_result=psnr(out_image.pixels, ref),
            ssim=ssim(out_image.pixels, ref),
        )
    return Result(out_image, report, None, problem, ref)


def _tile_summary(rep: dict[str, Any]) -> dict[str, Any]:
    keys = ("backend", "device", "precision", "iters", "seconds", "interrupted", "rollbacks", "result_iter")
    keys += ("selection",)
    out = {k: rep[k] for k in keys}
    for k in ("psnr_input", "psnr_result"):
        if k in rep:
            out[k] = rep[k]
    return out


def _reference(reference: ImageLike | None, problem: Problem) -> np.ndarray | None:
    if reference is None:
        return problem.image.pixels if problem.simulated else None  # --drop: the clean input is the truth
    ref = as_image(reference, "reference")
    if (ref.height, ref.width) != (problem.out_height, problem.out_width):
        raise ProblemError(
            f"the reference is {ref.width}x{ref.height} but the result will be "
            f"{problem.out_width}x{problem.out_height}; they must match"
        )
    pixels = ref.pixels
    c = problem.image.channels
    if pixels.shape[2] != c:
        pixels = pixels.mean(axis=2, keepdims=True) if c == 1 else np.repeat(pixels, 3, axis=2)
    return pixels


def output_image(img: Image, pixels: np.ndarray, problem: Problem) -> Image:
    """The result as an Image in the input's mode (alpha resized along for super-resolution)."""
    if (problem.out_height, problem.out_width) == (img.height, img.width):
        return img.with_pixels(pixels)
    alpha = None
    if img.alpha is not None:  # super-resolution: the alpha channel is resized with it
        im = PILImage.fromarray(img.alpha).resize((problem.out_width, problem.out_height), PILImage.Resampling.BICUBIC)
        alpha = np.asarray(im)
    return Image(pixels.astype(np.float32), img.mode, img.bit_depth, alpha, img.source_mode, img.path)


def bicubic_baseline(problem: Problem) -> np.ndarray:
    """The low-resolution input upscaled by bicubic interpolation (super-resolution only)."""
    return resize(problem.image.pixels, problem.out_height, problem.out_width)


def _report(
    task: Task,
    be: Any,
    cfg: Any,
    settings: Preset,
    opts: RunOptions,
    problem: Problem,
    result: FitResult,
    ref: np.ndarray | None,
    out: Image,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "task": task.value,
        "backend": be.name,
        "device": be.device,
        "precision": be.precision.value,
        "step": result.step,
        "iters": result.iters_done,
        "iters_planned": settings.iters,
        "seed": opts.seed,
        "params": count_params(cfg),
        "ms_per_iter": result.ms_per_iter,
        "seconds": result.seconds,
        "interrupted": result.interrupted,
        "rollbacks": result.rollbacks,
        "final_lr": result.final_lr,
        "keep": opts.keep.value,
        "selection": result.selection,
        "result_iter": result.result_iter,
        "input": {"path": str(problem.image.path) if problem.image.path else None, "mode": problem.image.source_mode},
        "size": [problem.out_height, problem.out_width],
        "preset": settings.to_dict(),
        "net": cfg.to_dict(),
        "platform": platform.platform(),
        "loss_curve": result.loss_curve,
    }
    if result.variance_curve:
        report["variance_curve"] = result.variance_curve
    report["stopped_early"] = result.stopped_early
    report["stop_iter"] = result.stop_iter
    report["auto_rule"] = result.auto_rule
    report["discrepancy_iter"] = result.discrepancy_iter
    if ref is not None:
        report.update(
            {
                "psnr_input": psnr(problem.corrupted, ref),
                "psnr": psnr(result.final, ref),
                "psnr_ema": psnr(result.ema, ref) if result.ema is not None else None,
                "psnr_result": psnr(out.pixels, ref),
                "best_psnr": result.best_psnr,
                "best_iter": result.result_iter if result.selection == "psnr" else None,
                "ssim": ssim(out.pixels, ref),
                "psnr_curve": result.psnr_curve,
                "psnr_ema_curve": result.psnr_ema_curve,
            }
        )
        if result.psnr_output_curve:
            report["psnr_output_curve"] = result.psnr_output_curve
        if result.auto_psnr is not None:
            report["psnr_auto"] = result.auto_psnr
            report["auto_gap"] = (result.best_psnr or result.auto_psnr) - result.auto_psnr
        if task is Task.SR:
            report["psnr_bicubic"] = psnr(bicubic_baseline(problem), ref)
    return report
