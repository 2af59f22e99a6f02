"""The Python API: `restore(task, image, backend="mlx", **overrides) -> Result`."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from dip_core.backend import BackendName, Device, SessionSpec, get_backend
from dip_core.checkpoint import Checkpointing, digest, load_checkpoint
from dip_core.config import load_config
from dip_core.degrade import parse_kernel, resize
from dip_core.fit import FitResult, FitSettings, StepInfo, fit
from dip_core.image import Image, from_array, load_image, save_image
from dip_core.inputs import make_input
from dip_core.memory import check_memory
from dip_core.metrics import noise_sigma_estimate, psnr, ssim
from dip_core.padding import CroppedSession, PadMode, pad_problem
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


def restore(
    task: Task | str,
    image: ImageLike,
    *,
    backend: BackendName | str = BackendName.MLX,
    device: Device | str = Device.AUTO,
    mask: ImageLike | None = None,
    mask_color: str | None = None,
    factor: int | None = None,
    kernel: str | np.ndarray | None = None,
    drop: float | None = None,
    reference: ImageLike | None = None,
    seed: int = 0,
    preset: str | None = None,
    keep: str = "best",
    stop: str | None = None,
    patience: int = 1000,
    window: int = 100,
    noise_sigma: float | None = None,
    trace_output: bool = False,
    pad: str = "reflect",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    save_every: int = 0,
    save_to: str | Path | None = None,
    **overrides: Any,
) -> Result:
    """Restore one image with Deep Image Prior.

    `task` is one of denoise, jpeg, inpaint, restore, sr, deblur. The paper's preset
    for the task is used unless `preset` names another; any preset field
    (iters, lr, reg_noise_std, exp_weight, backtrack, net, input, ...) can be
    overridden by keyword. With `save_every` and `save_to`, the result so far is
    written there every `save_every` iterations. `trace_output` (with a reference)
    also records the PSNR of net(z) at every step, at the cost of one more forward.
    `pad` "reflect" works on the image reflect-padded to a multiple of 2**depth
    and crops back; "none" pads only images below the network's minimum size.
    With `checkpoint` and `checkpoint_every`, the whole run state is written there
    every that many iterations; `resume` goes on from that file to the same
    result an uninterrupted run gives.
    """
    task = _task(task)
    stop = default_stop(task, overrides.get("iters")) if stop is None else stop
    if keep not in ("best", "last") or stop not in ("fixed", "auto"):
        raise ProblemError(f"keep must be best or last and stop fixed or auto, got {keep!r} and {stop!r}")
    if pad not in {m.value for m in PadMode}:
        raise ProblemError(f"unknown padding {pad!r}: choose reflect or none")
    if window < 2 or patience < 1:
        raise ProblemError(f"the variance window must be >= 2 and the patience >= 1, got {window} and {patience}")
    if noise_sigma is not None and not 0 < noise_sigma < 255:
        raise ProblemError(f"the noise level is a standard deviation in (0, 255), got {noise_sigma}")
    img = as_image(image)
    settings = resolve_preset(task, preset, factor, **overrides)
    problem = _problem(task, img, settings, mask, mask_color, kernel, drop, seed)
    ref = _reference(reference, problem)
    cfg = load_config(settings.net).with_(in_channels=settings.input_channels, out_channels=img.channels)
    padded, crop = pad_problem(problem, cfg, pad)
    h, w = padded.out_height, padded.out_width
    be = get_backend(backend, device)
    check_memory(cfg, h, w, be)
    weights = init_weights(cfg, seed)
    z = make_input(settings.input, settings.input_channels, h, w, seed=seed + 1)
    spec = SessionSpec(cfg, weights, z, padded.observed, padded.op, settings.lr, settings.reg_noise_std, seed)
    session = CroppedSession(be.session(spec), crop)
    noise, noise_source = _noise_level(task, problem, noise_sigma)
    fit_settings = FitSettings(
        iters=settings.iters,
        exp_weight=settings.exp_weight,
        backtrack=settings.backtrack,
        backtrack_db=settings.backtrack_db,
        check_every=settings.check_every,
        lr=settings.lr,
        keep=keep,
        stop=stop,
        patience=patience,
        window=window,
        trace_output=trace_output,
        noise_sigma=noise,
    )
    ckpt = None
    if checkpoint is not None:
        if checkpoint_every < 0:
            raise ProblemError(f"the checkpoint interval must be >= 0, got {checkpoint_every}")
        run = {
            "task": task.value,
            "backend": be.name,
            "device": be.device,
            "seed": seed,
            "preset": {k: v for k, v in settings.to_dict().items() if k not in ("iters", "note")},
            "net": cfg.to_dict(),
            "fit": {
                "keep": keep,
                "stop": stop,
                "window": window,
                "patience": patience,
                "trace": trace_output,
                "noise_sigma": noise,
            },
            "pad": pad,
            "inputs": digest(padded.observed, padded.op.mask, padded.op.kernel, ref),
        }
        arrays = load_checkpoint(checkpoint, run) if resume else None
        if arrays is not None and not checkpoint_every:
            checkpoint_every = int(arrays.get("checkpoint/every", 0))
        ckpt = Checkpointing(Path(checkpoint), checkpoint_every, run, arrays)
    elif resume:
        raise ProblemError("resume needs the checkpoint file to go on from")
    callback = on_step
    if save_every and save_to is not None:

        def callback(info: StepInfo) -> None:
            if info.i % save_every == 0:
                save_image(save_to, output_image(img, info.current(), problem))
            if on_step is not None:
                on_step(info)

    result = fit(session, fit_settings, reference=ref, on_step=callback, checkpoint=ckpt)
    out_image = output_image(img, result.result, problem)
    report = _report(task, be, cfg, settings, seed, keep, problem, result, ref, out_image)
    report["stopping"] = {"stop": stop, "window": window, "patience": patience}
    if noise is not None:
        report["stopping"].update({"noise_sigma": 255 * noise, "noise_sigma_source": noise_source})
    report["padding"] = {"mode": pad, "size": [h, w], "offset": [crop.top, crop.left]}
    if ckpt is not None:
        report["checkpoint"] = {"path": str(ckpt.path), "every": ckpt.every, "resumed": ckpt.resume is not None}
    return Result(out_image, report, result, problem, ref)


AUTO_STOP_TASKS = frozenset({Task.DENOISE, Task.JPEG, Task.RESTORE, Task.SR})


def default_stop(task: Task | str, iters: int | None) -> str:
    """ES-WMV auto-stop where it was measured to help (denoise, jpeg, restore, sr) unless an iteration count is given.

    The preset's count is then the most the run may take.
    """
    return "auto" if Task(task) in AUTO_STOP_TASKS and iters is None else "fixed"


def _task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ProblemError(f"unknown task {task!r}; choose one of {', '.join(t.value for t in Task)}") from None


def _problem(
    task: Task,
    img: Image,
    settings: Preset,
    mask: ImageLike | None,
    mask_color: str | None,
    kernel: str | np.ndarray | None,
    drop: float | None,
    seed: int,
) -> Problem:
    if mask is not None and mask_color is not None:
        raise ProblemError("give either a mask or a mask colour, not both")
    mask_img = as_image(mask, "mask") if mask is not None else None
    if mask_color is not None:
        mask_img = mask_from_color(img, mask_color)
    blur = parse_kernel(kernel) if isinstance(kernel, str) else kernel
    factor = settings.factor if task is Task.SR else None
    return make_problem(task, img, mask=mask_img, factor=factor, kernel=blur, drop=drop, seed=seed)


def restore_tiled(
    task: Task | str,
    image: ImageLike,
    tile: int,
    overlap: int = 32,
    *,
    mask: ImageLike | None = None,
    mask_color: str | None = None,
    factor: int | None = None,
    kernel: str | np.ndarray | None = None,
    drop: float | None = None,
    reference: ImageLike | None = None,
    seed: int = 0,
    preset: str | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Result:
    """Restore an image too large for one fit in overlapping tiles of `tile` input pixels.

    Every tile is one `restore` with the same settings (and seed); the results
    are blended linearly across each `overlap`. `on_tile(index, count)` is
    called before each tile. An interrupted tile ends the run: tiles not reached
    keep the corrupted input.
    """
    if options.get("checkpoint") is not None or options.get("resume"):
        raise ProblemError("checkpoints and --resume do not work with tiles yet")
    task = _task(task)
    img = as_image(image)
    settings = resolve_preset(task, preset, factor, **{k: v for k, v in options.items() if k in _PRESET_FIELDS})
    problem = _problem(task, img, settings, mask, mask_color, kernel, drop, seed)
    ref = _reference(reference, problem)
    tiles = plan(img.height, img.width, tile, overlap)
    f = settings.factor if task is Task.SR else 1
    # With --drop the full image's mask is drawn once, so the tiles share it.
    clean = problem.image.pixels
    results = [t.scaled(f)(problem.corrupted) for t in tiles]
    reports: list[dict[str, Any]] = []
    for k, t in enumerate(tiles):
        if on_tile is not None:
            on_tile(k, len(tiles))
        r = restore(
            task, t(clean), mask=None if problem.mask is None else t(problem.mask)[..., 0], factor=factor,
            kernel=kernel, reference=None if ref is None else t.scaled(f)(ref), seed=seed, preset=preset, **options,
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
        "seed": seed,
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


_PRESET_FIELDS = {f.name for f in fields(Preset)} - {"task", "factor", "note"}


def _tile_summary(rep: dict[str, Any]) -> dict[str, Any]:
    keys = ("backend", "device", "iters", "seconds", "interrupted", "rollbacks", "result_iter", "selection")
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
    seed: int,
    keep: str,
    problem: Problem,
    result: FitResult,
    ref: np.ndarray | None,
    out: Image,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "task": task.value,
        "backend": be.name,
        "device": be.device,
        "iters": result.iters_done,
        "iters_planned": settings.iters,
        "seed": seed,
        "params": count_params(cfg),
        "ms_per_iter": result.ms_per_iter,
        "seconds": result.seconds,
        "interrupted": result.interrupted,
        "rollbacks": result.rollbacks,
        "final_lr": result.final_lr,
        "keep": keep,
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
