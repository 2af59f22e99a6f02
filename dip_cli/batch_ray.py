"""`dip batch --engine ray`: every image a Ray task, on this machine or on a Ray cluster.

Each task calls the same `restore_job` as the local engine, so it writes the same report and result in the
same place; on a cluster the images, --out and any kernel or network file must therefore be on a file
system that every node sees at the same path, and dip must be installed on every node. A task whose worker
dies (a killed process, a node lost) is retried once; a user error in an image (a corrupt file) comes back
as a failed `Outcome`, not an exception, so it is not retried and the batch carries on.

Ray is an optional extra (`pip install -e ".[ray]"`): it is imported here, inside the functions only.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dip_cli.batch_progress import BatchProgress
from dip_cli.batch_work import Job, Outcome, Status, restore_job
from dip_cli.run import handle_sigterm
from dip_core.errors import UserError
from dip_core.problem.registry import Task
from dip_core.run.options import RunOptions

INSTALL_HINT = 'pip install -e ".[ray]"'
CONNECT_S = 5.0  # how long --address HOST:PORT may take to answer
POLL_S = 0.5  # how often the progress is brought up to date while no image finishes
# Test hook, inert unless this variable is set (in the environment of `dip batch`) to the path of a marker
# file: the first task that finds no marker creates it, writes its image's name into it and kills its own
# worker process, as a crash would; Ray's retry then finds the marker and runs the image normally.
CRASH_ONCE_VAR = "DIP_BATCH_TEST_CRASH_ONCE"


class RayMissing(UserError):
    """--engine ray without Ray installed."""


class RayUnreachable(UserError):
    """--address names no Ray cluster that answers."""


class RayTooSmall(UserError):
    """No node has the CPUs and GPUs one run asks for."""


@dataclass(frozen=True)
class RaySettings:
    """Where the tasks run and what each one asks Ray for."""

    address: str | None = None  # None: start a Ray instance on this machine for the batch
    cpus_per_run: int = 1  # each task's CPUs, and its run's threads unless --threads says otherwise
    gpus_per_run: float = 0.0  # each task's GPUs; a fraction shares a GPU between tasks


def require_ray() -> None:
    """Raise a one-line user error saying how to install Ray when it is not importable."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RayMissing(f"--engine ray needs Ray, an optional extra of dip: {INSTALL_HINT}") from None


def run_on_ray(
    jobs: list[Job], task: Task, options: RunOptions, command: str, settings: RaySettings, progress: BatchProgress
) -> list[Outcome]:
    """Restore every job as a Ray task; the outcomes in the order of `jobs` (Ctrl-C: the unfinished ones
    interrupted). Connects to --address, joins the Ray instance this process already runs, or starts one."""
    import ray

    options = _absolute_files(options)
    jobs = [_absolute(job) for job in jobs]
    own = not ray.is_initialized()
    if own:
        _start(settings)
    try:
        with handle_sigterm():  # again: starting Ray put its own SIGTERM handler in place of dip's
            return _run(jobs, task, options, command, settings, progress)
    finally:
        if own:
            ray.shutdown()


def _start(settings: RaySettings) -> None:
    """Connect to the cluster at --address, or start a quiet Ray instance on this machine (no dashboard)."""
    import ray

    from dip_core.system.threads import core_count

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if settings.address is None:
        ray.init(address="local", num_cpus=core_count(), include_dashboard=False, **quiet)  # not $RAY_ADDRESS
        return
    _check_reachable(settings.address)
    try:
        ray.init(address=settings.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnreachable(f"cannot connect to the Ray cluster at {settings.address}: {_line(exc)}") from None


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is said at once (Ray itself retries it for minutes)."""
    host, colon, port = address.rpartition(":")
    if not colon or "://" in address or not port.isdigit():
        return  # `auto`, a ray:// client address: Ray says what is wrong quickly
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except OSError as exc:
        raise RayUnreachable(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} (is `ray start --head` running "
            "there, and is this its GCS port, 6379 by default?)"
        ) from None


def _run(
    jobs: list[Job], task: Task, options: RunOptions, command: str, settings: RaySettings, progress: BatchProgress
) -> list[Outcome]:
    import ray

    remote = ray.remote(_task).options(
        num_cpus=settings.cpus_per_run, num_gpus=settings.gpus_per_run, max_retries=1, retry_exceptions=False
    )
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    slots = _slots(nodes, settings)
    cpus, gpus = (sum(n.get(key, 0) for n in nodes) for key in ("CPU", "GPU"))
    progress.console.print(
        f"ray: {len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus:g} CPUs, {gpus:g} GPUs; {slots} image"
        f"{'s' * (slots != 1)} at a time ({settings.cpus_per_run} CPU, {settings.gpus_per_run:g} GPU and "
        f"{options.threads} thread{'s' * (options.threads != 1)} each)",
        highlight=False,
    )
    marker = os.environ.get(CRASH_ONCE_VAR) or None
    refs = [remote.remote(job, task, options, command, marker) for job in jobs]
    where = {ref: k for k, ref in enumerate(refs)}
    outcomes: list[Outcome | None] = [None] * len(jobs)
    pending = list(refs)
    try:
        while pending:
            progress.set_running(min(len(pending), slots))
            ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
            for ref in ready:
                k = where[ref]
                outcomes[k] = _outcome(ref, jobs[k])
                progress.ended(outcomes[k], running=min(len(pending), slots))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # a running task stops like a local run on Ctrl-C: nothing written
    return [
        o if o is not None else Outcome(job.image.name, job.target.name, Status.INTERRUPTED)
        for o, job in zip(outcomes, jobs, strict=True)
    ]


def _task(job: Job, task: Task, options: RunOptions, command: str, crash_marker: str | None) -> Outcome:
    """One image, in a Ray worker: the local engine's work, and where and in which attempt it ran."""
    import ray

    if crash_marker is not None:
        _crash_once(Path(crash_marker), job)
    outcome = restore_job(job, task, options, command)
    return replace(outcome, attempts=_attempt(), node_id=ray.get_runtime_context().get_node_id())


def _outcome(ref: Any, job: Job) -> Outcome:
    """A task's outcome; a task that raised or whose worker died twice is a failed one (one error line)."""
    import ray

    failed = Outcome(job.image.name, job.target.name, Status.FAILED)
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return replace(failed, status=Status.INTERRUPTED)
    except ray.exceptions.RayTaskError as exc:  # an error that is no user error: a bug, so not retried
        cause = getattr(exc, "cause", None) or exc
        return replace(failed, error=f"{type(cause).__name__}: {_line(cause)}")
    except ray.exceptions.RayError as exc:  # the worker or its node died, and again on the retry
        return replace(failed, error=f"its Ray worker died twice ({type(exc).__name__}: {_line(exc)})")


def _slots(nodes: list[dict[str, float]], settings: RaySettings) -> int:
    """How many tasks the cluster's nodes run at once; a task that fits on no node is a user error (it would
    wait for ever)."""
    per_node = []
    for resources in nodes:
        n = resources.get("CPU", 0) // settings.cpus_per_run
        if settings.gpus_per_run > 0:
            n = min(n, resources.get("GPU", 0) // settings.gpus_per_run)
        per_node.append(int(n))
    if not sum(per_node):
        largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        raise RayTooSmall(
            f"no node of the Ray cluster fits a run of --cpus-per-run {settings.cpus_per_run} --gpus-per-run "
            f"{settings.gpus_per_run:g} (the largest node: {largest.get('CPU', 0):g} CPUs, "
            f"{largest.get('GPU', 0):g} GPUs)"
        )
    return sum(per_node)


def _attempt() -> int | None:
    """1 for a task's first attempt, 2 for its retry; None where Ray does not say (it is Ray's private API)."""
    import ray

    try:
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()) + 1
    except Exception:  # a private call: any failure only loses the count
        return None


def _crash_once(marker: Path, job: Job) -> None:
    """The CRASH_ONCE_VAR test hook: kill this worker if no task has done so yet."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, job.image.name.encode())
    os.close(fd)
    os._exit(1)


def _absolute(job: Job) -> Job:
    """The job with absolute paths: a worker does not run in this process's working folder."""
    return replace(
        job, image=job.image.absolute(), target=job.target.absolute(),
        mask=job.mask.absolute() if job.mask else None, reference=job.reference.absolute() if job.reference else None,
    )  # fmt: skip


def _absolute_files(options: RunOptions) -> RunOptions:
    """Kernel and network files by absolute path (a kernel spec or a network's name is kept, as in the record)."""
    from dip_core.model.config import NETS

    changes = {}
    if options.kernel and Path(options.kernel).is_file():
        changes["kernel"] = str(Path(options.kernel).absolute())
    if options.net and options.net not in NETS and Path(options.net).is_file():
        changes["net"] = str(Path(options.net).absolute())
    return replace(options, **changes)


def _line(exc: BaseException) -> str:
    """An exception's first line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
