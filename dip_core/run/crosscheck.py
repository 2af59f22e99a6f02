"""Proof that two backends compute the same thing from the same weights.

Everything random (initial weights, z, the target, the per-step input noise) is
drawn once in numpy and fed to both backends. Three comparisons follow:

- forward: the output for the same input;
- gradients: the loss gradient of every parameter;
- trajectory: N Adam steps on MSE to a fixed target with shared input noise.

With the Deep Random Projector (`CrossCheckCase.method`), the loss is DRP's (sqrt(MSE) + tv_weight x TV of the
output), the gradients those of what it trains (the BatchNorms, and the input z, compared as "z"), and the
trajectory trains z and the BatchNorms from a shared Gaussian seed with the convolutions frozen.

Float32 rounding alone makes two correct implementations differ, and some
networks amplify it (BatchNorm over a 2x2 feature map; Adam's first steps,
which move every weight by about lr whatever the size of its gradient). So the
report also measures the reference backend against itself with its weights
perturbed by one float32 ulp: the *noise floor* that no fp32 implementation can
beat. A difference at or under that floor is rounding, not a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dip_core.backend import Backend
from dip_core.model.config import SkipConfig, check_size
from dip_core.model.inputs import InputKind, make_input
from dip_core.model.method import Method
from dip_core.model.params import count_params, grad_is_structurally_zero
from dip_core.model.weights import Weights, init_weights

# Targets of the cross-check in fp32 on the CPU.
FORWARD_TARGET = 1e-4  # max |out_a - out_b|
GRAD_TARGET = 1e-3  # max over parameters of max|g_a - g_b| / max|g_b|
LOSS_TARGET = 1e-3  # max over steps of |loss_a - loss_b| / loss_b

# A parameter whose gradient is below this fraction of the network's largest
# gradient is compared against that floor instead of itself: such gradients
# (convolution biases feeding a BatchNorm, BatchNorm shifts followed by a
# scale-invariant BatchNorm) are zero in exact arithmetic, so their own
# magnitude is rounding noise and a ratio to it would be meaningless.
NEGLIGIBLE = 1e-3

ULP = float(np.finfo(np.float32).eps)

# A difference this many times max(target, noise floor) is a bug, not rounding: the
# checks that motivate it (Adam without bias correction, a wrong LeakyReLU slope,
# a misplaced padding) land orders of magnitude above.
DISAGREE = 10.0


@dataclass(frozen=True)
class CrossCheckCase:
    """What is compared: one network, one input size, one shared random draw."""

    cfg: SkipConfig
    height: int = 64
    width: int = 64
    steps: int = 20  # Adam steps of the trajectory
    seed: int = 0  # draws weights, z, target and input noise
    lr: float = 0.01  # Adam learning rate (the paper's)
    reg_noise_std: float = 1.0 / 30.0  # std of the noise added to z at every step
    method: Method = Method.DIP  # drp: DRP's loss, frozen convolutions, z trained
    tv_weight: float = 0.45  # drp: the weight of TV in its loss (its denoising preset's)


@dataclass
class Comparison:
    """The three measured differences between two runs."""

    forward_max_abs_diff: float
    grad_max_rel_diff: float
    grad_worst_param: str
    loss_max_rel_diff: float
    output_max_abs_diff: float  # after the trajectory
    grad_rel_diff: dict[str, float] = field(default_factory=dict)
    loss_rel_diff: list[float] = field(default_factory=list)


@dataclass
class CrossCheckReport:
    backends: tuple[str, str]
    devices: tuple[str, str]
    precision: str  # what both ran as (dip_core.system.precision)
    config: dict[str, Any]
    size: tuple[int, int]
    steps: int
    seed: int
    lr: float
    method: str  # dip or drp (what the gradients and the trajectory train)
    params: dict[str, int]  # parameter count in each backend, by name
    result: Comparison
    noise_floor: Comparison | None  # reference backend against itself, weights perturbed by 1 ulp
    block_rel_diff: dict[str, float]  # forward: relative difference of every block's output
    diverges_at: str | None  # first block whose difference jumps well above the first block's
    losses: dict[str, list[float]]

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        r = self.result
        rows = {
            "forward_max_abs_diff": (r.forward_max_abs_diff, FORWARD_TARGET),
            "grad_max_rel_diff": (r.grad_max_rel_diff, GRAD_TARGET),
            "loss_max_rel_diff": (r.loss_max_rel_diff, LOSS_TARGET),
        }
        out = {}
        for key, (value, target) in rows.items():
            floor = getattr(self.noise_floor, key) if self.noise_floor is not None else None
            out[key] = {"value": value, "target": target, "met": bool(value <= target), "noise_floor": floor}
        return out

    @property
    def excess(self) -> float:
        """Largest ratio of a difference to max(target, fp32 noise floor); <= 1 is agreement."""
        ratios = [t["value"] / max(t["target"], t["noise_floor"] or 0.0) for t in self.targets.values()]
        return float(max(ratios))

    @property
    def within_noise_floor(self) -> bool:
        """Every difference is under its target or under twice the fp32 noise floor."""
        return self.noise_floor is not None and self.excess <= 2.0

    @property
    def verdict(self) -> str:
        """met | noise (within 2x the floor) | above-noise (up to 10x) | disagree (a bug)."""
        if all(t["met"] for t in self.targets.values()):
            return "met"
        if self.within_noise_floor:
            return "noise"
        return "above-noise" if self.excess <= DISAGREE else "disagree"

    def to_json(self) -> dict[str, Any]:
        """Flat keys for scripts, details below them."""
        r = self.result
        return {
            "backends": list(self.backends),
            "devices": list(self.devices),
            "precision": self.precision,
            "params": self.params,
            "size": list(self.size),
            "steps": self.steps,
            "seed": self.seed,
            "lr": self.lr,
            "method": self.method,
            "forward_max_abs_diff": r.forward_max_abs_diff,
            "grad_max_rel_diff": r.grad_max_rel_diff,
            "grad_worst_param": r.grad_worst_param,
            "loss_max_rel_diff": r.loss_max_rel_diff,
            "output_max_abs_diff": r.output_max_abs_diff,
            "targets": self.targets,
            "all_targets_met": all(t["met"] for t in self.targets.values()),
            "within_noise_floor": self.within_noise_floor,
            "excess": self.excess,
            "verdict": self.verdict,
            "noise_floor": _comparison_json(self.noise_floor) if self.noise_floor else None,
            "diverges_at": self.diverges_at,
            "block_rel_diff": self.block_rel_diff,
            "grad_rel_diff": r.grad_rel_diff,
            "loss_rel_diff": r.loss_rel_diff,
            "losses": self.losses,
            "config": self.config,
        }


def agrees(verdict: str) -> bool:
    """Whether a verdict says the backends agree: every one but `disagree` (rounding, even amplified by
    ill-conditioned layers, is not a bug; a bug lands far beyond DISAGREE)."""
    return verdict != "disagree"


def verdict_text(verdict: str, excess: float | None) -> str:
    """The one wording of a verdict: `dip crosscheck` prints it and the chip table's machine notes quote it."""
    times = f"{excess:.1f}x" if excess is not None else "more than"
    if verdict == "met":
        return "the backends agree: all targets met"
    if verdict == "noise":
        return (
            "the backends agree as closely as float32 allows: targets not all met, but every difference is within "
            "2x the fp32 noise floor"
        )
    if verdict == "above-noise":
        return (
            f"the backends agree up to rounding: differences reach {times} the larger of target and fp32 noise "
            "floor, rounding amplified by ill-conditioned layers; a bug lands far higher"
        )
    return f"the backends disagree: {times} beyond target and fp32 noise floor"


def _comparison_json(c: Comparison) -> dict[str, Any]:
    d = asdict(c)
    d.pop("grad_rel_diff")
    d.pop("loss_rel_diff")
    return d


@dataclass(frozen=True)
class SharedDraw:
    weights: Weights
    z: np.ndarray
    target: np.ndarray
    noises: np.ndarray


def draw(case: CrossCheckCase) -> SharedDraw:
    """Everything random, drawn once in numpy."""
    cfg = case.cfg
    check_size(cfg, case.height, case.width)
    rng = np.random.default_rng(case.seed)
    weights = init_weights(cfg, seed=case.seed)
    kind = InputKind.GAUSSIAN if case.method is Method.DRP else InputKind.NOISE  # each method's seed
    z = make_input(kind, cfg.in_channels, case.height, case.width, seed=case.seed + 1)
    target = rng.random((case.height, case.width, cfg.out_channels), dtype=np.float32)
    shape = (case.steps, case.height, case.width, cfg.in_channels)
    noises = (rng.standard_normal(shape, dtype=np.float32) * case.reg_noise_std).astype(np.float32)
    return SharedDraw(weights, z, target, noises)


def perturb(weights: Weights, seed: int) -> Weights:
    """Every weight moved by about one float32 ulp (relative), randomly signed."""
    rng = np.random.default_rng(seed)
    return {
        name: (w * (1 + ULP * rng.choice(np.array([-1.0, 1.0], np.float32), size=w.shape))).astype(np.float32)
        for name, w in weights.items()
    }


def grad_rel_diffs(cfg: SkipConfig, ga: Weights, gb: Weights) -> dict[str, float]:
    """max|ga - gb| / max|gb| per parameter.

    The denominator is at least NEGLIGIBLE x the network's largest gradient; for
    a gradient that is zero in exact arithmetic (grad_is_structurally_zero) it is
    that largest gradient itself, so only its absolute rounding noise is judged.
    """
    top = max(max(float(np.abs(g).max()) for g in gb.values()), float(np.finfo(np.float32).tiny))
    out = {}
    for name in gb:
        scale = top if grad_is_structurally_zero(cfg, name) else max(float(np.abs(gb[name]).max()), NEGLIGIBLE * top)
        out[name] = float(np.abs(ga[name] - gb[name]).max() / scale)
    return out


# Called before each phase of a cross-check with (phases done, phases in all, what runs now).
OnPhase = Callable[[int, int, str], None]

RUN_PHASES = 3  # forward, gradients, Adam trajectory


def phase_count(floor_samples: int) -> int:
    """How many phases a cross-check has: three per run (two backends, the noise floor's runs), then the blocks."""
    return RUN_PHASES * (2 + floor_samples) + 1


class _Phases:
    """Counts phases and reports each to `on_phase` as it starts."""

    def __init__(self, on_phase: OnPhase | None, total: int) -> None:
        self.on_phase, self.total, self.done = on_phase, total, 0

    def __call__(self, what: str) -> None:
        if self.on_phase is not None:
            self.on_phase(self.done, self.total, what)
        self.done += 1


def _run(
    backend: Backend,
    case: CrossCheckCase,
    d: SharedDraw,
    weights: Weights,
    phase: Callable[[str], None] = lambda what: None,
    label: str = "",
) -> dict[str, Any]:
    label = label or backend.name
    cfg, method, tv = case.cfg, case.method, case.tv_weight
    phase(f"{label}: forward")
    net = backend.build(cfg, weights)
    params = _count(backend.get_weights(net))
    out = backend.forward(net, d.z)
    phase(f"{label}: gradients")
    loss, grads = backend.loss_and_grads(net, d.z, d.target, method, tv)
    phase(f"{label}: {len(d.noises)} Adam steps")
    losses, final = backend.adam_steps(net, d.z, d.noises, d.target, case.lr, method, tv)
    return {"out": out, "loss": loss, "grads": grads, "losses": losses, "final": final, "params": params}


def compare(cfg: SkipConfig, a: dict[str, Any], b: dict[str, Any]) -> Comparison:
    """Differences of run `a` from reference run `b`."""
    rel = grad_rel_diffs(cfg, a["grads"], b["grads"])
    worst = max(rel, key=lambda name: rel[name])
    la, lb = np.asarray(a["losses"], np.float64), np.asarray(b["losses"], np.float64)
    loss_rel = (np.abs(la - lb) / np.maximum(np.abs(lb), 1e-30)).tolist()
    return Comparison(
        forward_max_abs_diff=float(np.abs(a["out"] - b["out"]).max()),
        grad_max_rel_diff=rel[worst],
        grad_worst_param=worst,
        loss_max_rel_diff=float(max(loss_rel)) if loss_rel else 0.0,
        output_max_abs_diff=float(np.abs(a["final"] - b["final"]).max()),
        grad_rel_diff=rel,
        loss_rel_diff=loss_rel,
    )


def block_diffs(a: Backend, b: Backend, cfg: SkipConfig, weights: Weights, z: np.ndarray) -> dict[str, float]:
    """Relative difference (max abs diff / max abs value) of every block's output."""
    ta = a.block_outputs(a.build(cfg, weights), z)
    tb = b.block_outputs(b.build(cfg, weights), z)
    return {name: float(np.abs(ta[name] - tb[name]).max() / max(float(np.abs(tb[name]).max()), 1e-30)) for name in tb}


def first_divergence(diffs: dict[str, float], factor: float = 10.0) -> str | None:
    """The first block (in forward order) whose difference exceeds `factor` x the first block's."""
    if not diffs:
        return None
    base = max(next(iter(diffs.values())), 1e-12)
    for name, value in diffs.items():
        if value > factor * base:
            return name
    return None


def worst_of(comparisons: list[Comparison]) -> Comparison:
    """Element-wise worst of several comparisons (the noise floor over several samples)."""
    worst = max(comparisons, key=lambda c: c.grad_max_rel_diff)
    rel = {k: max(c.grad_rel_diff[k] for c in comparisons) for k in worst.grad_rel_diff}
    return Comparison(
        forward_max_abs_diff=max(c.forward_max_abs_diff for c in comparisons),
        grad_max_rel_diff=worst.grad_max_rel_diff,
        grad_worst_param=worst.grad_worst_param,
        loss_max_rel_diff=max(c.loss_max_rel_diff for c in comparisons),
        output_max_abs_diff=max(c.output_max_abs_diff for c in comparisons),
        grad_rel_diff=rel,
        loss_rel_diff=[max(v) for v in zip(*(c.loss_rel_diff for c in comparisons), strict=True)],
    )


def crosscheck(
    a: Backend, b: Backend, case: CrossCheckCase, floor_samples: int = 3, on_phase: OnPhase | None = None
) -> CrossCheckReport:
    """Compare backend `a` against reference backend `b` on one shared draw.

    `floor_samples` runs of `b` from 1-ulp perturbed weights measure the fp32
    noise floor (0 skips it). `on_phase` hears of each phase as it starts
    (phase_count(floor_samples) in all), for a progress display: a run on the
    default network takes minutes on a small CPU.
    """
    cfg = case.cfg
    d = draw(case)
    phase = _Phases(on_phase, phase_count(floor_samples))
    run_a = _run(a, case, d, d.weights, phase)
    run_b = _run(b, case, d, d.weights, phase)
    floor = None
    if floor_samples:
        runs = [
            _run(b, case, d, perturb(d.weights, case.seed + 7 + k), phase, f"{b.name} noise floor {k + 1}")
            for k in range(floor_samples)
        ]
        floor = worst_of([compare(cfg, r, run_b) for r in runs])
    phase("differences block by block")
    blocks = block_diffs(a, b, cfg, d.weights, d.z)
    return CrossCheckReport(
        backends=(a.name, b.name),
        devices=(a.device, b.device),
        precision=a.precision.value if a.precision is b.precision else f"{a.precision.value}/{b.precision.value}",
        config=cfg.to_dict(),
        size=(case.height, case.width),
        steps=case.steps,
        seed=case.seed,
        lr=case.lr,
        method=case.method.value,
        params={a.name: run_a["params"], b.name: run_b["params"], "layout": count_params(cfg)},
        result=compare(cfg, run_a, run_b),
        noise_floor=floor,
        block_rel_diff=blocks,
        diverges_at=first_divergence(blocks),
        losses={a.name: run_a["losses"], b.name: run_b["losses"]},
    )


def _count(weights: Weights) -> int:
    return int(sum(w.size for w in weights.values()))
