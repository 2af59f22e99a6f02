"""The default stopping rule (no --patience): the discrepancy choice at loss_ratio x sigma^2 with a noise level,
a patience that grows with the variance minimum's iteration without one; a given patience keeps the old rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dip_core.fit.loop import fit
from dip_core.fit.rules import LOSS_WINDOW, PATIENCE_FRACTION, PATIENCE_MIN, patience_at
from dip_core.fit.settings import FitSettings
from dip_core.problem.degrade import add_noise
from dip_core.run.api import restore
from tests.conftest import BACKENDS
from tests.fit import scripted
from tests.fit.test_loop_choices import Pipelined, Scripted
from tests.images import synthetic

SIGMA, STEPS = 0.1, 400


def first_mean_loss_at_most(level: float, losses: list[float]) -> int:
    """The first iteration whose mean of the last LOSS_WINDOW losses is <= level (1-based)."""
    return next(
        t for t in range(LOSS_WINDOW, len(losses) + 1) if np.mean(losses[t - LOSS_WINDOW : t]) <= level
    )  # fmt: skip


def overfit_losses() -> list[float]:
    return [scripted.overfit(t, SIGMA, STEPS)[0] for t in range(1, STEPS + 1)]


@pytest.mark.parametrize("session_type", [Scripted, Pipelined])
@pytest.mark.parametrize("exp_weight", [0.0, 0.75], ids=["states", "ema"])
def test_with_a_noise_level_the_choice_is_the_first_loss_at_the_ratio(session_type, exp_weight):
    scenario = scripted.Scenario("default", "overfit", {})
    session = session_type(scenario)
    settings = FitSettings(iters=STEPS, window=5, stop="auto", noise_power=SIGMA**2, exp_weight=exp_weight)
    result = fit(session, settings)
    expected = first_mean_loss_at_most(settings.loss_ratio * SIGMA**2, overfit_losses())
    lag = 3 if exp_weight else 0  # 0.75 / (1 - 0.75)
    assert result.auto_rule == "discrepancy" and result.stop_iter == result.discrepancy_iter == expected
    assert result.result_iter == expected and result.stopped_early
    # The run ends as soon as the output there is in hand, and no step was queued past it.
    assert result.iters_done == expected + lag and session.calls == result.iters_done
    # The ratio is the one the loss reached: below it at the choice, above it one step before.
    losses = overfit_losses()
    assert np.mean(losses[expected - LOSS_WINDOW : expected]) <= settings.loss_ratio * SIGMA**2
    assert np.mean(losses[expected - 1 - LOSS_WINDOW : expected - 1]) > settings.loss_ratio * SIGMA**2


def test_a_given_patience_keeps_the_old_choice_and_stop():
    """With --patience the discrepancy point is the one at sigma^2, used only against an overfit variance point,
    and the run waits the patience: as dip 0.1 did (tests/fit/scripted_choices.json holds its recorded choices)."""
    old = fit(Scripted(scripted.Scenario("p", "overfit", {})), FitSettings(
        iters=STEPS, window=5, stop="auto", patience=50, noise_power=SIGMA**2))  # fmt: skip
    new = fit(Scripted(scripted.Scenario("d", "overfit", {})), FitSettings(
        iters=STEPS, window=5, stop="auto", noise_power=SIGMA**2))  # fmt: skip
    assert old.stop_iter == first_mean_loss_at_most(SIGMA**2, overfit_losses())
    assert new.stop_iter == first_mean_loss_at_most(FitSettings(iters=1).loss_ratio * SIGMA**2, overfit_losses())
    assert old.iters_done >= old.stop_iter + 50 and new.iters_done == new.stop_iter


@pytest.mark.parametrize("session_type", [Scripted, Pipelined])
@pytest.mark.parametrize("centre", [60, 1600])
def test_without_a_noise_level_the_patience_grows_with_the_minimum(session_type, centre):
    scenario = scripted.Scenario("drift", "drift", {}, kwargs={"centre": centre})
    session = session_type(scenario)
    result = fit(session, FitSettings(iters=4000, window=10, stop="auto"))
    patience = max(PATIENCE_MIN, math.ceil(PATIENCE_FRACTION * result.stop_iter))
    assert abs(result.stop_iter - centre) <= 15 and result.auto_rule == "wmv"
    assert result.iters_done == result.stop_iter + patience and session.calls == result.iters_done
    assert (patience == PATIENCE_MIN) == (centre < 1200)


def test_patience_at():
    default = FitSettings(iters=10)
    assert [patience_at(default, k) for k in (0, 100, 1200, 1201, 4000)] == [300, 300, 300, 301, 1000]
    assert patience_at(FitSettings(iters=10, patience=1000), 4000) == 1000


def test_with_a_noise_level_the_variance_does_not_end_the_run():
    """Under the default rule a denoising run ends at the discrepancy point, not at an early variance minimum:
    here the variance's minimum is at 60 and the loss never reaches the level, so the run goes to the end and
    the variance point is the choice."""
    scenario = scripted.Scenario("drift", "drift", {}, kwargs={"centre": 60})  # losses about 0.01 throughout
    result = fit(Scripted(scenario), FitSettings(iters=500, window=10, stop="auto", noise_power=0.05**2))
    assert result.iters_done == 500 and not result.stopped_early
    assert result.auto_rule == "wmv" and abs(result.stop_iter - 60) <= 15 and result.discrepancy_iter is None


@pytest.mark.parametrize("bad", [0.0, -0.1, 2.5])
def test_the_loss_ratio_is_checked(bad):
    with pytest.raises(ValueError, match="loss ratio"):
        FitSettings(iters=10, loss_ratio=bad)


@pytest.mark.parametrize(("patience", "rule"), [(None, "default"), (40, "fixed patience")])
def test_the_report_names_the_rule(patience, rule):
    noisy = add_noise(synthetic(23, 19), 25, 0)
    rep = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=3, stop="auto", patience=patience,
                  net="tiny", input_channels=4).report  # fmt: skip
    assert rep["stopping"]["rule"] == rule and rep["stopping"]["patience"] == patience
    assert ("loss_ratio" in rep["stopping"]) == (patience is None)


def test_a_step_rolled_back_where_the_choice_is_kept_does_not_lose_it():
    """With an average lagging 3 steps, the discrepancy output is kept 3 steps after the point; a divergent step
    there (rolled back, not booked) moves the keeping to the next step instead of losing the choice."""
    from bench.replay import replay

    losses = overfit_losses()
    settings = FitSettings(iters=STEPS, window=5, stop="auto", noise_power=SIGMA**2, exp_weight=0.75)
    variances = [1.0 / k for k in range(1, STEPS)]  # falling throughout: the variance never chooses
    clean_stop, clean = replay(settings, losses, variances)
    point = clean.disc.iter
    assert clean_stop == point + 3
    broken = list(losses)
    broken[point + 3 - 1] = float("nan")
    stop, loop = replay(settings, broken, variances)
    assert stop == point + 4 and loop.disc.iter == point and loop.disc.ready
