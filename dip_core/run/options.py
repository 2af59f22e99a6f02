"""Every setting of a run in one frozen object, built once (by the CLI or the caller) and passed down.

`restore`, `restore_tiled`, `dip run` and `dip batch` all take a `RunOptions`;
keyword arguments of the Python API are folded into one with `RunOptions.of`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from dip_core.backend import BackendName, Device
from dip_core.fit.settings import Keep, Stop
from dip_core.model.inputs import InputKind
from dip_core.model.method import Method
from dip_core.problem.padding import PadMode
from dip_core.problem.tasks import ProblemError
from dip_core.system.precision import Precision

# Preset fields a run may override (None keeps the preset's value); see dip_core.problem.presets.Preset.
PRESET_OVERRIDES = (
    "iters", "lr", "reg_noise_std", "exp_weight", "backtrack", "backtrack_db", "check_every", "net", "input",
    "input_channels",
)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """How to run: backend, precision, preset and its overrides, the choice of the result, outputs on the way."""

    backend: BackendName = BackendName.MLX
    device: Device = Device.AUTO  # auto: Metal / CUDA / MPS when present, else the CPU
    precision: Precision | None = None  # None: the device's default (fp32 on a CPU, tf32 on a GPU)
    seed: int = 0  # seeds the weights, z and the per-step input noise
    threads: int | None = None  # CPU threads of the backend; None: the cores that are free when it starts
    preset: str | None = None  # None: the task's preset for the method (sr: the one of `factor`)
    method: Method | None = None  # dip or drp (model/method.py); None: the named preset's, else dip
    # Preset overrides; None keeps the preset's value.
    iters: int | None = None
    lr: float | None = None
    reg_noise_std: float | None = None
    exp_weight: float | None = None  # EMA of outputs; 0 turns it off
    backtrack: bool | None = None
    backtrack_db: float | None = None
    check_every: int | None = None
    net: str | None = None  # a name of dip_core.model.config.NETS or a JSON file
    input: InputKind | None = None
    input_channels: int | None = None
    # The problem, where the task needs it.
    factor: int | None = None  # sr: 2, 4 or 8
    kernel: str | None = None  # deblur: gaussian:S, box:K, motion:L,A or a kernel image's path
    drop: float | None = None  # restore: drop this fraction of a clean image's pixels first
    mask_color: str | None = None  # inpaint: the overlay's pure colour is the mask
    strict_mask: bool = False  # refuse a mask with grey pixels instead of rounding it at 50 %
    keep_known: bool | None = None  # paste the known pixels back into the result; None: on for inpaint and restore
    # Which output is the result, and when to stop.
    keep: Keep = Keep.BEST
    stop: Stop | None = None  # None: auto for the registry's auto-stop tasks unless `iters` is given
    window: int = 100  # ES-WMV window (outputs)
    patience: int | None = None  # None: the default stopping rule; a number: ES-WMV with this fixed patience
    noise_sigma: float | None = None  # denoise: the noise's std on 0-255 if known (else estimated)
    peak: float | None = None  # poisson: the photons of a white pixel if known (else estimated)
    trace_output: bool = False  # with a reference: PSNR of net(z) at every step too (one more forward)
    # Size handling and outputs on the way.
    pad: PadMode = PadMode.REFLECT  # reflect-pad to a multiple of 2**depth and crop back
    tile: int = 0  # restore in overlapping tiles of this many input pixels; 0: the whole image
    overlap: int = 32  # overlap of neighbouring tiles (pixels), blended
    save_every: int = 0  # write the result so far every this many iterations (0: never)
    checkpoint_every: int = 0  # write a checkpoint every this many iterations (0: never)

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
        if self.window < 2 or (self.patience is not None and self.patience < 1):
            raise ProblemError(
                f"the variance window must be >= 2 and the patience >= 1, got {self.window} and {self.patience}"
            )
        if self.noise_sigma is not None and not 0 < self.noise_sigma < 255:
            raise ProblemError(f"the noise level is a standard deviation in (0, 255), got {self.noise_sigma}")
        if self.peak is not None and not 0 < self.peak <= 1e6:
            raise ProblemError(f"the peak is the photon count of a white pixel, in (0, 1e6], got {self.peak}")
        if self.threads is not None and self.threads < 1:
            raise ProblemError(f"threads must be >= 1, got {self.threads}")
        for name in ("tile", "overlap", "save_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ProblemError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")

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


_WORDS = {"pad": "padding", "input": "network input", "keep": "keep rule", "stop": "stop rule"}
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
