"""Scripted runs of the loop: every step's loss and output follow a formula of the step number.

The model's "state" is the step counter, so a rollback replays the script from
the snapshot, and net(z) at a kept state is a formula of that state too. Each
scenario gives the settings, a script and (optionally) a reference.
tests/fit/test_loop_choices.py checks that the loop's choices on them are the ones
recorded from the loop as it was before its trackers were split out (commit
916578c), in tests/fit/scripted_choices.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPE = (6, 5, 3)


def _noise(t: int) -> np.ndarray:
    return np.random.default_rng(t).standard_normal(SHAPE).astype(np.float32)


def drift(t: int, centre: int = 60) -> tuple[float, np.ndarray]:
    """Outputs whose spread shrinks until `centre` and grows after: a variance minimum near it."""
    spread = abs(t - centre) / 100 + 0.01
    return 0.01 + 0.002 * math.sin(t), (0.5 + spread * _noise(t)).astype(np.float32)


def overfit(t: int, sigma: float = 0.1, steps: int = 400) -> tuple[float, np.ndarray]:
    """Losses falling through the noise power while the outputs keep settling."""
    loss = 2 * sigma**2 * (0.05 / 2) ** (t / steps)
    return loss, (0.5 + (0.2 / t) * _noise(t)).astype(np.float32)


def approach(t: int) -> tuple[float, np.ndarray]:
    """Outputs that come closest to the reference (0.5 everywhere) at step 40."""
    return 0.02, (0.5 + (abs(t - 40) / 200 + 0.002) * _noise(t)).astype(np.float32)


def troubled(t: int) -> tuple[float, np.ndarray]:
    """A collapse (PSNR against the input drops 20 dB) at step 30 and a non-finite step at 47."""
    loss, out = drift(t, 25)
    if t == 30:
        return 1.0, out
    if t == 47:
        return float("nan"), out
    return loss, out


def clean_output(t: int) -> np.ndarray:
    """net(z) in the state after step t: a smooth function of t."""
    return np.full(SHAPE, 0.4 + 0.2 * math.sin(t / 50), np.float32)


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str  # a function of this module: step -> (loss, output)
    settings: dict[str, Any]
    reference: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def step(self, t: int) -> tuple[float, np.ndarray]:
        return globals()[self.script](t, **self.kwargs)


REFERENCE = np.full(SHAPE, 0.5, np.float32)

SCENARIOS = [
    Scenario("wmv-ema-auto", "drift", {"iters": 400, "window": 10, "stop": "auto", "patience": 40, "exp_weight": 0.9}),
    Scenario("wmv-state-auto", "drift", {"iters": 400, "window": 10, "stop": "auto", "patience": 40}),
    Scenario("wmv-state-fixed", "drift", {"iters": 150, "window": 10}),
    Scenario(
        "discrepancy-state",
        "overfit",
        {"iters": 400, "window": 5, "stop": "auto", "patience": 50, "noise_power": 0.1**2},
    ),
    Scenario(
        "discrepancy-ema",
        "overfit",
        {"iters": 400, "window": 5, "stop": "auto", "patience": 50, "noise_power": 0.1**2, "exp_weight": 0.75},
    ),
    Scenario("reference-ema", "approach", {"iters": 90, "exp_weight": 0.8}, reference=True),
    Scenario("reference-plain", "approach", {"iters": 90}, reference=True),
    Scenario("reference-last", "approach", {"iters": 90, "exp_weight": 0.8, "keep": "last"}, reference=True),
    Scenario(
        "rollbacks",
        "troubled",
        {"iters": 80, "window": 6, "backtrack": True, "check_every": 10, "exp_weight": 0.5, "lr": 0.01},
    ),
    Scenario(
        "rollbacks-reference",
        "troubled",
        {"iters": 80, "backtrack": True, "check_every": 10, "exp_weight": 0.5},
        reference=True,
    ),
]


def summary(result: Any) -> dict[str, Any]:
    """What the loop chose, in plain numbers."""

    def total(values: Any) -> float | None:
        return None if values is None else float(np.sum(np.asarray(values, np.float64)))

    return {
        "result_iter": result.result_iter,
        "selection": result.selection,
        "iters_done": result.iters_done,
        "stopped_early": result.stopped_early,
        "stop_iter": result.stop_iter,
        "auto_rule": result.auto_rule,
        "discrepancy_iter": result.discrepancy_iter,
        "rollbacks": result.rollbacks,
        "final_lr": result.final_lr,
        "best_psnr": result.best_psnr,
        "auto_psnr": result.auto_psnr,
        "result_sum": total(result.result),
        "final_sum": total(result.final),
        "ema_sum": total(result.ema),
        "losses": [None if math.isnan(x) else x for x in result.loss_curve],
        "variance_sum": total(result.variance_curve),
        "psnr_sum": total(result.psnr_curve),
        "psnr_ema_curve": list(result.psnr_ema_curve),
        "psnr_output_sum": total(result.psnr_output_curve),
    }
