"""The DIP loop, framework-neutral: EMA, backtracking, choice of the result, progress.

Each backend supplies a Session (its loop.py) that takes one optimisation step
at a time; everything decided between steps lives here, once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dip_core.backend import Session
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
    stop_iter: int | None = None  # iteration of the variance minimum (the ES-WMV detection point)
    auto_psnr: float | None = None  # with a reference: PSNR of the output at stop_iter


def fit(
    session: Session,
    settings: FitSettings,
    reference: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> FitResult:
    """Run the loop; Ctrl-C ends it early with the best result so far (marked interrupted)."""
    use_ema = settings.exp_weight > 0
    track = settings.stop == "auto" or (reference is None and settings.keep == "best")
    wmv = WindowVariance(settings.window) if track else None
    wmv_min, wmv_iter, wmv_choice, wmv_snap = math.inf, 0, None, None
    stopped_early = False
    ema: np.ndarray | None = None
    chosen: np.ndarray | None = None
    chosen_iter, best_score = 0, -math.inf
    losses: list[float] = []
    psnrs: list[float] = []
    psnrs_ema: list[float] = []
    psnrs_output: list[float] = []
    variances: list[float] = []
    rollbacks = 0
    lr = settings.lr
    snap, snap_ema, last_check = session.snapshot(), None, -math.inf
    interrupted = False
    start = time.perf_counter()
    try:
        for i in range(1, settings.iters + 1):
            loss, out = session.step()
            if not math.isfinite(loss) or not np.isfinite(out).all():
                # Divergence: back to the last good state with half the learning rate.
                session.restore(snap)
                lr /= 2
                session.set_lr(lr)
                ema, rollbacks = snap_ema, rollbacks + 1
                losses.append(float("nan"))
                continue
            ema = out if ema is None or not use_ema else settings.exp_weight * ema + (1 - settings.exp_weight) * out
            candidate = ema if use_ema else out
            losses.append(loss)
            psnr_in = psnr_from_mse(loss)
            if i % settings.check_every == 0:
                # Backtracking: a drop of more than backtrack_db against the input means the
                # fit collapsed; otherwise this state becomes the one to come back to.
                if settings.backtrack and psnr_in < last_check - settings.backtrack_db:
                    session.restore(snap)
                    ema, rollbacks = snap_ema, rollbacks + 1
                else:
                    snap, snap_ema, last_check = session.snapshot(), None if ema is None else ema.copy(), psnr_in
            if wmv is not None:
                var = wmv.push(out)
                if var is not None:
                    variances.append(var)
                    if var < wmv_min:
                        wmv_min, wmv_iter, wmv_choice = var, i, candidate.copy()
                        # Without EMA the output at the minimum is net(z) there, as a fixed run's
                        # final output is: kept as the state, evaluated once at the end.
                        wmv_snap = None if use_ema else session.snapshot()
                        if reference is None and settings.keep == "best":
                            chosen, chosen_iter = wmv_choice, i
                    elif settings.stop == "auto" and i - wmv_iter >= settings.patience:
                        stopped_early = True
                        break
            score = None
            if reference is not None:
                p_out = psnr(out, reference)
                psnrs.append(p_out)
                psnrs_ema.append(psnr(ema, reference) if use_ema else p_out)
                if settings.trace_output:
                    psnrs_output.append(psnr(session.output(), reference))
                # With a reference the better of the output and its average is kept.
                score, candidate = (psnrs_ema[-1], ema) if psnrs_ema[-1] >= p_out else (p_out, out)
                if settings.keep == "best" and score > best_score:
                    best_score, chosen, chosen_iter = score, candidate.copy(), i
            if on_step is not None:
                on_step(
                    StepInfo(
                        i, settings.iters, loss, psnr_in, score, rollbacks, lambda c=candidate, b=chosen: _pick(b, c)
                    )
                )
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    done = len(losses)
    final = session.output()
    if wmv_snap is not None:
        wmv_choice = _output_at(session, wmv_snap)
        if reference is None and settings.keep == "best":
            chosen = wmv_choice
    if chosen is None or settings.keep == "last":
        chosen, chosen_iter, selection = (ema if use_ema and ema is not None else final), done, "last"
    else:
        selection = "psnr" if reference is not None else "wmv"
        final_psnr = psnr(final, reference) if reference is not None else -math.inf
        if final_psnr > best_score:
            # net(z) without input noise can beat every noisy-input output seen on the way.
            best_score, chosen, chosen_iter = final_psnr, final, done
    return FitResult(
        result=chosen,
        result_iter=chosen_iter,
        selection=selection,
        final=final,
        ema=ema if use_ema else None,
        iters_done=done,
        seconds=seconds,
        ms_per_iter=1000 * seconds / max(done, 1),
        interrupted=interrupted,
        rollbacks=rollbacks,
        loss_curve=losses,
        psnr_curve=psnrs,
        psnr_ema_curve=psnrs_ema,
        psnr_output_curve=psnrs_output,
        variance_curve=variances,
        best_psnr=best_score if reference is not None and chosen_iter else None,
        stopped_early=stopped_early,
        stop_iter=wmv_iter if wmv_choice is not None else None,
        auto_psnr=psnr(wmv_choice, reference) if reference is not None and wmv_choice is not None else None,
    )


def _output_at(session: Session, snap: object) -> np.ndarray:
    """net(z) in an earlier state, leaving the session as it is."""
    now = session.snapshot()
    session.restore(snap)
    out = session.output()
    session.restore(now)
    return out


def _pick(chosen: np.ndarray | None, current: np.ndarray) -> np.ndarray:
    return chosen if chosen is not None else current
