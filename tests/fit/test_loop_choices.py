"""The loop's choices on scripted runs are the ones the loop made before its trackers were split out.

tests/fit/scripted_choices.json was written by running tests/fit/scripted.py's scenarios through dip_core.fit.loop at
commit 916578c (the loop as one `_Loop` with `_accept`); this runs them through today's loop on a
HostSession (the numpy monitors) and asks for the same numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dip_core.fit.loop import fit
from dip_core.fit.monitors import HostSession
from dip_core.fit.settings import FitSettings
from dip_core.problem.metrics import psnr_from_mse
from tests.fit import scripted

RECORDED = json.loads((Path(__file__).parent / "scripted_choices.json").read_text())


def _collapses(losses: list[float | None], settings: dict) -> set[int]:
    """Iterations at which backtracking rolled back (a check with PSNR against the input down > 5 dB)."""
    if not settings.get("backtrack"):
        return set()
    every, last, out = settings.get("check_every", 100), -math.inf, set()
    for i, loss in enumerate(losses, start=1):
        if loss is None or i % every:
            continue
        p = psnr_from_mse(loss)
        if p < last - 5:
            out.add(i)
        else:
            last = p
    return out


class Scripted(HostSession):
    def __init__(self, scenario: scripted.Scenario) -> None:
        self.scenario, self.t, self.lr, self.calls = scenario, 0, None, 0

    def advance(self):
        self.calls += 1
        self.t += 1
        return self.scenario.step(self.t)

    def net_output(self):
        return scripted.clean_output(self.t)

    def model_snapshot(self):
        return self.t

    def model_restore(self, snap):
        self.t = int(snap)

    def set_lr(self, lr):
        self.lr = lr

    def weights(self):
        return {}


class Pipelined(Scripted):
    """As a GPU session: the loop queues the next step before it reads this one."""

    pipelined = True


@pytest.mark.parametrize("session_type", [Scripted, Pipelined])
@pytest.mark.parametrize("scenario", scripted.SCENARIOS, ids=lambda s: s.name)
def test_the_loop_chooses_as_before(scenario, session_type):
    reference = scripted.REFERENCE if scenario.reference else None
    session = session_type(scenario)
    result = fit(session, FitSettings(**scenario.settings), reference=reference)
    got, want = json.loads(json.dumps(scripted.summary(result))), dict(RECORDED[scenario.name])
    # The host computes as the old loop did (float64 PSNRs and variances): the same numbers, bit for bit,
    # but for one deliberate change: at a step that collapsed, the EMA's PSNR is that of the step's own
    # EMA (the old loop took it after rolling back, of the restored EMA).
    collapsed = _collapses(got["losses"], scenario.settings)
    ema_got, ema_want = got.pop("psnr_ema_curve"), want.pop("psnr_ema_curve")
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    finite = [i for i, loss in enumerate(got["losses"], start=1) if loss is not None]
    changed = {finite[k] for k, (a, b) in enumerate(zip(ema_got, ema_want, strict=True)) if a != b}
    assert changed <= collapsed and bool(changed) == bool(collapsed and scenario.reference)
    assert session.lr in (None, result.final_lr)
    # Queued ahead, a step after a non-finite one ran from its state and ran again; no step ran past a stop.
    discarded = session.calls - result.iters_done
    diverged = None in want["losses"]
    assert discarded > 0 if session_type is Pipelined and diverged else discarded == 0
