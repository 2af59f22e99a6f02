"""How a fit runs: its settings, what it keeps as the result and when it stops."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Keep(str, Enum):
    BEST = "best"  # by PSNR with a reference, by the windowed output variance (ES-WMV) without
    LAST = "last"  # the output after the last step (its EMA when on)


class Stop(str, Enum):
    FIXED = "fixed"  # run every iteration
    AUTO = "auto"  # stop once the automatic choice is settled (dip_core.fit.rules: the default or fixed-patience rule)


# The default rule's choice with a noise level: the first loss at this multiple of the noise power. Chosen on the
# stopping study's test set (bench/report/stopping-test-set.md; README, "When to stop").
LOSS_RATIO = 1.0


@dataclass(frozen=True)
class FitSettings:
    iters: int
    exp_weight: float = 0.0  # EMA of outputs; 0 = off
    ema_warmup: int = 0  # the EMA's weight after n outputs is at most n / (n + this) (0: exp_weight from the start)
    backtrack: bool = False
    backtrack_db: float = 5.0
    check_every: int = 100
    window: int = 100  # ES-WMV window for the no-reference choice
    lr: float = 0.01
    keep: Keep = Keep.BEST  # best: by PSNR with a reference, by ES-WMV without; last: the final output
    stop: Stop = Stop.FIXED  # fixed: run all iters; auto: stop once the automatic choice is settled (see below)
    # None: the default rule (dip_core.fit.rules.DefaultRule); a number: the fixed-patience rule, where the run
    # stops once the variance has had no new minimum for this many iterations.
    patience: int | None = None
    loss_ratio: float = LOSS_RATIO  # the default rule with a noise level: the first loss <= this x noise_power
    trace_output: bool = False  # with a reference: PSNR of net(z) at every step too (one more forward; benchmarks)
    rollback_lr_factor: float = 0.5  # the learning rate after a rollback (divergence or collapse), relative
    # The loss expected at the truth, known or estimated (its fidelity term's level: sigma^2 for the squared error,
    # 1/peak for the Poisson deviance); None: unknown. The discrepancy point and the overfitting check use it.
    noise_power: float | None = None
    overfit_ratio: float = 0.5  # the variance rule's point counts as overfit when its loss < this x noise_power
    save_every: int = 0  # hand the result so far to `on_save` every this many iterations (0: never)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", Keep(self.keep))
        object.__setattr__(self, "stop", Stop(self.stop))
        patience = 1 if self.patience is None else self.patience
        if self.iters < 1 or self.window < 2 or patience < 1 or self.check_every < 1 or self.save_every < 0:
            raise ValueError(f"iters, patience, check_every >= 1, window >= 2 and save_every >= 0, got {self}")
        if self.ema_warmup < 0:
            raise ValueError(f"the EMA's warm-up is >= 0, got {self.ema_warmup}")
        if not 0 < self.loss_ratio <= 2:
            raise ValueError(f"the loss ratio is in (0, 2], got {self.loss_ratio}")

    @property
    def fixed_patience(self) -> bool:
        """The fixed-patience rule (a patience was given) rather than the default one."""
        return self.patience is not None
