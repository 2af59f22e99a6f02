"""The stopping rules: which output a run without a reference keeps, and when the automatic stop ends it.

A rule is pure state: given each step's scalars (the window variance, the mean of the recent losses) it answers
with a `Decision` (the outputs to keep, in which slots, and whether the run ends there); the loop
(dip_core.fit.loop) applies it to the session. No rule holds a session, so a rule replays on recorded curves as is.

Two families, chosen once from the settings (`rule_for`): `DefaultRule` (no patience given) and
`FixedPatienceRule`. Both track the ES-WMV point (`VarianceMinimum`) and, with a noise level, the discrepancy
point (`DiscrepancyPoint`); they differ in the latter's level, in when the run ends and in which point they choose.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any

from dip_core.backend import Kept
from dip_core.fit.settings import FitSettings, Stop

Request = tuple[str, Kept]  # keep `Kept` of this step in the slot named (Session.keep)

LOSS_WINDOW = 20  # losses averaged for the discrepancy check (single losses are noisy: z gets fresh noise)

# The default rule's patience without a noise level: this many iterations, or this fraction of the minimum's
# iteration when that is more (a late minimum comes on a slower curve). 300: replayed on the recorded denoising
# curves (`bench.autostop`), a fixed patience of 300 chose as 1000 did; the fraction keeps a late choice's wait
# under a third of its iteration. No recorded sr/restore/inpaint curve reached a stop under either rule.
PATIENCE_MIN = 300
PATIENCE_FRACTION = 0.25


def mean_recent_loss(losses: list[float]) -> float:
    """Mean of the last LOSS_WINDOW finite losses (inf until there are that many)."""
    recent = [x for x in losses[-2 * LOSS_WINDOW :] if math.isfinite(x)][-LOSS_WINDOW:]
    return sum(recent) / len(recent) if len(recent) == LOSS_WINDOW else math.inf


def least_mean_with_next(losses: list[float]) -> float:
    """The least `mean_recent_loss` the next step can make: losses are >= 0, so it is at least the others' sum
    over LOSS_WINDOW."""
    before = [x for x in losses[-(2 * LOSS_WINDOW - 1) :] if math.isfinite(x)][-(LOSS_WINDOW - 1) :]
    return sum(before) / LOSS_WINDOW if len(before) == LOSS_WINDOW - 1 else math.inf


def is_overfit(settings: FitSettings, loss: float) -> bool:
    """A loss this far below the noise power means the output reproduces the noise."""
    return settings.noise_power is not None and loss < settings.overfit_ratio * settings.noise_power


def patience_at(settings: FitSettings, minimum_iter: int) -> int:
    """Iterations without a new variance minimum that end a run whose minimum is at `minimum_iter`."""
    if settings.patience is not None:
        return settings.patience
    return max(PATIENCE_MIN, math.ceil(PATIENCE_FRACTION * minimum_iter))


def ema_lag(weight: float) -> int:
    """How many steps an EMA of this weight lags the outputs it averages (once it has averaged many)."""
    return round(weight / (1 - weight))


class EmaCentre:
    """When the EMA is centred on an output: its centre (the mean iteration of the outputs it averages, weighted as
    it weighs them) follows the same recursion as the EMA itself. Without warm-up the lag is taken as `lag` at every
    iteration, as dip 0.4 did; with one (dip_core.backend.Monitoring.ema_warmup) it grows with the iteration,
    about i / warmup until the weight reaches its cap. Counts every step as averaged (a rolled-back one is not)."""

    def __init__(self, lag: int, warmup: int) -> None:
        self.lag, self.warmup = lag, warmup
        # The cap, back from the lag: exact for 0.99, 0.95, 0.9, ..., within 0.001 of any other weight (a centring
        # estimate: the average itself is the monitors').
        self.weight = max(lag, 0) / (max(lag, 0) + 1)
        self.centres = [0.0]  # after t outputs (t = 0: none yet)

    def lag_at(self, i: int) -> int:
        """Steps after output i until the EMA's centre first reaches it."""
        if self.lag < 0:
            return 0
        if not self.warmup:
            return self.lag
        c = self.centres
        while c[-1] < i:
            n = len(c) - 1  # outputs averaged before this one
            w = min(self.weight, n / (n + self.warmup))
            c.append(w * c[-1] + (1 - w) * (n + 1))
        return bisect.bisect_left(c, i) - i


class ScalarState:
    """Trackers whose state is their scalar dataclass fields (checkpoints: `loop/<tracker>/<field>`)."""

    def state(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self) if f.init}  # type: ignore[arg-type]

    def load(self, values: dict[str, float]) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            if f.init and f.name in values:
                setattr(self, f.name, type(getattr(self, f.name))(values[f.name]))
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()  # what it derives from the fields (the EMA's centre)


@dataclass
class VarianceMinimum(ScalarState):
    """ES-WMV: the output where the windowed variance of outputs is least, kept in slot "wmv"."""

    lag: int = -1  # steps the EMA lags the outputs once warm; -1: no EMA (the output there is net(z), from its state)
    minimum: float = math.inf
    iter: int = 0  # iteration of the minimum (0: none yet)
    loss: float = math.inf  # the loss (mean of the last LOSS_WINDOW) there
    warmup: int = 0  # the EMA's warm-up (its lag grows with the iteration; EmaCentre)

    def __post_init__(self) -> None:
        self.centre = EmaCentre(self.lag, self.warmup)

    def centred(self, i: int) -> tuple[Request, ...]:
        """With EMA, the average centred on the minimum is the one its lag after it."""
        return (
            (("wmv", Kept.EMA),)
            if self.lag >= 0 and self.iter and i == self.iter + self.centre.lag_at(self.iter)
            else ()
        )

    def take(self, i: int, variance: float, recent: float) -> tuple[Request, ...]:
        """A new minimum at step i: what to keep there."""
        self.minimum, self.iter, self.loss = variance, i, recent
        return (("wmv", Kept.EMA),) if self.lag >= 0 else (("wmv", Kept.OUT), ("wmv", Kept.STATE))


@dataclass
class DiscrepancyPoint(ScalarState):
    """Morozov's discrepancy principle: the first point where the loss reaches a level, kept in slot "disc"."""

    lag: int = -1
    iter: int = 0  # first iteration whose mean loss reached the level (0: not yet)
    ready: bool = False  # its output is in hand (with EMA: once the average centred on it exists)
    warmup: int = 0

    def __post_init__(self) -> None:
        self.centre = EmaCentre(self.lag, self.warmup)

    def due(self) -> int:
        """The iteration whose EMA is centred on the point (the point itself without EMA)."""
        return self.iter + self.centre.lag_at(self.iter)

    def update(self, i: int, recent: float, level: float) -> tuple[Request, ...]:
        """Take in step i's mean loss: what to keep there."""
        keep: tuple[Request, ...] = ()
        if not self.iter and recent <= level:
            self.iter = i
            if self.lag < 0:
                keep, self.ready = (("disc", Kept.STATE),), True
        # `>=`: a step rolled back at iter + lag is not booked here, and the next one takes its place.
        if self.lag >= 0 and self.iter and not self.ready and i >= self.due():
            keep, self.ready = (*keep, ("disc", Kept.EMA)), True
        return keep


@dataclass(frozen=True)
class Decision:
    """What a rule asks of the loop after a step: outputs to keep (in this order), and whether the run ends."""

    keep: tuple[Request, ...] = ()
    stop: bool = False


class StoppingRule(ABC):
    """ES-WMV and, with a noise level, the discrepancy point: the state both families share, and a step's booking.

    Made for a run that tracks them (auto stop, or no reference); only under the auto stop does it end the run."""

    def __init__(self, settings: FitSettings) -> None:
        self.settings = settings
        self.auto = settings.stop is Stop.AUTO
        lag = ema_lag(settings.exp_weight) if settings.exp_weight > 0 else -1
        self.wmv = VarianceMinimum(lag, warmup=settings.ema_warmup)
        self.disc = DiscrepancyPoint(lag, warmup=settings.ema_warmup) if settings.noise_power else None
        self.level = self.discrepancy_level(settings)

    @staticmethod
    @abstractmethod
    def discrepancy_level(settings: FitSettings) -> float:
        """The mean loss at which the discrepancy point is reached."""

    @staticmethod
    @abstractmethod
    def describe(settings: FitSettings) -> dict[str, Any]:
        """The rule's settings, as a report records them."""

    @abstractmethod
    def settled(self, i: int, recent: float) -> bool:
        """With a discrepancy point: the choice can only be it, at step i (the auto stop ends the run)."""

    @abstractmethod
    def may_settle(self, i: int, losses: list[float]) -> bool:
        """Could step i settle it, given the losses before it?"""

    @abstractmethod
    def choice(self) -> tuple[int, str]:
        """The iteration chosen (0: none yet) and which rule chose it ("wmv" | "discrepancy")."""

    def variance_ends(self, i: int) -> bool:
        """Has the patience run out at step i? Known before step i's variance is (only a new minimum would keep
        the run going), so it also says whether step i could end the run."""
        return self.wmv.iter > 0 and i - self.wmv.iter >= patience_at(self.settings, self.wmv.iter)

    def step(self, i: int, variance: float | None, recent: float) -> Decision:
        """Take in step i's window variance (None: the window is not full) and mean recent loss."""
        keep = self.wmv.centred(i)
        if self.disc is not None:
            keep += self.disc.update(i, recent, self.level)
        stop = False
        if variance is not None:
            if variance < self.wmv.minimum:
                keep += self.wmv.take(i, variance, recent)
            else:
                stop = self.auto and self.variance_ends(i)
        if self.auto and self.disc is not None and self.settled(i, recent):
            stop = True
        return Decision(keep, stop)

    def may_stop(self, i: int, losses: list[float]) -> bool:
        """Could step i end the run, given the losses before it? (Then no step may be queued behind it.)"""
        if not self.auto:
            return False
        return self.variance_ends(i) or (self.disc is not None and self.may_settle(i, losses))

    def trackers(self) -> dict[str, ScalarState]:
        """The state to checkpoint, by name."""
        return {"wmv": self.wmv} if self.disc is None else {"wmv": self.wmv, "disc": self.disc}


class DefaultRule(StoppingRule):
    """No patience given. With a noise level, the choice is the discrepancy point at `loss_ratio` x the noise
    power and the run ends as soon as its output is in hand (the variance never ends it); without one, ES-WMV
    with a patience that grows with the minimum's iteration (`patience_at`)."""

    @staticmethod
    def discrepancy_level(settings: FitSettings) -> float:
        return settings.loss_ratio * (settings.noise_power or 0.0)

    @staticmethod
    def describe(settings: FitSettings) -> dict[str, Any]:
        rule: dict[str, Any] = {"rule": "default", "patience": None}
        if settings.noise_power:
            rule["loss_ratio"] = settings.loss_ratio
        else:
            rule["patience_min"], rule["patience_fraction"] = PATIENCE_MIN, PATIENCE_FRACTION
        return rule

    def variance_ends(self, i: int) -> bool:
        return self.disc is None and super().variance_ends(i)

    def settled(self, i: int, recent: float) -> bool:
        return self.disc is not None and self.disc.ready

    def may_settle(self, i: int, losses: list[float]) -> bool:
        d = self.disc
        if d is None:
            return False
        if d.iter:
            return d.ready or i >= d.due()
        return d.lag <= 0 and least_mean_with_next(losses) <= self.level

    def choice(self) -> tuple[int, str]:
        if self.disc is not None and self.disc.iter and self.disc.ready:
            return self.disc.iter, "discrepancy"  # the choice whenever the loss reached its level
        return self.wmv.iter, "wmv"


class FixedPatienceRule(StoppingRule):
    """A patience given (dip 0.1's rule): ES-WMV, the run ending once the variance has had no new minimum for that
    many iterations. With a noise level, the discrepancy point at the noise power replaces a variance point that
    lies deep in noise fitting, and ends the run once both it and the current loss are overfit, a patience on."""

    @staticmethod
    def discrepancy_level(settings: FitSettings) -> float:
        return settings.noise_power or 0.0

    @staticmethod
    def describe(settings: FitSettings) -> dict[str, Any]:
        return {"rule": "fixed patience", "patience": settings.patience}

    def waited(self, i: int) -> bool:
        """The patience has passed since the discrepancy point, at step i."""
        d = self.disc
        return d is not None and d.iter > 0 and i - d.iter >= patience_at(self.settings, d.iter)

    def settled(self, i: int, recent: float) -> bool:
        """The variance's minimum and the current loss are both overfit, and the patience has passed."""
        s = self.settings
        ready = self.disc is not None and self.disc.ready
        return ready and self.waited(i) and is_overfit(s, self.wmv.loss) and is_overfit(s, recent)

    def may_settle(self, i: int, losses: list[float]) -> bool:
        d = self.disc
        if d is None or not self.waited(i) or (not d.ready and i < d.due()):
            return False
        return is_overfit(self.settings, least_mean_with_next(losses))

    def choice(self) -> tuple[int, str]:
        d, wmv = self.disc, self.wmv
        if d is not None and d.iter and d.ready and is_overfit(self.settings, wmv.loss) and d.iter < wmv.iter:
            return d.iter, "discrepancy"  # the variance's point lies deep in noise fitting
        return wmv.iter, "wmv"


def rule_type(settings: FitSettings) -> type[StoppingRule]:
    """The family the settings ask for."""
    return FixedPatienceRule if settings.fixed_patience else DefaultRule


def rule_for(settings: FitSettings) -> StoppingRule:
    """A fresh rule of the family the settings ask for."""
    return rule_type(settings)(settings)


def stopping_rule(settings: FitSettings) -> dict[str, Any]:
    """The stopping rule's settings, as a report records them."""
    return rule_type(settings).describe(settings)
