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
from dip_core.fit.settings import Keep, Stop
from dip_core.model.inputs import InputKind
from dip_core.model.method import Method
from dip_core.problem.padding import PadMode
from dip_core.run.options import RunOptions, option_help


def _opt(kind: Any, field: str, *decls: str) -> Any:
    """A run option as Typer reads it. Its help is RunOptions' (dip_core.run.options), written once for the CLI, the
    web page and the docs; so are its bounds, which RunOptions checks with its own one-line message."""
    metavar = {int: "<int>", float: "<float>"}.get(next((t for t in (int, float) if t in _args(kind)), None))
    return Annotated[kind, typer.Option(*decls, help=option_help(field), metavar=metavar)]


def _args(kind: Any) -> tuple[Any, ...]:
    return getattr(kind, "__args__", (kind,))


# name: (annotation, default, RunOptions field). In the order `--help` lists them.
RUN_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "backend": (BackendOpt, BackendName.MLX, "backend"),
    "device": (DeviceOpt, Device.AUTO, "device"),
    "precision": (PrecisionOpt, None, "precision"),
    "preset": (_opt(str | None, "preset"), None, "preset"),
    "method": (_opt(Method | None, "method"), None, "method"),
    "iters": (_opt(int | None, "iters"), None, "iters"),
    "lr": (_opt(float | None, "lr"), None, "lr"),
    "reg_noise": (_opt(float | None, "reg_noise_std", "--reg-noise"), None, "reg_noise_std"),
    "ema": (_opt(float | None, "exp_weight", "--ema"), None, "exp_weight"),
    "ema_warmup": (_opt(int | None, "ema_warmup"), None, "ema_warmup"),
    "backtrack": (_opt(bool | None, "backtrack", "--backtrack/--no-backtrack"), None, "backtrack"),
    "net": (_opt(str | None, "net"), None, "net"),
    "input_kind": (_opt(InputKind | None, "input", "--input"), None, "input"),
    "input_channels": (_opt(int | None, "input_channels"), None, "input_channels"),
    "seed": (_opt(int, "seed"), 0, "seed"),
    "threads": (_opt(int | None, "threads"), None, "threads"),
    "factor": (_opt(int | None, "factor"), None, "factor"),
    "kernel": (_opt(str | None, "kernel"), None, "kernel"),
    "drop": (_opt(float | None, "drop"), None, "drop"),
    "mask_color": (_opt(str | None, "mask_color"), None, "mask_color"),
    "strict_mask": (_opt(bool, "strict_mask", "--strict-mask"), False, "strict_mask"),
    "keep_known": (_opt(bool | None, "keep_known", "--keep-known/--no-keep-known"), None, "keep_known"),
    "keep": (_opt(Keep, "keep"), Keep.BEST, "keep"),
    "stop": (_opt(Stop | None, "stop"), None, "stop"),
    "window": (_opt(int, "window"), 100, "window"),
    "patience": (_opt(int | None, "patience"), None, "patience"),
    "noise_sigma": (_opt(float | None, "noise_sigma"), None, "noise_sigma"),
    "peak": (_opt(float | None, "peak"), None, "peak"),
    "fit_level_db": (_opt(float | None, "fit_level_db"), None, "fit_level_db"),
    "pad": (_opt(PadMode, "pad"), PadMode.REFLECT, "pad"),
    "tile": (_opt(int, "tile"), 0, "tile"),
    "overlap": (_opt(int, "overlap"), 32, "overlap"),
    "save_every": (_opt(int, "save_every"), 0, "save_every"),
    "checkpoint_every": (_opt(int, "checkpoint_every"), 0, "checkpoint_every"),
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
