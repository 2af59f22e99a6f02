"""One image's run, from the user's files to the result: `prepare` checks everything and builds the session,
`Prepared.run` fits, `Result` holds what a run returns (its images, report and plot)."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from dip_core.backend import Backend, Session, SessionSpec, get_backend
from dip_core.fit.checkpoint import Checkpointing, digest, load_checkpoint, read_run
from dip_core.fit.loop import FitResult, StepInfo, fit, stopping_rule
from dip_core.fit.settings import FitSettings, Stop
from dip_core.model.config import SkipConfig, load_config
from dip_core.model.inputs import make_input
from dip_core.model.method import Method
from dip_core.model.params import count_params
from dip_core.model.weights import init_weights
from dip_core.problem.degrade import OpKind, parse_kernel, resize
from dip_core.problem.fidelity import SQUARED_ERROR, Fidelity, FidelityKind
from dip_core.problem.image import Image, from_array, load_image, save_image
from dip_core.problem.metrics import discrepancy_sigma, peak_estimate, psnr, ssim
from dip_core.problem.padding import Crop, pad_problem
from dip_core.problem.presets import Preset, preset_for
from dip_core.problem.registry import NoiseModel, Task, spec_of
from dip_core.problem.task_options import TAKEN_BY, check_options_apply
from dip_core.problem.tasks import Problem, ProblemError, make_problem, mask_from_color, percent
from dip_core.run.memory import check_memory
from dip_core.run.options import RunOptions
from dip_core.run.report import Report

ImageLike = str | Path | np.ndarray | Image


@dataclass
class Result:
    image: Image  # the restored image, in the input's mode (alpha carried through)
    report: Report  # everything measured and every setting used
    fit: FitResult | None  # None for a tiled run (one fit per tile)
    problem: Problem
    reference: np.ndarray | None = None

    @property
    def pixels(self) -> np.ndarray:
        return self.image.pixels

    def save(self, path: str | Path) -> Path:
        """Write the restored image to `path` (its type from the suffix; the input's mode, bit depth and alpha
        kept), atomically; returns the path."""
        save_image(path, self.image)
        return Path(path)


def as_image(value: ImageLike, what: str = "image") -> Image:
    if isinstance(value, Image):
        return value
    if isinstance(value, (str, Path)):
        return load_image(value)
    if isinstance(value, np.ndarray):
        return from_array(value)
    raise ProblemError(f"{what} must be a path, a numpy array or a dip Image, got {type(value).__name__}")


def resolve_preset(
    task: Task | str,
    preset: str | None = None,
    factor: int | None = None,
    method: Method | None = None,
    **overrides: Any,
) -> Preset:
    """The task's preset for the method (or the named one) with overrides applied; None values are ignored."""
    base = preset_for(task, preset, factor, method)
    if factor is not None:
        overrides["factor"] = factor
    return base.override(**overrides)


@dataclass(frozen=True)
class NoiseLevel:
    """The task's data term and its noise level: what the stopping rule's discrepancy level comes from."""

    fidelity: Fidelity
    power: float | None = None  # the loss expected at the truth (None: no level; the variance rule chooses)
    sigma: float | None = None  # Gaussian noise: its standard deviation (image units), given or estimated
    source: str | None = None  # "given", "estimated" or "fit level"
    level_sigma: float | None = None  # Gaussian noise: the level the loss is compared with (power = its square)

    def report(self) -> dict[str, Any]:
        """The level as the report's `stopping` records it."""
        if self.fidelity.kind is FidelityKind.POISSON:
            return {"peak": self.fidelity.peak, "peak_source": self.source, "fidelity": self.fidelity.kind.value}
        if self.source == "fit level" and self.power:
            return {"fit_level_db": round(-10 * math.log10(self.power), 9)}
        if self.sigma is not None:
            level = {"noise_sigma": 255 * self.sigma, "noise_sigma_source": self.source}
            if self.level_sigma is not None and self.level_sigma < self.sigma:
                level["noise_level_sigma"] = 255 * self.level_sigma  # the estimate: less noise than given
            return level
        return {}


def noise_level(
    task: Task, observed: np.ndarray, sigma: float | None, peak: float | None, fit_level_db: float | None = None
) -> NoiseLevel:
    """The task's data term and noise level, from the noise's std on 0-255 (`sigma`) or photons of a white pixel
    (`peak`) when given, else estimated from the observation. A task without noise has none, unless its preset
    gives a fit level (a PSNR of the fit to the input, in dB), which then stands for it."""
    spec = spec_of(task)
    if spec.noise is NoiseModel.GAUSSIAN:
        given = None if sigma is None else sigma / 255
        level = discrepancy_sigma(observed, given)
        std, source = (level, "estimated") if given is None else (given, "given")
        return NoiseLevel(SQUARED_ERROR, level**2, std, source, level)
    if spec.noise is NoiseModel.POISSON:
        photons, source = (peak, "given") if peak is not None else (peak_estimate(observed), "estimated")
        fidelity = Fidelity(spec.fidelity, photons)
        return NoiseLevel(fidelity, fidelity.level(), None, source)
    if fit_level_db is not None:
        return NoiseLevel(Fidelity(spec.fidelity), 10 ** (-fit_level_db / 10), source="fit level")
    return NoiseLevel(Fidelity(spec.fidelity))


@dataclass
class Prepared:
    """A run checked and set up, not started: what `fit` gets and what the report needs. The session (the
    network on its device) is built on first use, so that a run can be checked in full before it costs memory."""

    task: Task
    image: Image
    options: RunOptions
    preset: Preset  # with the overrides applied
    problem: Problem
    reference: np.ndarray | None
    cfg: SkipConfig
    backend: Backend
    spec: SessionSpec
    fit_settings: FitSettings
    padded: Problem  # the problem at the size the network runs at
    crop: Crop
    noise: NoiseLevel  # the data term and the noise level the stopping rule's level comes from
    sources: dict[str, Any]  # where the inputs came from (paths, kernel spec), for the report
    warnings: list[str]  # what the user should know before the run (a rounded mask, too few iterations)
    _session: Session | None = None

    @property
    def session(self) -> Session:
        """The network on its device, built on first use."""
        if self._session is None:
            self._session = self.backend.session(self.spec)
        return self._session

    @property
    def keep_known(self) -> bool:
        """Whether the known pixels are pasted back into the result (inpaint and restore, unless turned off)."""
        return self.problem.mask is not None and self.options.keep_known is not False

    def run(
        self,
        *,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        on_step: Callable[[StepInfo], None] | None = None,
        on_save: Callable[[int, Image], None] | None = None,
        save_to: str | Path | None = None,
    ) -> Result:
        """Fit, choose the result and report (see `restore`)."""
        task, opts, settings, be, ref = self.task, self.options, self.preset, self.backend, self.reference
        saving = on_save is not None or save_to is not None
        fit_settings = self.fit_settings if saving else replace(self.fit_settings, save_every=0)
        stop = fit_settings.stop
        ckpt = None
        if checkpoint is not None:
            run = self.identity()
            arrays = load_checkpoint(checkpoint, run) if resume else None
            every = opts.checkpoint_every
            if arrays is not None and not every:
                every = int(arrays.get("checkpoint/every", 0))
            ckpt = Checkpointing(Path(checkpoint), every, run, arrays)
        elif resume:
            raise ProblemError("resume needs the checkpoint file to go on from")

        def saved(i: int, pixels: np.ndarray) -> None:
            result_so_far = self.output(pixels)
            if save_to is not None:
                save_image(save_to, result_so_far)
            if on_save is not None:
                on_save(i, result_so_far)

        result = fit(self.session, fit_settings, reference=ref, on_step=on_step, checkpoint=ckpt, on_save=saved)
        out_image = self.output(result.result)
        report = _report(task, be, self.cfg, settings, opts, self.problem, result, ref, out_image)
        if ref is not None and result.auto is not None:
            # What a run without the reference returns, made as the result is (known pixels pasted back).
            report["psnr_auto"] = psnr(self.output(result.auto).pixels, ref)
            report["auto_gap"] = report["psnr_result"] - report["psnr_auto"]  # what the reference bought
        report["keep_known"] = self.keep_known
        report["sources"] = self.sources
        report["stopping"] = {"stop": stop.value, "window": opts.window, **stopping_rule(fit_settings)}
        report["stopping"].update(self.noise.report())
        size = [self.padded.out_height, self.padded.out_width]
        report["padding"] = {"mode": opts.pad.value, "size": size, "offset": [self.crop.top, self.crop.left]}
        if ckpt is not None:
            report["checkpoint"] = {"path": str(ckpt.path), "every": ckpt.every, "resumed": ckpt.resume is not None}
        report["finished"] = not result.interrupted
        report["warnings"] = self.warnings + result.warnings + worse_than_input(report, self.preset_iters)
        if save_to is not None:
            save_image(save_to, out_image)  # the result itself, whether or not it was also saved on the way
        return Result(out_image, report, result, self.problem, ref)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the inputs and every setting that changes the result."""
        opts, be, fs = self.options, self.backend, self.fit_settings
        return {
            "task": self.task.value,
            "backend": be.name,
            "device": be.device,
            "precision": be.precision.value,
            "threads": be.threads,  # the CPU's sums split by thread: another count changes the last bits
            "seed": opts.seed,
            "preset": {k: v for k, v in self.preset.to_dict().items() if k not in ("iters", "note")},
            "net": self.cfg.to_dict(),
            "fit": {
                "keep": opts.keep.value,
                "stop": fs.stop.value,
                "window": opts.window,
                "patience": opts.patience,
                "trace": opts.trace_output,
                "noise_sigma": self.noise.sigma,
            }
            | ({"peak": self.noise.fidelity.peak} if self.noise.fidelity.kind is FidelityKind.POISSON else {}),
            "pad": opts.pad.value,
            "inputs": digest(self.padded.observed, self.padded.op.mask, self.padded.op.kernel, self.reference),
        } | ({"method": self.preset.method.value} if self.preset.method is not Method.DIP else {})
        # (dip's identity is that of earlier releases, whose checkpoints resume; a drp checkpoint differs from a
        # dip run's in "method", and in its preset and network, so neither resumes the other.)

    def check_resume(self, checkpoint: str | Path) -> None:
        """Raise the problem with resuming from `checkpoint` (unreadable, another run's) before the run starts."""
        load_checkpoint(checkpoint, self.identity())

    @property
    def preset_iters(self) -> int:
        """The iterations of the task's preset before any override."""
        return preset_for(self.task, self.options.preset, self.options.factor, self.options.method).iters

    def output(self, pixels: np.ndarray) -> Image:
        """The network's output as the result image: the known pixels pasted back when asked."""
        m = self.problem.mask
        if self.keep_known and m is not None:
            pixels = m * self.problem.image.pixels + (1 - m) * pixels
        return output_image(self.image, pixels, self.problem)


def prepare(
    task: Task | str,
    image: ImageLike,
    options: RunOptions | None = None,
    *,
    mask: ImageLike | None = None,
    reference: ImageLike | None = None,
    **changes: Any,
) -> Prepared:
    """Everything `restore` does before the first step (same arguments, no tiles), every input and setting
    checked: e.g. to report all problems before a run starts, or to time the loop as `dip run` runs it."""
    task, img, opts, blur, settings, problem, ref = set_up(task, image, options, changes, mask, reference)
    cfg = load_config(settings.net).with_(in_channels=settings.input_channels, out_channels=img.channels)
    padded, crop = pad_problem(problem, cfg, opts.pad)
    h, w = padded.out_height, padded.out_width
    be = get_backend(opts.backend, opts.device, opts.precision, opts.threads)
    # The variance monitor keeps `window` outputs on the device.
    memory_warnings = check_memory(cfg, h, w, be, window=opts.window, image=(problem.out_width, problem.out_height))
    weights = init_weights(cfg, opts.seed)
    z = make_input(settings.input, settings.input_channels, h, w, seed=opts.seed + 1)
    noise = noise_level(task, problem.observed, opts.noise_sigma, opts.peak, settings.fit_level_db)
    spec = SessionSpec(
        cfg, weights, z, padded.observed, padded.op, settings.lr, settings.reg_noise_std, opts.seed,
        crop=(crop.top, crop.left, crop.height, crop.width), precision=be.precision, fidelity=noise.fidelity,
        method=settings.method, tv_weight=settings.tv_weight,
    )  # fmt: skip
    fit_settings = FitSettings(
        iters=settings.iters,
        exp_weight=settings.exp_weight,
        ema_warmup=settings.ema_warmup,
        backtrack=settings.backtrack,
        backtrack_db=settings.backtrack_db,
        check_every=settings.check_every,
        lr=settings.lr,
        keep=opts.keep,
        stop=opts.stop or default_stop(task, opts.iters),
        patience=opts.patience,
        window=opts.window,
        trace_output=opts.trace_output,
        noise_power=noise.power,
        save_every=opts.save_every,
        **({"loss_ratio": settings.loss_ratio} if settings.loss_ratio is not None else {}),
    )
    sources = sources_of(img, mask, reference, opts, blur)
    warnings = memory_warnings + warnings_before(task, opts, problem)
    return Prepared(
        task, img, opts, settings, problem, ref, cfg, be, spec, fit_settings, padded, crop, noise, sources,
        warnings,
    )  # fmt: skip


def resumed_threads(options: RunOptions, checkpoint: str | Path) -> int | None:
    """The thread count a resumed run uses: the one asked for, else the checkpoint's (the same sums, the same
    result as an uninterrupted run)."""
    if options.threads is not None:
        return options.threads
    run = read_run(checkpoint) or {}
    threads = run.get("threads")
    return threads if isinstance(threads, int) and threads >= 1 else None


def _source(value: ImageLike | None) -> str | None:
    """Where an input came from, for the report: its path, or "array"."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, Image) and value.path is not None:
        return str(value.path)
    return "array"


def sources_of(
    img: Image, mask: ImageLike | None, reference: ImageLike | None, opts: RunOptions, blur: np.ndarray | None
) -> dict[str, Any]:
    """Where every input of the run came from, for the report."""
    return {
        "image": _source(img),
        "mask": _source(mask),
        "mask_color": opts.mask_color,
        "drop": opts.drop,
        "kernel": "array" if blur is not None else opts.kernel,
        "reference": _source(reference),
    }


# A run this far below its preset's iterations rarely gets past its input (measured on 2026-11-26: sr at 200 of
# 2000 iterations 25.92 -> 25.26 dB, jpeg at 300 of 2400 23.78 -> 22.16 dB).
FEW_ITERS_SHARE = 0.25
# Only tasks whose registry spec says `warn_short_runs` are warned before (a short denoising run, the demo's 300 of
# 3000, is rarely worse than its input); with a reference every task is warned after the run when it is.


def warnings_before(task: Task, opts: RunOptions, problem: Problem) -> list[str]:
    """Warnings to print before the run: a rounded mask, far fewer iterations than the task's preset."""
    warnings = []
    if problem.mask_rounded:
        share = percent(problem.mask_rounded, problem.out_height * problem.out_width)
        warnings.append(
            f"the mask has {problem.mask_rounded} grey pixels ({share} of it): rounded at 50 % "
            "(lighter = known); --strict-mask refuses such a mask"
        )
    if opts.iters is not None and spec_of(task).warn_short_runs:
        planned = preset_for(task, opts.preset, opts.factor, opts.method).iters
        if opts.iters < FEW_ITERS_SHARE * planned:
            warnings.append(
                f"--iters {opts.iters} is far below the {planned} iterations of {task.value}'s preset: "
                "the result may well be worse than the input"
            )
    return warnings


def worse_than_input(report: Report, preset_iters: int) -> list[str]:
    """A warning when, against the reference, the result is worse than what the user gave (for sr: bicubic)."""
    if report.get("psnr_result") is None or report.get("psnr_input") is None:
        return []
    base, what = report["psnr_input"], "the input"
    if report.get("psnr_bicubic") is not None:
        base, what = report["psnr_bicubic"], "bicubic upscaling"
    if report["psnr_result"] >= base:
        return []
    hint = f"; {report['task']}'s preset runs {preset_iters}" if report["iters"] < preset_iters else ""
    return [
        f"the result ({report['psnr_result']:.2f} dB) is worse than {what} ({base:.2f} dB) after "
        f"{report['iters']} iterations{hint}"
    ]


def set_up(
    task: Task | str,
    image: ImageLike,
    options: RunOptions | None,
    changes: dict[str, Any],
    mask: ImageLike | None,
    reference: ImageLike | None,
) -> tuple[Task, Image, RunOptions, np.ndarray | None, Preset, Problem, np.ndarray | None]:
    """What a run and a tiled run both start from: the task, image and options, an array kernel, the preset
    with its overrides, the whole problem and the reference."""
    opts, blur = options_with(options, changes)
    task = _task(task)
    given = {name: getattr(opts, name) for name in TAKEN_BY if name != "mask"}
    check_options_apply(task, {**given, "mask": mask, "kernel": blur if blur is not None else opts.kernel})
    img = as_image(image)
    settings = resolve_preset(task, opts.preset, opts.factor, opts.method, **opts.overrides())
    problem = _problem(task, img, settings, opts, mask, blur)
    return task, img, opts, blur, settings, problem, _reference(reference, problem)


def options_with(options: RunOptions | None, changes: dict[str, Any]) -> tuple[RunOptions, np.ndarray | None]:
    """The run's options with keyword changes, and a blur kernel given as an array (a spec string is an option)."""
    kernel = changes.get("kernel")
    if isinstance(kernel, np.ndarray):
        return RunOptions.of(options, **{k: v for k, v in changes.items() if k != "kernel"}), kernel
    return RunOptions.of(options, **changes), None


def default_stop(task: Task | str, iters: int | None) -> Stop:
    """Auto-stop where it was measured to help (the registry's `auto_stop`: denoise, jpeg, restore, sr, poisson)
    unless an iteration count is given. The preset's count is then the most the run may take.
    """
    return Stop.AUTO if spec_of(task).auto_stop and iters is None else Stop.FIXED


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
    factor = settings.factor if spec_of(task).operator is OpKind.DOWNSAMPLE else None
    return make_problem(
        task, img, mask=mask_img, factor=factor, kernel=kernel, drop=opts.drop, seed=opts.seed,
        strict_mask=opts.strict_mask,
    )  # fmt: skip


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
) -> Report:
    report: Report = {
        "task": task.value,
        "method": settings.method.value,
        "backend": be.name,
        "device": be.device,
        "precision": be.precision.value,
        "threads": be.threads,
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
        if spec_of(task).baseline:
            report["psnr_bicubic"] = psnr(bicubic_baseline(problem), ref)
    return report
