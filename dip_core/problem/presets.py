"""Named presets: every setting of the loop besides the image, per task (their values are in the task registry)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dip_core.errors import UserError
from dip_core.model.inputs import InputKind
from dip_core.model.method import Method
from dip_core.problem.registry import SPECS, Task, spec_of, taking


class PresetError(UserError):
    """An unknown preset or an invalid override."""


@dataclass(frozen=True)
class Preset:
    """Everything the loop needs besides the image; every field can be overridden."""

    task: Task
    method: Method = Method.DIP  # dip: train the network; drp: train z and the BatchNorms (model/method.py)
    net: str = "default"  # a name of dip_core.model.config.NETS or a JSON file
    input: InputKind = InputKind.NOISE  # z: noise, gaussian or meshgrid
    input_channels: int = 32  # channels of z (2 for meshgrid)
    iters: int = 3000  # optimisation steps
    lr: float = 0.01  # Adam learning rate
    reg_noise_std: float = 1.0 / 30.0  # std of the noise added to z at every step
    exp_weight: float = 0.0  # EMA of outputs: ema = w * ema + (1 - w) * out; 0 = off
    # The EMA's weight after n outputs is at most n / (n + ema_warmup): its centre lies about a tenth of the run
    # behind the latest output until exp_weight caps it (after 891 outputs at 0.99), and it forgets the first,
    # blurred outputs, which the paper's average (0: from the first output) still held at 37 % after 100 steps.
    # Chosen in dip 0.5 (docs/stopping.md): a stop in the first few hundred steps (sigma 50-75) returned their blur.
    ema_warmup: int = 9
    backtrack: bool = False  # roll back when PSNR against the input drops > backtrack_db
    backtrack_db: float = 5.0
    check_every: int = 100  # iterations between backtracking checks
    factor: int = 1  # super-resolution factor
    tv_weight: float = 0.0  # drp: weight of the output's total variation in the loss (dip has none)
    # The default stopping rule's discrepancy level, x the noise power; None: the rule's own (fit/settings.py).
    loss_ratio: float | None = None
    # A task without noise (sr): the default rule chooses, and ends the run, where the data term's PSNR (the fit to
    # the input) first reaches this many dB; None: no such level (the output variance chooses).
    fit_level_db: float | None = None
    note: str = ""  # where the values come from

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task(self.task))
        object.__setattr__(self, "input", InputKind(self.input))
        object.__setattr__(self, "method", Method(self.method))
        if self.iters < 1 or self.iters > 1_000_000:
            raise PresetError(f"iterations must be between 1 and 1,000,000, got {self.iters}")
        if not self.lr > 0 or self.lr > 10:
            raise PresetError(f"learning rate must be in (0, 10], got {self.lr}")
        if self.reg_noise_std < 0:
            raise PresetError(f"reg-noise std must be >= 0, got {self.reg_noise_std}")
        if not 0 <= self.exp_weight < 1:
            raise PresetError(f"EMA weight must be in [0, 1), got {self.exp_weight}")
        if not 0 <= self.ema_warmup <= 1_000_000:
            raise PresetError(f"EMA warm-up must be between 0 and 1,000,000, got {self.ema_warmup}")
        if self.check_every < 1:
            raise PresetError(f"check interval must be >= 1, got {self.check_every}")
        if self.input is InputKind.MESHGRID and self.input_channels != 2:
            object.__setattr__(self, "input_channels", 2)
        if self.input_channels < 1:
            raise PresetError(f"input channels must be >= 1, got {self.input_channels}")
        if self.fit_level_db is not None and not 0 < self.fit_level_db <= 100:
            raise PresetError(f"a fit level is in (0, 100] dB, got {self.fit_level_db}")
        if self.tv_weight < 0 or (self.tv_weight and self.method is not Method.DRP):
            raise PresetError(f"a total-variation weight is >= 0 and for drp only, got {self.tv_weight}")

    def override(self, **changes: Any) -> Preset:
        """A copy with the given (non-None) settings changed and validated."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise PresetError(f"unknown setting(s): {', '.join(unknown)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        try:
            return replace(self, **changes)
        except ValueError as exc:
            raise PresetError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["task"] = self.task.value
        d["input"] = self.input.value
        d["method"] = self.method.value
        if self.method is Method.DIP:
            # Left out for dip: its presets keep the description of earlier releases (checkpoints resume).
            for name in ("method", "tv_weight", "loss_ratio"):
                del d[name]
        if d["fit_level_db"] is None:
            del d["fit_level_db"]  # as earlier releases described every preset without one
        if not d["ema_warmup"] or not d["exp_weight"]:
            del d["ema_warmup"]  # the paper's average, or none: as releases before 0.5 wrote it (checkpoints resume)
        return d


PRESETS: dict[str, Preset] = {
    name: Preset(s.task, **fields) for s in SPECS for m in s.methods for name, fields in s.presets_of(m).items()
}
DEFAULT_PRESET: dict[Task, str] = {s.task: s.default_preset() for s in SPECS}


def preset_for(
    task: Task | str, name: str | None = None, factor: int | None = None, method: Method | str | None = None
) -> Preset:
    """The named preset, or the task's default for the method (None: dip; for sr: the one of the factor). A named
    preset brings its own method, which must then be `method` when one is given."""
    task = Task(task)
    method = Method(method) if method is not None else None
    if name is None:
        spec = spec_of(task)
        if method is not None and method not in spec.methods:
            takers = ", ".join(t.value for t in taking(method))
            raise PresetError(f"--method {method.value} takes the tasks {takers}; not {task.value}")
        name = spec.default_preset(factor, method or Method.DIP)
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if preset.task is not task:
        raise PresetError(f"preset {name!r} is for {preset.task.value}, not {task.value}")
    if method is not None and preset.method is not method:
        raise PresetError(f"preset {name!r} is a {preset.method.value} preset, not {method.value}")
    return preset
