"""The runs: each in a temporary folder of its own, one at a time per device, the others queued behind it.

A worker thread per device (the CPU, or the GPU: MLX and torch on the CPU share one queue) takes its queue's runs
in turn. A run publishes its progress through `Prepared.run`'s callbacks: `on_step` gets the scalars of every
step (the curves, the ETA) and `on_save` the result so far, every `save_every` steps, chosen from the run's
estimate so that it comes about every SAVE_EVERY_S seconds. Stopping: see `StopRequested`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dip_core.errors import UserError, messages
from dip_core.fit.loop import StepInfo
from dip_core.problem.image import Image, save_image
from dip_core.run.memory import estimate_bytes
from dip_core.run.prepare import Prepared, prepare
from dip_core.system.atomic import write_json
from dip_core.system.version import dip_version
from dip_ui.forms import RunRequest
from dip_ui.security import Limits, new_id

log = logging.getLogger("dip_ui")

SAVE_EVERY_S = 2.0  # the result so far is published about this often
SAVE_EVERY_UNTIMED = 20  # steps between results when the run was not timed beforehand
JOIN_S = 15.0  # how long the server waits for a run to stop when it shuts down


class StopRequested(KeyboardInterrupt):
    """Raised from a run's `on_step` callback when the page asked to stop it.

    `dip_core.fit.loop.fit` takes any KeyboardInterrupt raised inside its loop as Ctrl-C: it ends the loop, books a
    step already queued on the device, and returns the best result so far, marked interrupted (the report says
    `interrupted: true`, `finished: false`). This class derives from KeyboardInterrupt for that reason only;
    nothing but `Run.on_step` raises it, and the worker catches it (and the plain KeyboardInterrupt `fit` raises
    when no step was booked yet, which `on_step` never lets happen), so it never leaves the worker thread.
    """


class QueueFull(UserError):
    """This session already has as many runs waiting or going as it may."""


class MemoryBusy(UserError):
    """The memory the runs already accepted have reserved leaves too little for this one (for now)."""


def run_bytes(prepared: Prepared) -> int:
    """The memory estimate of a run, as `prepare`'s own check makes it: reserved while it is queued or running."""
    padded = prepared.padded
    return estimate_bytes(prepared.cfg, padded.out_height, padded.out_width, prepared.options.window)


def memory_wanted(new: Run, live: list[Run], running: dict[str, Run]) -> int:
    """What memory the runs accepted and `new` may need at once, beyond the free memory measured now. A device
    runs one run at a time, so per device the largest reservation counts: on `new`'s device, that of the runs
    that will run after the one running now (whose memory is already in use, and will be freed for them); on
    another device, any of its runs, the one running now included, since they may run beside `new`."""
    largest: dict[str, int] = {new.device: new.reserved}
    for run in live:
        if run.device == new.device and running.get(run.device) is run:
            continue
        largest[run.device] = max(largest.get(run.device, 0), run.reserved)
    return sum(largest.values())


QUEUED, RUNNING, DONE, STOPPED, CANCELLED, FAILED = "queued", "running", "done", "stopped", "cancelled", "failed"
LIVE = frozenset({QUEUED, RUNNING})


def device_queue(prepared: Prepared) -> str:
    """The queue a run waits in: one per physical device (every backend's CPU is the one CPU)."""
    return "cpu" if prepared.backend.device == "cpu" else "gpu"


def save_every(ms_per_iter: float | None) -> int:
    """Steps between two results so far: about SAVE_EVERY_S seconds of them."""
    if not ms_per_iter:
        return SAVE_EVERY_UNTIMED
    return max(1, round(1000 * SAVE_EVERY_S / ms_per_iter))


@dataclass
class Run:
    """One run: its request, folder and state, and what the page polls (updated by the worker thread)."""

    id: str
    session: str
    name: str  # a safe stem of the image's file name, for download names
    request: RunRequest
    folder: Path
    prepared: Prepared | None
    device: str  # the queue: cpu or gpu
    iters: int  # planned (the most, with auto-stop)
    auto_stop: bool
    save_every: int
    inputs: dict[str, Image] = field(default_factory=dict)  # image, mask, reference: to set it up again
    state: str = QUEUED
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    points: list[tuple[int, float, float, float | None]] = field(default_factory=list)  # i, loss, PSNR in, PSNR
    first: tuple[float, int] | None = None  # when the first step was seen (after compilation), and its number
    ms_per_iter: float | None = None
    eta_s: float | None = None
    result_version: int = 0  # bumped at every result so far, and at the final one
    has_mask: bool = False
    has_report: bool = False
    reserved: int = 0  # bytes of the memory estimate held for it while queued or running
    behind: bool = False  # queued behind another run: set up again when its turn comes (the cores it may use)
    discarded: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def result_path(self) -> Path:
        return self.folder / "result.png"

    @property
    def mask_path(self) -> Path:
        return self.folder / "mask.png"

    @property
    def report_path(self) -> Path:
        return self.folder / "report.json"

    def on_step(self, info: StepInfo) -> None:
        """Book a step's scalars; raise StopRequested when a stop was asked for."""
        now = time.perf_counter()
        with self.lock:
            self.points.append((info.i, info.loss, info.psnr_input, info.psnr))
            if self.first is None:
                self.first = (now, info.i)  # after the first step's compilation
            elif info.i > self.first[1]:
                per_step = (now - self.first[0]) / (info.i - self.first[1])
                self.ms_per_iter = 1000 * per_step
                self.eta_s = per_step * max(0, self.iters - info.i)
        if self.stop.is_set():
            raise StopRequested

    def on_save(self, i: int, image: Image) -> None:
        """Publish the result so far."""
        save_image(self.result_path, image)
        with self.lock:
            self.result_version += 1

    def to_json(self, position: int, since: int = 0) -> dict[str, Any]:
        """What the page shows: the state, the queue position, the progress and the curves' points from `since`."""
        with self.lock:
            points = self.points[max(0, since) :]
            last = self.points[-1] if self.points else None
            return {
                "id": self.id,
                "name": self.name,
                "task": self.request.task.value,
                "backend": self.request.backend.value,
                "device": self.device,
                "state": self.state,
                "position": position,  # 0: running or ended; k: k-th in line for the device
                "message": self.message,
                "warnings": list(self.warnings),
                "iters": self.iters,
                "auto_stop": self.auto_stop,
                "iter": last[0] if last else 0,
                "loss": last[1] if last else None,
                "ms_per_iter": self.ms_per_iter,
                "eta_s": self.eta_s if self.state == RUNNING else None,
                "elapsed_s": (self.ended or time.time()) - self.started if self.started else None,
                "result_version": self.result_version,
                "has_mask": self.has_mask,
                "has_report": self.has_report,
                "since": max(0, since),
                "points": [[i, loss, p_in, p] for i, loss, p_in, p in points],
            }


class RunManager:
    """Every run of the server: the per-device queues and their worker threads."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix="dip-ui-"))
        self._cond = threading.Condition()
        self._runs: dict[str, Run] = {}
        self._queues: dict[str, deque[Run]] = {}
        self._running: dict[str, Run] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._setting_up: dict[str, int] = {}  # per session: runs being set up (they count against the limit)
        self._closing = False

    # --- asked by the requests ---

    def submit(
        self, session: str, request: RunRequest, inputs: dict[str, Image], name: str, ms_per_iter: float | None
    ) -> Run:
        """Check and set up a run (every problem raised now, as a UserError) and queue it on its device."""
        # The count and a place for this run are taken together, under the lock, before the slow set-up: a run
        # being set up counts as live, so that many requests at once cannot all pass the check.
        with self._cond:
            live = sum(r.session == session and r.state in LIVE for r in self._runs.values())
            live += self._setting_up.get(session, 0)
            if live >= self.limits.runs_per_session:
                raise QueueFull(
                    f"{live} runs of yours are already waiting or going (at most {self.limits.runs_per_session}): "
                    "stop one or wait"
                )
            self._setting_up[session] = self._setting_up.get(session, 0) + 1
        try:
            return self._set_up(session, request, inputs, name, ms_per_iter)
        finally:
            with self._cond:
                self._setting_up[session] -= 1
                if not self._setting_up[session]:
                    del self._setting_up[session]

    def _set_up(
        self, session: str, request: RunRequest, inputs: dict[str, Image], name: str, ms_per_iter: float | None
    ) -> Run:
        prepared = self._prepare(request, inputs, save_every(ms_per_iter))
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        run = Run(
            new_id(), session, name, request, folder, prepared, device_queue(prepared), prepared.preset.iters,
            prepared.fit_settings.stop.value == "auto", prepared.fit_settings.save_every, inputs,
            warnings=list(prepared.warnings),
        )  # fmt: skip
        try:
            if prepared.problem.mask is not None:
                save_image(run.mask_path, Image(prepared.problem.mask, "L"))
                run.has_mask = True
        except (UserError, OSError):
            shutil.rmtree(folder, ignore_errors=True)
            raise
        run.reserved = run_bytes(prepared)
        free = prepared.backend.memory_available()
        with self._cond:
            if self._closing:
                shutil.rmtree(folder, ignore_errors=True)
                raise UserError("the server is stopping")
            live = [r for r in self._runs.values() if r.state in LIVE]
            wanted = memory_wanted(run, live, self._running)
            if free is not None and wanted > free:
                shutil.rmtree(folder, ignore_errors=True)
                held = wanted - run.reserved
                raise MemoryBusy(
                    f"this run needs about {run.reserved / 2**30:.1f} GiB; the runs waiting or going have "
                    f"{held / 2**30:.1f} GiB reserved and {run.device} has {free / 2**30:.1f} GiB free: "
                    "try again when one has ended"
                )
            queue = self._queues.setdefault(run.device, deque())
            run.behind = bool(queue) or run.device in self._running
            self._runs[run.id] = run
            queue.append(run)
            self._start_worker(run.device)
            self._cond.notify_all()
        return run

    def get(self, session: str, run_id: str) -> Run | None:
        """The run of this id if it belongs to `session` (None otherwise: the same answer as no such run)."""
        with self._cond:
            run = self._runs.get(run_id)
        return run if run is not None and run.session == session and not run.discarded else None

    def of_session(self, session: str) -> list[Run]:
        with self._cond:
            return [r for r in self._runs.values() if r.session == session and not r.discarded]

    def position(self, run: Run) -> int:
        """0 while running or ended; k when k-th in line for its device."""
        with self._cond:
            queue = self._queues.get(run.device, deque())
            return queue.index(run) + 1 if run in queue else 0

    def device_busy(self, device: str) -> bool:
        with self._cond:
            return device in self._running

    def busy(self, session: str) -> bool:
        """Whether a session has a run waiting or going."""
        with self._cond:
            return any(r.session == session and r.state in LIVE for r in self._runs.values())

    def stop(self, run: Run) -> None:
        """Stop a run: a queued one never starts; a running one ends within its step, keeping its best result."""
        run.stop.set()
        with self._cond:
            queue = self._queues.get(run.device)
            if queue is not None and run in queue:
                queue.remove(run)
                run.prepared = None
                self._end(run, CANCELLED, "stopped before it started")

    def discard(self, run: Run) -> None:
        """Stop a run and forget it; its folder goes now, or when its worker lets go of it."""
        self.stop(run)
        with self._cond:
            run.discarded = True
            self._runs.pop(run.id, None)
            running = self._running.get(run.device) is run
        if not running:
            shutil.rmtree(run.folder, ignore_errors=True)

    def keep_at_most(self, session: str, count: int) -> list[str]:
        """Forget the session's oldest ended runs beyond `count` runs; the ids of those forgotten."""
        runs = sorted(self.of_session(session), key=lambda r: r.created)
        forgotten = [r for r in runs[: max(0, len(runs) - count)] if r.state not in LIVE]
        for run in forgotten:
            self.discard(run)
        return [r.id for r in forgotten]

    def end_session(self, session: str) -> None:
        for run in self.of_session(session):
            self.discard(run)

    def close(self) -> None:
        """The server stops: every run is stopped, the workers joined, every folder removed."""
        with self._cond:
            self._closing = True
            runs = list(self._runs.values())
            workers = list(self._workers.values())
            self._cond.notify_all()
        for run in runs:
            self.stop(run)
        deadline = time.monotonic() + JOIN_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the workers ---

    def _prepare(self, request: RunRequest, inputs: dict[str, Image], every: int) -> Prepared:
        return prepare(
            request.task, inputs["image"], request.options(save_every=every), mask=inputs.get("mask"),
            reference=inputs.get("reference"),
        )  # fmt: skip

    def _start_worker(self, device: str) -> None:
        worker = self._workers.get(device)
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=self._work, args=(device,), name=f"dip-ui-{device}", daemon=True)
            self._workers[device] = worker
            worker.start()

    def _work(self, device: str) -> None:
        while True:
            with self._cond:
                queue = self._queues.setdefault(device, deque())
                while not queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                run = queue.popleft()
                self._running[device] = run
                run.state, run.started = RUNNING, time.time()
            try:
                self._execute(run)
            finally:
                with self._cond:
                    self._running.pop(device, None)
                    if run.discarded:
                        shutil.rmtree(run.folder, ignore_errors=True)

    def _execute(self, run: Run) -> None:
        try:
            # A run queued behind another was set up while the cores were taken: again, for its thread count.
            prepared = run.prepared
            if run.behind or prepared is None:
                prepared = self._prepare(run.request, run.inputs, run.save_every)
            run.prepared = None  # its memory (z, the weights) is the run's from now on
            if run.stop.is_set():
                raise StopRequested
            result = prepared.run(on_step=run.on_step, on_save=run.on_save)
            report = result.report
            report["dip_version"] = dip_version()
            report["ui"] = {"image": run.name, "request": _request_json(run.request)}
            save_image(run.result_path, result.image)
            write_json(run.report_path, report)
            with run.lock:
                run.result_version += 1
                run.has_report = True
                run.warnings = list(report.get("warnings", []))
            if report["interrupted"]:
                self._end(run, STOPPED, f"stopped after {report['iters']} iterations: the best result so far is kept")
            else:
                self._end(run, DONE, _summary(report))
        except KeyboardInterrupt:  # StopRequested, or fit's own before any step was booked
            self._end(run, STOPPED, "stopped before the first step: there is no result")
        except UserError as exc:
            self._end(run, FAILED, "; ".join(messages(exc)))
        except Exception as exc:  # the page says what it was; the server's log has the traceback
            log.exception("run %s failed", run.id)
            self._end(run, FAILED, f"internal error: {type(exc).__name__}: {exc}")

    def _end(self, run: Run, state: str, message: str) -> None:
        with run.lock:
            run.state, run.message, run.ended = state, message, time.time()
            run.eta_s = None
            run.inputs = {}  # only a run still to start needs its inputs
            run.reserved = 0  # its memory is free again


def _request_json(request: RunRequest) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in request.__dict__.items() if k not in ("image", "mask", "reference")}


def _summary(report: dict[str, Any]) -> str:
    from dip_core.run.summary import summary_line

    return f"done: {summary_line(report)}"
