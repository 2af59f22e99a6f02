"""The tasks as data: each one a registered spec that the CLI, the web page, the estimates and the tests read.

A spec says what the task's observation is (its operator A and its data-fidelity term), which options it takes,
its presets (the paper's settings), how its noise level is found for the stopping rule, what `dip degrade`
simulates for it, and the few warnings and extra outputs that differ between tasks. Adding a task is adding a
member to `Task` and a spec to `SPECS` (and, for a new kind of noise, its fidelity term in both backends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from dip_core.model.method import Method
from dip_core.problem import simulate
from dip_core.problem.degrade import OpKind
from dip_core.problem.fidelity import FidelityKind


class Task(str, Enum):
    DENOISE = "denoise"
    JPEG = "jpeg"
    INPAINT = "inpaint"
    RESTORE = "restore"
    SR = "sr"
    DEBLUR = "deblur"
    POISSON = "poisson"


class NoiseModel(str, Enum):
    """How a task's noise level, the stopping rule's discrepancy level, is found."""

    NONE = "none"  # no level: the variance rule chooses
    GAUSSIAN = "gaussian"  # --noise-sigma, or estimated from the input
    POISSON = "poisson"  # --peak (photons at white), or estimated from the input


# Options a task may or may not take (RunOptions fields, and `mask`); every other option applies to every task.
MASK_OPTIONS = frozenset({"mask", "mask_color", "strict_mask", "keep_known"})


@dataclass(frozen=True)
class TaskSpec:
    """One task: everything that differs between tasks, in one place."""

    task: Task
    summary: str  # one line for help texts and the web page
    operator: OpKind  # A in the loss: identity, mask, downsampling or blur
    presets: MappingProxyType[str, dict[str, Any]]  # name -> Preset fields (the paper's DIP)
    fidelity: FidelityKind = FidelityKind.MSE
    options: frozenset[str] = frozenset()  # the task-specific options it takes (see MASK_OPTIONS, `taken_by`)
    noise: NoiseModel = NoiseModel.NONE
    auto_stop: bool = False  # --stop auto by default (unless --iters is given): measured to help this task
    # A run this far below its preset's iterations was seen to end below its input: warned before it starts.
    warn_short_runs: bool = False
    baseline: bool = False  # a bicubic upscale to compare with (sr: its report has psnr_bicubic)
    estimate_downscaled: bool = False  # `--estimate` may propose a half-size run (the corruption survives it)
    simulate: Callable[[Any, simulate.Corruption], dict[str, Any]] = field(default=simulate.noisy, repr=False)
    degrade_sigma: float = 0.0  # noise std (0-255) `dip degrade` adds unless --sigma is given
    default: str = ""  # the preset a run takes unless told ("": the first)
    # --method drp: the Deep Random Projector's presets (empty: the task does not take it), the first the default
    # unless a factor picks one.
    drp_presets: MappingProxyType[str, dict[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def presets_of(self, method: Method = Method.DIP) -> MappingProxyType[str, dict[str, Any]]:
        """The task's presets for a method (empty: the task does not take it)."""
        return self.drp_presets if method is Method.DRP else self.presets

    @property
    def methods(self) -> tuple[Method, ...]:
        """The methods the task takes."""
        return tuple(m for m in Method if self.presets_of(m))

    def default_preset(self, factor: int | None = None, method: Method = Method.DIP) -> str:
        """The task's default preset for a method, or the first whose factor is `factor` (sr2, sr4, sr8)."""
        presets = self.presets_of(method)
        for name, fields in presets.items():
            if factor is not None and fields.get("factor") == factor:
                return name
        return self.default if self.default and method is Method.DIP else next(iter(presets))


def _presets(**named: dict[str, Any]) -> MappingProxyType[str, dict[str, Any]]:
    return MappingProxyType({name.replace("_", "-"): fields for name, fields in named.items()})


# The paper's settings (from the authors' code, one notebook per task); `note` says where each comes from.
_DENOISING = {"exp_weight": 0.99, "backtrack": True}

# The Deep Random Projector (dip_core/model/method.py), from the authors' scripts (one per task): convolutions
# frozen, the seed and the BatchNorms trained with Adam, loss sqrt(MSE) + tv_weight x TV, at most 5000 steps.
# Their scripts add no noise to the seed and keep no average of outputs; they stop nowhere (the 5000 steps are a
# budget: a PSNR curve is recorded). Their inpainting script also jitters the frozen weights by N(0, 1e-3^2) at
# every step; that is left out here (the weights stay exactly as drawn).
# Stopping: dip's default rule, whose discrepancy point is the first mean loss (the data term) at loss_ratio x
# the noise power. DRP's TV term keeps its data term above the noise power for longer, but its PSNR peaks well
# below it: at 1.0 (dip's level) the rule stopped at 31-55 iterations, 0.3-1.1 dB under the peak, on five images
# (denoise, sigma 25, 64-96 px, MLX, one seed); at 0.7 it stopped at 78-288 iterations, 0-0.35 dB under the
# peak (0.65 and 0.75 were worse on average). PSNR falls slowly after DRP's peak (about 1.5 dB in 1800 steps).
_DRP = {
    "method": "drp", "input": "gaussian", "reg_noise_std": 0.0, "exp_weight": 0.0, "iters": 5000, "loss_ratio": 0.7,
}  # fmt: skip
# DRP's sr: the low-resolution input is clean, so there is no noise level to stop at, and the output variance never
# settles (lr 0.5: it ran all 5000 iterations). Its PSNR against the clean image peaks early and then falls slowly,
# and the peak comes as the fit to the input passes 40 dB (a mean loss of 1e-4): the rule stops at the first mean
# loss at that level. x4 from 128 px, MLX, seed 0: chosen on chelsea, astronaut and coffee (stops at 102-145
# iterations, 0.02-0.10 dB under the best); then camera, grass and hubble (66-269 iterations, 0.01-0.29 dB under).
# DIP's sr runs its 2000 iterations: on chelsea and astronaut its last output was 0.13-0.19 dB under DRP's choice.
# Measured at x4 only; x2 and x8 take the same level untried.
_DRP_SR = {
    **_DRP, "net": "drp-wide", "input_channels": 1, "lr": 0.5, "tv_weight": 0.75,
    "fit_level_db": 40.0, "loss_ratio": 1.0,
}  # fmt: skip
SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        Task.DENOISE,
        "remove Gaussian noise",
        OpKind.IDENTITY,
        _presets(denoise={**_DENOISING, "note": "paper: F16, sigma=25 (1/20 reg-noise for sigma=50)"}),
        options=frozenset({"noise_sigma"}),
        noise=NoiseModel.GAUSSIAN,
        auto_stop=True,
        estimate_downscaled=True,
        simulate=simulate.noisy,
        degrade_sigma=25.0,  # the paper's sigma
        drp_presets=_presets(
            drp_denoise={
                **_DRP,
                "net": "drp",
                "input_channels": 3,
                "lr": 0.1,
                "tv_weight": 0.45,
                "note": "DRP authors' denoising script (sigma=25)",
            },
        ),
    ),
    TaskSpec(
        Task.JPEG,
        "remove JPEG compression artifacts",
        OpKind.IDENTITY,
        _presets(jpeg={**_DENOISING, "net": "jpeg", "input_channels": 3, "iters": 2400, "note": "paper: snail.jpg"}),
        auto_stop=True,
        warn_short_runs=True,
        estimate_downscaled=True,
        simulate=simulate.jpeg,
    ),
    TaskSpec(
        Task.INPAINT,
        "fill in a masked region (white = known)",
        OpKind.MASK,
        _presets(
            inpaint={"net": "inpaint-text", "iters": 6001, "reg_noise_std": 0.03, "note": "paper: kate, text overlay"},
            inpaint_hole=dict(
                net="inpaint-hole",
                input="meshgrid",
                input_channels=2,
                iters=5001,
                reg_noise_std=0.03,
                note="paper: vase, large hole",
            ),
            inpaint_region=dict(
                net="inpaint-region", input_channels=1, iters=3001, reg_noise_std=0.0, note="paper: library"
            ),
        ),
        options=MASK_OPTIONS,
        simulate=simulate.text_overlay,
        drp_presets=_presets(
            drp_inpaint={
                **_DRP,
                "net": "drp-inpaint",
                "input": "meshgrid",
                "input_channels": 2,
                "lr": 0.05,
                "tv_weight": 0.01,
                "note": "DRP authors' inpainting script (meshgrid seed; no weight jitter)",
            },
        ),
    ),
    TaskSpec(
        Task.RESTORE,
        "restore dropped pixels (a mask, or --drop to simulate)",
        OpKind.MASK,
        _presets(
            restore=dict(iters=11000, lr=0.001, reg_noise_std=0.03, backtrack=True, note="paper: barbara, 50% pixels")
        ),
        options=MASK_OPTIONS | {"drop"},
        auto_stop=True,
        simulate=simulate.dropped_pixels,
    ),
    TaskSpec(
        Task.SR,
        "super-resolution x2, x4 or x8",
        OpKind.DOWNSAMPLE,
        _presets(
            sr2={"iters": 2000, "reg_noise_std": 0.03, "factor": 2, "note": "x2 is not in the paper; x4 settings"},
            sr4={"iters": 2000, "reg_noise_std": 0.03, "factor": 4, "note": "paper: zebra x4"},
            sr8={"iters": 4000, "reg_noise_std": 0.05, "factor": 8, "note": "paper: zebra x8"},
        ),
        options=frozenset({"factor", "fit_level_db"}),
        auto_stop=True,
        warn_short_runs=True,
        baseline=True,
        simulate=simulate.downscaled,
        default="sr4",
        drp_presets=_presets(
            drp_sr4={**_DRP_SR, "factor": 4, "note": "DRP authors' x4 script"},
            drp_sr2={**_DRP_SR, "factor": 2, "note": "x2 is not in DRP's scripts; x4 settings"},
            drp_sr8={**_DRP_SR, "factor": 8, "note": "x8 is not in DRP's scripts; x4 settings"},
        ),
    ),
    TaskSpec(
        Task.DEBLUR,
        "remove a known blur (--kernel)",
        OpKind.BLUR,
        _presets(deblur={"exp_weight": 0.99, "note": "not in the paper's code: the denoising settings"}),
        options=frozenset({"kernel"}),
        warn_short_runs=True,
        simulate=simulate.blurred,
        # A blurred photograph carries some noise, and it is what makes plain deconvolution fail and a prior matter.
        degrade_sigma=2.0,
    ),
    TaskSpec(
        Task.POISSON,
        "remove photon (shot) noise: a low-light or low-dose image",
        OpKind.IDENTITY,
        _presets(poisson={**_DENOISING, "note": "not in the paper: the denoising settings, Poisson fidelity"}),
        fidelity=FidelityKind.POISSON,
        options=frozenset({"peak"}),
        noise=NoiseModel.POISSON,
        auto_stop=True,
        estimate_downscaled=True,
        simulate=simulate.photon_counts,
    ),
)

REGISTRY: MappingProxyType[Task, TaskSpec] = MappingProxyType({s.task: s for s in SPECS})


def spec_of(task: Task | str) -> TaskSpec:
    """The registered spec of a task (a Task or its name)."""
    return REGISTRY[Task(task)]


def taken_by(option: str) -> frozenset[Task]:
    """The tasks that take a task-specific option (every task for the others)."""
    takers = frozenset(s.task for s in SPECS if option in s.options)
    return takers if option in TASK_OPTIONS else frozenset(Task)


TASK_OPTIONS = frozenset().union(*(s.options for s in SPECS))


def taking(method: Method) -> tuple[Task, ...]:
    """The tasks that take a method."""
    return tuple(s.task for s in SPECS if method in s.methods)


def describe(task: Task | str) -> dict[str, Any]:
    """A task as the web page and the docs read it (plain JSON)."""
    s = spec_of(task)
    return {
        "name": s.task.value,
        "summary": s.summary,
        "operator": s.operator.value,
        "fidelity": s.fidelity.value,
        "options": sorted(s.options),
        "presets": list(s.presets),
        "methods": [m.value for m in s.methods],
        "noise": s.noise.value,
        "auto_stop": s.auto_stop,
        "needs_mask": s.operator is OpKind.MASK,
    }
