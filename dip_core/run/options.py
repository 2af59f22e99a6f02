"""Every setting of a run in one frozen object, built once (by the CLI or the caller) and passed down.

`restore`, `restore_tiled`, `dip run` and `dip batch` all take a `RunOptions`;
keyword arguments of the Python API are folded into one with `RunOptions.of`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from dip_core.backend import BackendName, Device
from dip_core.fit.settings import LOSS_RATIO, Keep, Stop
from dip_core.model.config import NETS
from dip_core.model.inputs import InputKind
from dip_core.model.method import Method
from dip_core.problem.padding import PadMode
from dip_core.problem.registry import Task, taking
from dip_core.problem.task_options import TAKEN_BY
from dip_core.problem.tasks import ProblemError
from dip_core.system.precision import Precision

# Preset fields a run may override (None keeps the preset's value); see dip_core.problem.presets.Preset.
PRESET_OVERRIDES = (
    "iters", "lr", "reg_noise_std", "exp_weight", "backtrack", "backtrack_db", "check_every", "net", "input",
    "input_channels", "fit_level_db", "ema_warmup",
)  # fmt: skip


def opt(
    default: Any, help: str, low: float | None = None, high: float | None = None, above: float | None = None
) -> Any:
    """A RunOptions field with its help (the one text the CLI, the web page and the docs show) and its bounds
    (`low` and `high` inclusive, `above` exclusive; checked here, by the CLI's parser and by the page's form)."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "above": above})


@dataclass(frozen=True)
class RunOptions:
    """How to run: backend, precision, preset and its overrides, the choice of the result, outputs on the way.
    Task-specific options (factor, kernel, drop, mask_color, noise_sigma, peak, ...) are refused by a task that
    does not take them (dip_core.problem.task_options); their help is prefixed with those tasks' names."""

    backend: BackendName = opt(BackendName.MLX, "Framework to run on.")
    device: Device = opt(Device.AUTO, "auto: Metal/CUDA/MPS when present, else the CPU.")
    precision: Precision | None = opt(
        None,
        "fp32, tf32 (reduced-precision products: NVIDIA GPUs, Metal on M5 and later; elsewhere it runs and is "
        "recorded as fp32) or bf16; default: fp32 on a CPU, tf32 on a GPU.",
    )
    seed: int = opt(0, "Seed of weights, z and the input noise.", 0, 2**31 - 1)
    threads: int | None = opt(
        None,
        "CPU threads of the backend; default: the cores free when it starts (dip batch: one per fit, Ray: "
        "--cpus-per-run, the same on both engines).",
        1,
    )
    preset: str | None = opt(None, "Named preset (see `dip presets`); default: the task's.")
    method: Method | None = opt(
        None,
        "dip: the paper's Deep Image Prior; drp: the Deep Random Projector, far faster (convolutions frozen, z and "
        f"the BatchNorms trained; tasks {', '.join(t.value for t in taking(Method.DRP))}). Default: the preset's, "
        "else dip.",
    )
    # Preset overrides; None keeps the preset's value.
    iters: int | None = opt(None, "Iterations (preset's by default).", 1)
    lr: float | None = opt(None, "Adam learning rate.")
    reg_noise_std: float | None = opt(None, "Std of the noise added to z at every step.", 0)
    exp_weight: float | None = opt(None, "EMA weight of outputs in [0, 1); 0 turns it off.", 0)
    ema_warmup: int | None = opt(
        None, "The EMA's weight after n outputs is at most n/(n + this): it forgets the first ones. 0: the paper's.", 0
    )
    backtrack: bool | None = opt(None, "Roll back on collapse.")
    backtrack_db: float | None = opt(None, "PSNR drop (dB) between checks that counts as a collapse.")
    check_every: int | None = opt(None, "Iterations between collapse checks.", 1)
    net: str | None = opt(None, f"Network: {', '.join(NETS)} or a JSON file.")
    input: InputKind | None = opt(None, "Network input z.")
    input_channels: int | None = opt(None, "Channels of z.", 1)
    # The problem, where the task needs it.
    factor: int | None = opt(None, "Upscaling factor, 2, 4 or 8.")
    kernel: str | None = opt(None, "gaussian:SIGMA, box:SIZE, motion:LENGTH,ANGLE or a kernel image.")
    drop: float | None = opt(None, "Drop this fraction of a clean image's pixels first.", 0, 1)
    mask_color: str | None = opt(None, "The overlay's pure colour (white, #ff0000, 255,0,0) is the mask.")
    strict_mask: bool = opt(False, "Refuse a mask with grey pixels instead of rounding it at 50 %.")
    keep_known: bool | None = opt(None, "Paste the known pixels back into the result (default: on).")
    # Which output is the result, and when to stop.
    keep: Keep = opt(Keep.BEST, "best: by PSNR with --reference, by output variance without; last.")
    stop: Stop | None = opt(
        None,
        "auto: stop once the automatic choice is settled (see --patience); default: auto for the tasks that have "
        "it unless --iters is given, else fixed.",
    )
    window: int = opt(100, "ES-WMV window (outputs).", 2)
    patience: int | None = opt(
        None,
        "Use the fixed-patience rule: stop when the output variance (ES-WMV) has had no new minimum for this many "
        "iterations (1000, the default before dip 0.2). Default: the variance's patience grows with its minimum "
        "(300 iterations or a quarter of it), and with a noise level the choice is the first loss at "
        f"{LOSS_RATIO:g} x its power, the run ending there.",
        1,
    )
    noise_sigma: float | None = opt(
        None,
        "The noise's standard deviation (0-255) if known, else estimated from the image; the automatic choice "
        f"is the first output whose residual reaches {LOSS_RATIO:g} x its power (given: the estimate where the "
        "image holds less, as clipping to 0-255 leaves it).",
        high=255,
        above=0,
    )
    peak: float | None = opt(
        None,
        "The photon count of a white pixel if known, else estimated from the image; the loss is the Poisson "
        "deviance and the automatic choice the first output whose deviance reaches 1/peak.",
        high=1e6,
        above=0,
    )
    fit_level_db: float | None = opt(
        None,
        "Stop where the fit to the low-resolution input first reaches this PSNR (dB). Default: drp 40, dip none.",
        high=100,
        above=0,
    )
    trace_output: bool = opt(False, "With a reference: the PSNR of net(z) at every step too (one more forward).")
    # Size handling and outputs on the way.
    pad: PadMode = opt(PadMode.REFLECT, "reflect: pad to a multiple of 2^depth and crop back; none: only tiny images.")
    tile: int = opt(0, "Restore in overlapping tiles of this many input pixels; 0: whole image.", 0)
    overlap: int = opt(32, "Overlap of neighbouring tiles (pixels), blended.", 0)
    save_every: int = opt(0, "Also write the result so far every K iterations.", 0)
    checkpoint_every: int = opt(0, "Write a checkpoint (OUT_stem.ckpt.npz) every K iterations; 0: none.", 0)

    def __post_init__(self) -> None:
        for name, enum in _ENUMS.items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, enum):
                try:
                    object.__setattr__(self, name, enum(value))
                except ValueError:
                    choices = ", ".join(e.value for e in enum)
                    what = _WORDS.get(name, name)
                    raise ProblemError(f"unknown {what} {value!r}; choose one of {choices}") from None
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, bool) and not within(f.name, value):
                raise ProblemError(f"{_WORDS.get(f.name, f.name.replace('_', ' '))} {bounds_text(f.name)}, got {value}")

    @classmethod
    def of(cls, options: RunOptions | None = None, **changes: Any) -> RunOptions:
        """`options` (or the defaults) with keyword changes; an unknown keyword is a user error."""
        base = options if options is not None else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ProblemError(f"unknown setting(s): {', '.join(unknown)}")
        return replace(base, **changes) if changes else base

    def overrides(self) -> dict[str, Any]:
        """The preset fields this run changes."""
        return {k: getattr(self, k) for k in PRESET_OVERRIDES if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (enums as their names)."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}


_WORDS = {"iters": "iterations", "pad": "padding", "input": "network input", "keep": "keep rule", "stop": "stop rule"}
_ENUMS: dict[str, type[Enum]] = {
    "backend": BackendName,
    "device": Device,
    "precision": Precision,
    "input": InputKind,
    "method": Method,
    "keep": Keep,
    "stop": Stop,
    "pad": PadMode,
}


def option_help(name: str) -> str:
    """A RunOptions field's help; a task-specific option's starts with the tasks that take it ("sr: ...")."""
    text = _FIELDS[name].metadata["help"]
    takers = [t.value for t in Task if t in TAKEN_BY[name]] if name in TAKEN_BY else []
    if not takers or len(takers) == len(Task):
        return text
    return f"{'/'.join(takers)}: {text[0].lower()}{text[1:]}"


def within(name: str, value: float) -> bool:
    """Whether `value` is within a RunOptions field's bounds."""
    meta = _FIELDS[name].metadata
    low, high, above = meta["low"], meta["high"], meta["above"]
    return not (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    )


def option_bounds(name: str) -> tuple[float | None, float | None]:
    """A RunOptions field's inclusive bounds (None: open)."""
    meta = _FIELDS[name].metadata
    return meta["low"], meta["high"]


def bounds_text(name: str) -> str:
    """The bounds in words: "must be >= 1", "must be above 0 and at most 255"."""
    meta = _FIELDS[name].metadata
    parts = [f">= {_number(meta['low'])}"] if meta["low"] is not None else []
    parts += [f"above {_number(meta['above'])}"] if meta["above"] is not None else []
    parts += [f"at most {_number(meta['high'])}"] if meta["high"] is not None else []
    return "must be " + " and ".join(parts)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def option_table() -> dict[str, dict[str, Any]]:
    """Every option's help and bounds, as the web page gets them (/api/info)."""
    keys = ("low", "high", "above")
    return {name: {"help": option_help(name)} | {k: f.metadata[k] for k in keys} for name, f in _FIELDS.items()}


_FIELDS = {f.name: f for f in fields(RunOptions)}
