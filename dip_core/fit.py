"""The DIP loop, framework-neutral: EMA, backtracking, choice of the result, progress.

Each backend supplies a Session (its loop.py) that takes one optimisation step
at a time; everything decided between steps lives here, once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dip_core.backend import Session
from dip_core.checkpoint import Checkpointing, save_checkpoint
from dip_core.metrics import psnr, psnr_from_mse
from dip_core.stopping import WindowVariance


@dataclass(frozen=True)
class FitSettings:
    iters: int
    exp_weight: float = 0.0  # EMA of outputs; 0 = off
    backtrack: bool = False
    backtrack_db: float = 5.0
    check_every: int = 100
    window: int = 100  # ES-WMV window for the no-reference choice
    lr: float = 0.01
    keep: str = "best"  # "best": by PSNR with a reference, by ES-WMV without; "last": the final output
    stop: str = "fixed"  # "fixed": run all iters; "auto": stop once the variance has no new minimum for `patience`
    patience: int = 1000  # ES-WMV patience (iterations)
    trace_output: bool = False  # with a reference: PSNR of net(z) at every step too (one more forward; benchmarks)
    rollback_lr_factor: float = 0.5  # the learning rate after a rollback (divergence or collapse), relative
    noise_sigma: float | None = None  # denoising: the noise level (image units), for the overfitting check below
    overfit_ratio: float = 0.5  # the variance rule's point counts as overfit when its loss < this x noise_sigma^2


@dataclass
class StepInfo:
    """What the progress display shows after each step."""

    i: int  # 1-based iteration just done
    iters: int
    loss: float
    psnr_input: float  # PSNR of A(out) against the corrupted input (from the loss)
    psnr: float | None  # PSNR of the current result against the reference
    rollbacks: int
    current: Callable[[], np.ndarray]  # the result as it stands (for periodic saving)


@dataclass
class FitResult:
    result: np.ndarray  # the output chosen by `keep`
    result_iter: int
    selection: str  # "psnr" | "wmv" | "last"
    final: np.ndarray  # net(z) after the last step, no input noise
    ema: np.ndarray | None
    iters_done: int
    seconds: float
    ms_per_iter: float
    interrupted: bool = False
    rollbacks: int = 0
    loss_curve: list[float] = field(default_factory=list)
    psnr_curve: list[float] = field(default_factory=list)  # output vs reference, per step
    psnr_ema_curve: list[float] = field(default_factory=list)
    psnr_output_curve: list[float] = field(default_factory=list)  # net(z) vs reference, with trace_output
    variance_curve: list[float] = field(default_factory=list)
    best_psnr: float | None = None
    stopped_early: bool = False  # --stop auto ended the run
    stop_iter: int | None = None  # iteration of the automatic choice (the ES-WMV point, or the discrepancy point)
    auto_psnr: float | None = None  # with a reference: PSNR of the output at stop_iter
    auto_rule: str | None = None  # "wmv" | "discrepancy": which rule made the automatic choice
    discrepancy_iter: int | None = None  # first iteration whose loss (mean of the last 20) fell below noise_sigma^2
    final_lr: float | None = None  # the learning rate at the end (lower after rollbacks)


@dataclass
class _Loop:
    """Everything the loop carries from one step to the next (and into a checkpoint)."""

    lr: float
    snap: Any  # the session state backtracking and divergence return to
    wmv: WindowVariance | None
    done: int = 0  # steps taken, rolled-back ones included
    rollbacks: int = 0
    last_check: float = -math.inf  # PSNR against the input at the last backtracking check
    ema: np.ndarray | None = None
    snap_ema: np.ndarray | None = None
    wmv_min: float = math.inf
    wmv_iter: int = 0
    wmv_choice: np.ndarray | None = None  # the candidate at the variance minimum
    wmv_snap: Any = None  # the session state there (without EMA: its net(z) is the result)
    wmv_loss: float = math.inf  # the loss (mean of the last LOSS_WINDOW) at the variance minimum
    disc_iter: int = 0  # first iteration whose mean loss fell below noise_sigma^2 (0: not yet)
    disc_choice: np.ndarray | None = None  # the candidate there (with EMA: the average centred on it)
    disc_snap: Any = None  # the session state there (without EMA)
    chosen: np.ndarray | None = None
    chosen_iter: int = 0
    best_score: float = -math.inf
    seconds: float = 0.0  # spent in earlier processes of a resumed run
    losses: list[float] = field(default_factory=list)
    psnrs: list[float] = field(default_factory=list)
    psnrs_ema: list[float] = field(default_factory=list)
    psnrs_output: list[float] = field(default_factory=list)
    variances: list[float] = field(default_factory=list)

    _SCALARS = (
        "done", "rollbacks", "last_check", "wmv_min", "wmv_iter", "chosen_iter", "best_score", "seconds", "lr",
        "wmv_loss", "disc_iter",
    )  # fmt: skip
    _ARRAYS = ("ema", "snap_ema", "wmv_choice", "chosen", "disc_choice")
    _SNAPSHOTS = ("wmv_snap", "disc_snap")
    _CURVES = ("losses", "psnrs", "psnrs_ema", "psnrs_output", "variances")

    @property
    def disc_ready(self) -> bool:
        """The output at the discrepancy point is in hand (with EMA: once the average centred on it exists)."""
        return self.disc_snap is not None or self.disc_choice is not None

    def to_arrays(self, session: Session, seconds: float) -> dict[str, np.ndarray]:
        """This state and the session's, exactly, as named numpy arrays."""
        arrays = _prefixed("session/", session.to_arrays(session.snapshot()))
        arrays.update(_prefixed("snap/", session.to_arrays(self.snap)))
        for name in self._SNAPSHOTS:
            if getattr(self, name) is not None:
                arrays.update(_prefixed(f"{name}/", session.to_arrays(getattr(self, name))))
        scalars = [float(getattr(self, k)) for k in self._SCALARS]
        scalars[self._SCALARS.index("seconds")] = self.seconds + seconds
        arrays["loop/scalars"] = np.array(scalars, np.float64)
        for name in self._ARRAYS:
            if getattr(self, name) is not None:
                arrays[f"loop/{name}"] = getattr(self, name)
        for name in self._CURVES:
            arrays[f"loop/{name}"] = np.array(getattr(self, name), np.float64)
        if self.wmv is not None:
            window, (sumsq, count) = self.wmv.state()
            arrays.update(_prefixed("wmv/", window))
            arrays["wmv/scalars"] = np.array([sumsq, count], np.float64)
        return arrays

    def load(self, session: Session, arrays: dict[str, np.ndarray]) -> None:
        """Go on from `to_arrays`'s output: the session is put back in that state too."""
        session.restore(session.from_arrays(_unprefixed("session/", arrays)))
        self.snap = session.from_arrays(_unprefixed("snap/", arrays))
        for name in self._SNAPSHOTS:
            snap = _unprefixed(f"{name}/", arrays)
            setattr(self, name, session.from_arrays(snap) if snap else None)
        counters = ("done", "rollbacks", "wmv_iter", "chosen_iter", "disc_iter")
        for name, value in zip(self._SCALARS, arrays["loop/scalars"], strict=True):
            setattr(self, name, int(value) if name in counters else float(value))
        for name in self._ARRAYS:
            setattr(self, name, arrays.get(f"loop/{name}"))
        for name in self._CURVES:
            setattr(self, name, arrays[f"loop/{name}"].tolist())
        if self.wmv is not None and "wmv/scalars" in arrays:
            sumsq, count = arrays["wmv/scalars"]
            self.wmv.load_state(_unprefixed("wmv/", arrays), (sumsq, count))
        session.set_lr(self.lr)


def _prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {prefix + k: v for k, v in arrays.items()}


def _unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix) and k != prefix + "scalars"}


def fit(
    session: Session,
    settings: FitSettings,
    reference: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    checkpoint: Checkpointing | None = None,
) -> FitResult:
    """Run the loop; Ctrl-C ends it early with the best result so far (marked interrupted).

    With `checkpoint`, the whole state is written every `checkpoint.every` steps,
    and a run given `checkpoint.resume` goes on from there exactly as if it had
    never stopped.
    """
    use_ema = settings.exp_weight > 0
    by_variance = reference is None and settings.keep == "best"
    track = settings.stop == "auto" or by_variance
    st = _Loop(lr=settings.lr, snap=session.snapshot(), wmv=WindowVariance(settings.window) if track else None)
    if checkpoint is not None and checkpoint.resume is not None:
        st.load(session, checkpoint.resume)
    stopped_early = interrupted = False
    start = time.perf_counter()
    try:
        for i in range(st.done + 1, settings.iters + 1):
            st.done = i
            loss, out = session.step()
            if not math.isfinite(loss) or not np.isfinite(out).all():
                # Divergence: back to the last good state with a lower learning rate.
                _roll_back(session, settings, st)
                st.losses.append(float("nan"))
            else:
                if _accept(session, settings, st, i, loss, out, reference, use_ema, by_variance, on_step):
                    stopped_early = True
                    break
            if checkpoint is not None and checkpoint.every and i % checkpoint.every == 0:
                arrays = st.to_arrays(session, time.perf_counter() - start)
                arrays["checkpoint/every"] = np.array(checkpoint.every)
                save_checkpoint(checkpoint.path, arrays, checkpoint.run)
    except KeyboardInterrupt:
        interrupted = True
        st.done = len(st.losses)
    seconds = time.perf_counter() - start
    done = len(st.losses)
    final = session.output()
    chosen, chosen_iter, best_score, wmv_choice = st.chosen, st.chosen_iter, st.best_score, st.wmv_choice
    auto_iter, auto_rule = st.wmv_iter, "wmv"
    if is_overfit(settings, st.wmv_loss) and 0 < st.disc_iter < st.wmv_iter and st.disc_ready:
        # The variance's point lies deep in noise fitting: take the discrepancy point instead.
        auto_iter, auto_rule = st.disc_iter, "discrepancy"
        wmv_choice = _output_at(session, st.disc_snap) if st.disc_snap is not None else st.disc_choice
    elif st.wmv_snap is not None:
        wmv_choice = _output_at(session, st.wmv_snap)
    if by_variance and wmv_choice is not None:
        chosen, chosen_iter = wmv_choice, auto_iter
    if chosen is None or settings.keep == "last":
        chosen, chosen_iter, selection = (st.ema if use_ema and st.ema is not None else final), done, "last"
    else:
        selection = "psnr" if reference is not None else "wmv"
        final_psnr = psnr(final, reference) if reference is not None else -math.inf
        if final_psnr > best_score:
            # net(z) without input noise can beat every noisy-input output seen on the way.
            best_score, chosen, chosen_iter = final_psnr, final, done
    total = st.seconds + seconds
    return FitResult(
        result=chosen,
        result_iter=chosen_iter,
        selection=selection,
        final=final,
        ema=st.ema if use_ema else None,
        iters_done=done,
        seconds=total,
        ms_per_iter=1000 * total / max(done, 1),
        interrupted=interrupted,
        rollbacks=st.rollbacks,
        loss_curve=st.losses,
        psnr_curve=st.psnrs,
        psnr_ema_curve=st.psnrs_ema,
        psnr_output_curve=st.psnrs_output,
        variance_curve=st.variances,
        best_psnr=best_score if reference is not None and chosen_iter else None,
        stopped_early=stopped_early,
        stop_iter=auto_iter if wmv_choice is not None else None,
        auto_psnr=psnr(wmv_choice, reference) if reference is not None and wmv_choice is not None else None,
        auto_rule=auto_rule if wmv_choice is not None else None,
        discrepancy_iter=st.disc_iter or None,
        final_lr=st.lr,
    )


def _accept(
    session: Session,
    settings: FitSettings,
    st: _Loop,
    i: int,
    loss: float,
    out: np.ndarray,
    reference: np.ndarray | None,
    use_ema: bool,
    by_variance: bool,
    on_step: Callable[[StepInfo], None] | None,
) -> bool:
    """Book a finite step: EMA, backtracking, variance, the best so far; True when auto-stop ends the run."""
    ema = st.ema
    st.ema = out if ema is None or not use_ema else settings.exp_weight * ema + (1 - settings.exp_weight) * out
    candidate = st.ema if use_ema else out
    st.losses.append(loss)
    psnr_in = psnr_from_mse(loss)
    if i % settings.check_every == 0:
        # Backtracking: a drop of more than backtrack_db against the input means the
        # fit collapsed; otherwise this state becomes the one to come back to.
        if settings.backtrack and psnr_in < st.last_check - settings.backtrack_db:
            _roll_back(session, settings, st)
        else:
            st.snap, st.last_check = session.snapshot(), psnr_in
            st.snap_ema = None if st.ema is None else st.ema.copy()
    if st.wmv is not None and use_ema and i == st.wmv_iter + ema_lag(settings.exp_weight):
        # The EMA lags the outputs by w / (1 - w) steps: the average centred on the
        # variance minimum is the one this many steps after it.
        st.wmv_choice = st.ema.copy()
        if by_variance:
            st.chosen = st.wmv_choice
    recent = mean_recent_loss(st.losses)
    if st.wmv is not None and settings.noise_sigma:
        _track_discrepancy(session, settings, st, i, recent, use_ema)
    if st.wmv is not None:
        var = st.wmv.push(out)
        if var is not None:
            st.variances.append(var)
            if var < st.wmv_min:
                st.wmv_min, st.wmv_iter, st.wmv_choice, st.wmv_loss = var, i, candidate.copy(), recent
                # Without EMA the output at the minimum is net(z) there, as a fixed run's
                # final output is: kept as the state, evaluated once at the end.
                st.wmv_snap = None if use_ema else session.snapshot()
                if by_variance:
                    st.chosen, st.chosen_iter = st.wmv_choice, i
            elif settings.stop == "auto" and i - st.wmv_iter >= settings.patience:
                return True
        if settings.stop == "auto" and _discrepancy_settled(settings, st, i, recent):
            return True
    score = None
    if reference is not None:
        p_out = psnr(out, reference)
        st.psnrs.append(p_out)
        st.psnrs_ema.append(psnr(st.ema, reference) if use_ema else p_out)
        if settings.trace_output:
            st.psnrs_output.append(psnr(session.output(), reference))
        # With a reference the better of the output and its average is kept.
        score, candidate = (st.psnrs_ema[-1], st.ema) if st.psnrs_ema[-1] >= p_out else (p_out, out)
        if settings.keep == "best" and score > st.best_score:
            st.best_score, st.chosen, st.chosen_iter = score, candidate.copy(), i
    if on_step is not None:
        current = _pick(st.chosen, candidate)
        on_step(StepInfo(i, settings.iters, loss, psnr_in, score, st.rollbacks, lambda: current))
    return False


LOSS_WINDOW = 20  # losses averaged for the discrepancy check (single losses are noisy: z gets fresh noise)


def mean_recent_loss(losses: list[float]) -> float:
    """Mean of the last LOSS_WINDOW finite losses (inf until there are that many)."""
    recent = [x for x in losses[-2 * LOSS_WINDOW :] if math.isfinite(x)][-LOSS_WINDOW:]
    return sum(recent) / len(recent) if len(recent) == LOSS_WINDOW else math.inf


def is_overfit(settings: FitSettings, loss: float) -> bool:
    """A loss this far below the noise power means the output reproduces the noise."""
    return bool(settings.noise_sigma) and loss < settings.overfit_ratio * settings.noise_sigma**2


def _track_discrepancy(session: Session, settings: FitSettings, st: _Loop, i: int, recent: float, ema: bool) -> None:
    """Remember the first point where the loss reaches the noise power (Morozov's discrepancy principle)."""
    if not st.disc_iter and recent <= settings.noise_sigma**2:
        st.disc_iter = i
        st.disc_snap = None if ema else session.snapshot()
    if ema and st.disc_iter and i == st.disc_iter + ema_lag(settings.exp_weight):
        st.disc_choice = st.ema.copy()


def _discrepancy_settled(settings: FitSettings, st: _Loop, i: int, recent: float) -> bool:
    """Auto-stop when the choice can only be the discrepancy point: the variance's minimum and the
    current loss are both overfit, and the patience has passed since the discrepancy point."""
    return (
        st.disc_ready
        and i - st.disc_iter >= settings.patience
        and is_overfit(settings, st.wmv_loss)
        and is_overfit(settings, recent)
    )


def _roll_back(session: Session, settings: FitSettings, st: _Loop) -> None:
    """Back to the last good parameters, Adam state and EMA, with a lower learning rate."""
    session.restore(st.snap)
    st.lr *= settings.rollback_lr_factor
    session.set_lr(st.lr)
    st.ema, st.rollbacks = st.snap_ema, st.rollbacks + 1


def ema_lag(weight: float) -> int:
    """How many steps an EMA of this weight lags the outputs it averages."""
    return round(weight / (1 - weight))


def _output_at(session: Session, snap: object) -> np.ndarray:
    """net(z) in an earlier state, leaving the session as it is."""
    now = session.snapshot()
    session.restore(snap)
    out = session.output()
    session.restore(now)
    return out


def _pick(chosen: np.ndarray | None, current: np.ndarray) -> np.ndarray:
    return chosen if chosen is not None else current
