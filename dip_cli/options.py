"""The options of a run, written once for every command that runs one (`dip run`, `dip batch`).

`with_run_options` adds them to a command's signature (Typer reads it) and
hands the command one `RunOptions` built from them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from dip_cli.app import BackendOpt, DeviceOpt, PrecisionOpt
from dip_core.backend import BackendName, Device
from dip_core.fit.settings import LOSS_RATIO, Keep, Stop
from dip_core.model.config import NETS
from dip_core.model.inputs import InputKind
from dip_core.model.method import Method
from dip_core.problem.padding import PadMode
from dip_core.problem.registry import taking
from dip_core.run.options import RunOptions


def _opt(kind: Any, *decls: str, **kwargs: Any) -> Any:
    return Annotated[kind, typer.Option(*decls, **kwargs)]


# name: (annotation, default, RunOptions field). In the order `--help` lists them.
RUN_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "backend": (BackendOpt, BackendName.MLX, "backend"),
    "device": (DeviceOpt, Device.AUTO, "device"),
    "precision": (PrecisionOpt, None, "precision"),
    "preset": (_opt(str | None, help="Named preset (see `dip presets`); default: the task's."), None, "preset"),
    "method": (
        _opt(
            Method | None,
            help="dip: the paper's Deep Image Prior; drp: the Deep Random Projector, far faster (convolutions "
            "frozen, z and the BatchNorms trained; tasks "
            f"{', '.join(t.value for t in taking(Method.DRP))}). Default: the preset's, else dip.",
        ),
        None,
        "method",
    ),
    "iters": (_opt(int | None, help="Iterations (preset's by default)."), None, "iters"),
    "lr": (_opt(float | None, help="Adam learning rate."), None, "lr"),
    "reg_noise": (_opt(float | None, help="Std of the noise added to z at every step."), None, "reg_noise_std"),
    "ema": (_opt(float | None, help="EMA weight of outputs in [0, 1); 0 turns it off."), None, "exp_weight"),
    "backtrack": (
        _opt(bool | None, "--backtrack/--no-backtrack", help="Roll back on collapse."),
        None,
        "backtrack",
    ),
    "net": (_opt(str | None, help=f"Network: {', '.join(NETS)} or a JSON file."), None, "net"),
    "input_kind": (_opt(InputKind | None, "--input", help="Network input z."), None, "input"),
    "input_channels": (_opt(int | None, help="Channels of z."), None, "input_channels"),
    "seed": (_opt(int, help="Seed of weights, z and the input noise."), 0, "seed"),
    "threads": (
        _opt(
            int | None,
            min=1,
            help="CPU threads of the backend; default: the cores free when it starts (dip batch: one per fit, Ray: "
            "--cpus-per-run, the same on both engines).",
        ),
        None,
        "threads",
    ),
    "factor": (_opt(int | None, help="sr: upscaling factor, 2, 4 or 8."), None, "factor"),
    "kernel": (
        _opt(str | None, help="deblur: gaussian:SIGMA, box:SIZE, motion:LENGTH,ANGLE or a kernel image."),
        None,
        "kernel",
    ),
    "drop": (_opt(float | None, help="restore: drop this fraction of a clean image's pixels first."), None, "drop"),
    "mask_color": (
        _opt(str | None, help="inpaint/restore: the overlay's pure colour (white, #ff0000, 255,0,0) is the mask."),
        None,
        "mask_color",
    ),
    "strict_mask": (
        _opt(bool, "--strict-mask", help="Refuse a mask with grey pixels instead of rounding it at 50 %."),
        False,
        "strict_mask",
    ),
    "keep_known": (
        _opt(
            bool | None,
            "--keep-known/--no-keep-known",
            help="inpaint/restore: paste the known pixels back into the result (default: on).",
        ),
        None,
        "keep_known",
    ),
    "keep": (
        _opt(Keep, help="best: by PSNR with --reference, by output variance without; last."),
        Keep.BEST,
        "keep",
    ),
    "stop": (
        _opt(
            Stop | None,
            help="auto: stop once the automatic choice is settled (see --patience); "
            "default: auto for denoise, jpeg, restore and sr unless --iters is given, else fixed.",
        ),
        None,
        "stop",
    ),
    "window": (_opt(int, min=2, help="ES-WMV window (outputs)."), 100, "window"),
    "patience": (
        _opt(
            int | None,
            min=1,
            help="Use the fixed-patience rule: stop when the output variance (ES-WMV) has had no new minimum for "
            "this many iterations (1000, the default before dip 0.2). Default: the variance's patience grows with "
            "its minimum (300 iterations or a quarter of it), and with a noise level the choice is the first "
            f"loss at {LOSS_RATIO:g} x its power, the run ending there.",
        ),
        None,
        "patience",
    ),
    "noise_sigma": (
        _opt(
            float | None,
            help="denoise: the noise's standard deviation (0-255) if known, else estimated from the image; "
            f"the automatic choice is the first output whose residual reaches {LOSS_RATIO:g} x its power.",
        ),
        None,
        "noise_sigma",
    ),
    "peak": (
        _opt(
            float | None,
            help="poisson: the photon count of a white pixel if known, else estimated from the image; the loss "
            "is the Poisson deviance and the automatic choice the first output whose deviance reaches 1/peak.",
        ),
        None,
        "peak",
    ),
    "pad": (
        _opt(PadMode, help="reflect: pad to a multiple of 2^depth and crop back; none: only tiny images."),
        PadMode.REFLECT,
        "pad",
    ),
    "tile": (
        _opt(int, min=0, help="Restore in overlapping tiles of this many input pixels; 0: whole image."),
        0,
        "tile",
    ),
    "overlap": (_opt(int, min=0, help="Overlap of neighbouring tiles (pixels), blended."), 32, "overlap"),
    "save_every": (_opt(int, min=0, help="Also write the result so far every K iterations."), 0, "save_every"),
    "checkpoint_every": (
        _opt(int, min=0, help="Write a checkpoint (OUT_stem.ckpt.npz) every K iterations; 0: none."),
        0,
        "checkpoint_every",
    ),
}


def with_run_options(exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every run option (but `exclude`); it receives them as `options: RunOptions`."""
    names = [n for n in RUN_OPTIONS if n not in exclude]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "options"]
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [inspect.Parameter(n, keyword, default=RUN_OPTIONS[n][1], annotation=RUN_OPTIONS[n][0]) for n in names]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            fields = {RUN_OPTIONS[n][2]: kwargs.pop(n) for n in names}
            return fn(**kwargs, options=RunOptions(**fields))

        params = [p.replace(kind=keyword) for p in own] + added
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
