"""The stopping rules' own decisions, replayed on a run's recorded losses and window variances.

`fit` books each step's scalars and hands them to its stopping rule (dip_core.fit.rules); here the same rule is
handed the recorded ones, as `fit` books them for a run without a reference: no session, nothing kept.
"""

from __future__ import annotations

import math

from dip_core.fit.rules import StoppingRule, mean_recent_loss, rule_for
from dip_core.fit.settings import FitSettings


def replay(settings: FitSettings, losses: list[float], variances: list[float]) -> tuple[int | None, StoppingRule]:
    """The iteration the rule `settings` ask for stops at on these curves (None: it runs to the end), and the
    rule as it stands there. `variances` holds one per finite step once the window is full (a run's curve)."""
    rule = rule_for(settings)
    pending = iter(variances)
    booked: list[float] = []  # the losses as `fit` books them (NaN where a step was not finite)
    finite = 0
    for i, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            booked.append(math.nan)  # rolled back: not handed to the rule
            continue
        booked.append(loss)
        finite += 1
        variance = next(pending) if finite >= settings.window else None
        if rule.step(i, variance, mean_recent_loss(booked)).stop:
            return i, rule
    return None, rule
