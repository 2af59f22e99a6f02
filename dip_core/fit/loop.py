"""The DIP loop, framework-neutral: every decision between steps, made on scalars.

Each backend supplies a Session (its loop.py) that queues one optimisation step
at a time and keeps the monitors beside it on its device (EMA, windowed
variance, PSNR against a reference, the candidates for the result). The loop
reads back a few scalars per step and decides, once for every backend:
backtracking, the automatic stop, the discrepancy rule, which output to keep.
Images cross to the host at the end, on a save and on a checkpoint only.

The stopping rule (dip_core.fit.rules, its family chosen once from the settings) answers each step's scalars
with what to keep and whether to stop; `_Loop` applies that to the session. Beside it, `Rollback` (backtracking
and divergence: it says when, the loop restores), `BestByReference` and `Curves`; `choose` picks the result.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import numpy as np

from dip_core.backend import Kept, Monitoring, Session, StepStats
from dip_core.errors import UserError
from dip_core.fit.checkpoint import CheckpointError, Checkpointing, check_arrays, prefixed, save_checkpoint, under
from dip_core.fit.rules import ScalarState, StoppingRule, mean_recent_loss, rule_for
from dip_core.fit.rules import stopping_rule as stopping_rule  # the report's record of the rule (run/prepare.py)
from dip_core.fit.settings import FitSettings, Keep, Stop
from dip_core.problem.metrics import psnr, psnr_from_mse


@dataclass
class StepInfo:
    """What the progress display shows after each step (scalars only)."""

    i: int  # 1-based iteration just done
    iters: int
    loss: float
    psnr_input: float  # PSNR of A(out) against the corrupted input (from the loss)
    psnr: float | None  # PSNR of the current result against the reference
    rollbacks: int


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
    auto: np.ndarray | None = None  # the output the automatic choice returns (what a run without a reference keeps)
    auto_rule: str | None = None  # "wmv" | "discrepancy": which rule made the automatic choice
    discrepancy_iter: int | None = None  # first iteration whose loss (mean of the last 20) reached its level
    final_lr: float | None = None  # the learning rate at the end (lower after rollbacks)
    step: dict[str, Any] = field(default_factory=dict)  # how the session ran the step (Session.describe)
    warnings: list[str] = field(default_factory=list)  # writes on the way that failed (the run went on)


@dataclass
class Curves:
    """Per-step scalars for the report and the plots."""

    losses: list[float] = field(default_factory=list)
    psnrs: list[float] = field(default_factory=list)  # output vs reference
    psnrs_ema: list[float] = field(default_factory=list)
    psnrs_output: list[float] = field(default_factory=list)
    variances: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.array(getattr(self, f.name), np.float64) for f in fields(self)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for f in fields(self):
            setattr(self, f.name, arrays[f.name].tolist())


@dataclass
class Rollback(ScalarState):
    """Backtracking and divergence: when to go back to the last good state, the learning rate and the count.

    The loop holds that state (a session snapshot) and restores it when told."""

    lr: float
    rollbacks: int = 0
    last_check: float = -math.inf  # PSNR against the input at the last check

    def collapsed(self, settings: FitSettings, psnr_in: float) -> bool:
        """At a check: a drop of more than backtrack_db against the input means the fit collapsed (True: roll
        back); otherwise this state becomes the one to come back to (the loop snapshots it)."""
        if settings.backtrack and psnr_in < self.last_check - settings.backtrack_db:
            return True
        self.last_check = psnr_in
        return False

    def roll_back(self, settings: FitSettings) -> float:
        """One more rollback: the lower learning rate to go on with."""
        self.lr *= settings.rollback_lr_factor
        self.rollbacks += 1
        return self.lr


@dataclass
class BestByReference(ScalarState):
    """With a reference: the best of the outputs and their averages by PSNR, slot "best"."""

    score: float = -math.inf
    iter: int = 0

    def update(self, settings: FitSettings, i: int, p_out: float, p_ema: float) -> tuple[float, Kept | None]:
        """Step i's score, and what to keep of it in slot "best" when it is the best yet (else None)."""
        score, what = (p_ema, Kept.EMA) if settings.exp_weight > 0 and p_ema >= p_out else (p_out, Kept.OUT)
        if settings.keep is Keep.BEST and score > self.score:
            self.score, self.iter = score, i
            return score, what
        return score, None


class _Outcome(Enum):
    NEXT = "next"
    ROLLED_BACK = "rolled back"
    STOP = "stop"


class _Loop:
    """The trackers of one run, and what happens to each step's scalars."""

    def __init__(self, settings: FitSettings, session: Session, reference: np.ndarray | None) -> None:
        self.settings = settings
        self.use_ema = settings.exp_weight > 0
        self.by_variance = reference is None and settings.keep is Keep.BEST
        track = settings.stop is Stop.AUTO or self.by_variance
        self.curves = Curves()
        self.rollback = Rollback(settings.lr)
        self.rule: StoppingRule | None = rule_for(settings) if track else None
        self.best = BestByReference() if reference is not None else None
        self.done = 0
        self.seconds = 0.0  # spent in earlier processes of a resumed run
        session.start(
            Monitoring(
                exp_weight=settings.exp_weight,
                ema_warmup=settings.ema_warmup,
                window=settings.window if track else 0,
                reference=reference,
                trace_output=settings.trace_output and reference is not None,
                keep_states=track and not self.use_ema,
            )
        )
        self.snap = session.snapshot()  # the state to come back to (with its EMA)

    def must_wait(self, i: int, checkpoint_every: int) -> bool:
        """Step i needs the session as it stands after it: nothing may be queued behind it."""
        s = self.settings
        every = [s.check_every, checkpoint_every, s.save_every]
        if any(k and i % k == 0 for k in every):
            return True
        return self.rule is not None and self.rule.may_stop(i, self.curves.losses)

    def process(
        self, i: int, handle: Any, stats: StepStats, session: Session, on_step: Callable[[StepInfo], None] | None
    ) -> _Outcome:
        """Book step i from its scalars."""
        s, c = self.settings, self.curves
        self.done = i
        if not stats.finite:
            # Divergence: back to the last good state with a lower learning rate.
            self.roll_back(session)
            c.losses.append(float("nan"))
            return _Outcome.ROLLED_BACK
        c.losses.append(stats.loss)
        psnr_in = psnr_from_mse(stats.loss)
        if i % s.check_every == 0:
            if self.rollback.collapsed(s, psnr_in):
                self.roll_back(session)
            else:
                self.snap = session.snapshot()
        if self.rule is not None:
            if stats.variance is not None:
                c.variances.append(stats.variance)
            decision = self.rule.step(i, stats.variance, mean_recent_loss(c.losses))
            for slot, what in decision.keep:
                session.keep(slot, handle, what)
            if decision.stop:
                return _Outcome.STOP
        score = None
        if self.best is not None:
            p_out = psnr_from_mse(stats.mse if stats.mse is not None else math.nan)  # with a reference: never None
            p_ema = psnr_from_mse(stats.mse_ema) if self.use_ema and stats.mse_ema is not None else p_out
            c.psnrs.append(p_out)
            c.psnrs_ema.append(p_ema)
            if stats.mse_output is not None:
                c.psnrs_output.append(psnr_from_mse(stats.mse_output))
            score, best = self.best.update(s, i, p_out, p_ema)
            if best is not None:
                session.keep("best", handle, best)
        if on_step is not None:
            on_step(StepInfo(i, s.iters, stats.loss, psnr_in, score, self.rollback.rollbacks))
        return _Outcome.NEXT

    def roll_back(self, session: Session) -> None:
        """Back to the last good parameters, Adam state and EMA, with a lower learning rate."""
        session.restore(self.snap)
        session.set_lr(self.rollback.roll_back(self.settings))

    def choice(self) -> tuple[int, str]:
        """The automatic choice: the iteration (0: none yet) and the rule that made it."""
        return self.rule.choice() if self.rule is not None else (0, "wmv")

    def current(self, handle: Any, session: Session) -> np.ndarray:
        """The result as it stands (for periodic saving)."""
        if self.by_variance and self.rule is not None and self.rule.wmv.iter:
            return session.fetch("wmv")
        if self.best is not None and self.best.iter:
            return session.fetch("best")
        session.keep("current", handle, Kept.EMA if self.use_ema else Kept.OUT)
        return session.fetch("current")

    def trackers(self) -> dict[str, ScalarState]:
        """The state to checkpoint, by name (`loop/<name>/<field>`)."""
        rule = self.rule.trackers() if self.rule is not None else {}
        named = {"rollback": self.rollback, **rule, "best": self.best}
        return {k: v for k, v in named.items() if v is not None}

    def to_arrays(self, session: Session, seconds: float) -> dict[str, np.ndarray]:
        """This state and the session's, exactly, as named numpy arrays."""
        arrays = prefixed("session/", session.state_arrays())
        arrays.update(prefixed("snap/", session.to_arrays(self.snap)))
        arrays["loop/progress"] = np.array([self.done, self.seconds + seconds], np.float64)
        for name, tracker in self.trackers().items():
            arrays.update({f"loop/{name}/{k}": np.array(v, np.float64) for k, v in tracker.state().items()})
        arrays.update(prefixed("curves/", self.curves.arrays()))
        return arrays

    def load(self, session: Session, arrays: dict[str, np.ndarray]) -> None:
        """Go on from `to_arrays`'s output: the session is put back in that state too."""
        session.load_state(under("session/", arrays))
        self.snap = session.from_arrays(under("snap/", arrays))
        done, self.seconds = arrays["loop/progress"]
        self.done = int(done)
        for name, tracker in self.trackers().items():
            tracker.load({k: float(v) for k, v in under(f"loop/{name}/", arrays).items()})
        self.curves.load_arrays(under("curves/", arrays))
        session.set_lr(self.rollback.lr)


WRITE_FAILED = {  # what a failed write on the way means for the run
    "checkpoint": "the run went on, and the checkpoint written before stays valid for --resume",
    "result so far": "the run went on; its final result is written at its end",
}


class Writes:
    """The writes a run makes on the way (checkpoints, results so far): one that fails (a full disk) is booked
    as a warning and the run goes on; only the run's end writes what must not be lost."""

    def __init__(self) -> None:
        self.failed: dict[str, tuple[int, str, int]] = {}  # what -> (first iteration, why, how many times)

    def attempt(self, what: str, i: int, write: Callable[..., None], *args: Any) -> None:
        """`write(*args)`; a failure booked against `what` at iteration i."""
        try:
            write(*args)
        except (OSError, UserError) as exc:
            why = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            first, reason, count = self.failed.get(what, (i, why, 0))
            self.failed[what] = (first, reason, count + 1)

    def warnings(self) -> list[str]:
        lines = []
        for what, (i, why, count) in self.failed.items():
            again = f" ({count - 1} later tries failed too)" if count > 1 else ""
            lines.append(f"could not write the {what} at iteration {i}: {why}{again}; {WRITE_FAILED[what]}")
        return lines


# Steps slower than this are not queued ahead (seconds): see `fit`.
PIPELINE_UNDER_S = 0.25


def fit(
    session: Session,
    settings: FitSettings,
    reference: np.ndarray | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    checkpoint: Checkpointing | None = None,
    on_save: Callable[[int, np.ndarray], None] | None = None,
) -> FitResult:
    """Run the loop; Ctrl-C ends it early with the best result so far (marked interrupted), or, before any
    step was booked, goes on up as KeyboardInterrupt.

    A pipelined session runs step i+1 while the loop books step i, except where
    step i needs the state right after it (checks, saves, checkpoints, a possible
    stop), and except after a step slower than PIPELINE_UNDER_S: there the host's
    booking is negligible beside the step, and a step queued ahead would make
    Ctrl-C wait for one step more. With `checkpoint`, the whole state is written every `checkpoint.every`
    steps, and a run given `checkpoint.resume` goes on from there exactly as if it
    had never stopped. `on_save(i, image)` gets the result so far every
    `settings.save_every` steps. A checkpoint or a result so far that cannot be written (a full disk) is a
    warning in the result (`FitResult.warnings`), and the run goes on.
    """
    loop = _Loop(settings, session, reference)
    writes = Writes()
    if checkpoint is not None and checkpoint.resume is not None:
        check_arrays(checkpoint.path, loop.to_arrays(session, 0.0), checkpoint.resume)
        try:
            loop.load(session, checkpoint.resume)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:  # what check_arrays cannot see
            raise CheckpointError(
                f"{checkpoint.path} is not a checkpoint this run can go on from ({type(exc).__name__}: {exc}); "
                "start over with --force"
            ) from None
    every = checkpoint.every if checkpoint is not None else 0
    stopped_early = interrupted = False
    queued: deque[tuple[int, Any]] = deque()  # steps queued and not yet booked
    start = last_read = time.perf_counter()
    slow = False  # the last step took longer than PIPELINE_UNDER_S

    def queue(i: int) -> None:
        refresh = loop.rule is not None and i % settings.window == 0
        queued.append((i, session.step(refresh)))

    try:
        following = loop.done + 1
        while queued or following <= settings.iters:
            if not queued:
                queue(following)
                following += 1
            i, handle = queued[0]
            ahead = session.pipelined and not slow and len(queued) == 1 and following <= settings.iters
            if ahead and not loop.must_wait(i, every):
                queue(following)
                following += 1
            stats = session.read(handle)
            now = time.perf_counter()
            slow, last_read = now - last_read > PIPELINE_UNDER_S, now
            outcome = loop.process(i, handle, stats, session, on_step)
            queued.popleft()
            if outcome is _Outcome.ROLLED_BACK and queued:
                following = queued.popleft()[0]  # it ran from the diverged state: run it again
            if outcome is _Outcome.STOP:
                stopped_early = True
                break
            saving = settings.save_every and i % settings.save_every == 0
            if on_save is not None and saving and outcome is _Outcome.NEXT:  # not the output of a diverged step
                writes.attempt("result so far", i, on_save, i, loop.current(handle, session))
            if checkpoint is not None and every and i % every == 0:
                arrays = loop.to_arrays(session, time.perf_counter() - start)
                arrays["checkpoint/every"] = np.array(every)
                writes.attempt("checkpoint", i, save_checkpoint, checkpoint.path, arrays, checkpoint.run)
    except KeyboardInterrupt:
        interrupted = True
        # A step already queued has run: book it, so that the result and the count agree with the state
        # (unless the step before it rolled back: then it ran from the diverged state, and is dropped).
        for i, handle in queued:
            if i > loop.done and loop.process(i, handle, session.read(handle), session, None) is not _Outcome.NEXT:
                break
    if interrupted and not loop.curves.losses:
        raise KeyboardInterrupt  # stopped before any step was booked: there is no result to return
    seconds = time.perf_counter() - start
    result = choose(loop, session, reference, seconds, interrupted, stopped_early)
    result.warnings = writes.warnings()
    return result


def choose(
    loop: _Loop, session: Session, reference: np.ndarray | None, seconds: float, interrupted: bool, stopped: bool
) -> FitResult:
    """The result the settings ask for, from what the trackers kept (a constant number of images to the host)."""
    s, c, best = loop.settings, loop.curves, loop.best
    disc = loop.rule.disc if loop.rule is not None else None
    done = len(c.losses)
    final = session.output()
    ema = session.ema() if loop.use_ema else None
    auto, (auto_iter, auto_rule) = None, loop.choice()
    states = not loop.use_ema  # without EMA the output at a chosen point is net(z) there, from its parameters
    if auto_iter:
        slot = "disc" if auto_rule == "discrepancy" else "wmv"
        auto = session.output(slot) if states else session.fetch(slot)
    chosen, chosen_iter, best_score = None, 0, -math.inf
    if loop.by_variance and auto is not None:
        chosen, chosen_iter = auto, auto_iter
    elif best is not None and best.iter:
        chosen, chosen_iter, best_score = session.fetch("best"), best.iter, best.score
    if chosen is None or s.keep is Keep.LAST:
        chosen, chosen_iter, selection = (ema if ema is not None else final), done, "last"
    else:
        selection = "psnr" if reference is not None else "wmv"  # "wmv": the automatic choice (auto_rule says whose)
        final_psnr = psnr(final, reference) if reference is not None else -math.inf
        if final_psnr > best_score:
            # net(z) without input noise can beat every noisy-input output seen on the way.
            best_score, chosen, chosen_iter = final_psnr, final, done
    total = loop.seconds + seconds
    return FitResult(
        result=chosen,
        result_iter=chosen_iter,
        selection=selection,
        final=final,
        ema=ema,
        iters_done=done,
        seconds=total,
        ms_per_iter=1000 * total / max(done, 1),
        interrupted=interrupted,
        rollbacks=loop.rollback.rollbacks,
        loss_curve=c.losses,
        psnr_curve=c.psnrs,
        psnr_ema_curve=c.psnrs_ema,
        psnr_output_curve=c.psnrs_output,
        variance_curve=c.variances,
        best_psnr=best_score if reference is not None and chosen_iter else None,
        stopped_early=stopped,
        stop_iter=auto_iter if auto is not None else None,
        auto_psnr=psnr(auto, reference) if reference is not None and auto is not None else None,
        auto=auto,
        auto_rule=auto_rule if auto is not None else None,
        discrepancy_iter=(disc.iter or None) if disc is not None else None,
        final_lr=loop.rollback.lr,
        step=session.describe(),
    )
