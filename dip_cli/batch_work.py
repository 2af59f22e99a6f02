"""The work on one image of `dip batch`, the same for every engine: load, restore, write the report and the result.

The local engine calls `restore_job` in its own process, the Ray engine in a Ray task: one code path, so both
write the same files, bit for bit (with the same thread count), in the same place. Nothing here prints: what
the user should see (warnings, the error) comes back in the `Outcome`, and the engine's process shows it.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from dip_core.errors import UserError
from dip_core.problem.registry import Task
from dip_core.run.options import RunOptions

# RunOptions fields that do not change the result: left out of the record a rerun compares. Not `threads`: another
# count splits the sums otherwise (dip batch fixes it for every fit, dip_cli.batch.batch_threads).
NEUTRAL = ("trace_output", "save_every", "checkpoint_every")
# Files besides the image whose contents decide the result.
FILES = ("mask", "reference", "kernel", "net")


@dataclass(frozen=True)
class Job:
    """One image of the batch: where its result goes and what it is made from."""

    image: Path
    target: Path
    mask: Path | None
    reference: Path | None
    record: dict[str, Any] | None  # None: the image could not be read to hash it (it fails when run)


class Status(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"  # its result was already in the output folder, made with the same settings and inputs
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the batch was stopped before this image was finished


@dataclass(frozen=True)
class Outcome:
    """One image's line of the batch summary."""

    image: str  # the input's file name
    output: str  # the result's file name in the output folder (or where it was rescued to)
    status: Status
    error: str | None = None  # one line, when failed
    seconds: float | None = None  # wall time of this image in this batch: load, run and writes
    iters: int | None = None
    psnr_input: float | None = None  # with a reference
    psnr: float | None = None  # of the result, with a reference
    attempts: int | None = None  # Ray: 2 when a worker died on the first
    node_id: str | None = None  # Ray's node
    hostname: str | None = None  # the machine that ran it
    warnings: tuple[str, ...] = field(default=())
    summary: str | None = None  # the run's one line, as `dip run` prints it (dip_core.run.summary)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        seconds = round(self.seconds, 3) if self.seconds is not None else None
        return {
            "image": self.image, "output": self.output, "status": self.status.value, "error": self.error,
            "seconds": seconds, "iters": self.iters, "psnr_input": self.psnr_input, "psnr": self.psnr,
            "attempts": self.attempts, "node_id": self.node_id, "hostname": self.hostname,
            "warnings": list(self.warnings), "summary": self.summary,
        }  # fmt: skip


def numbers(report: dict[str, Any]) -> dict[str, Any]:
    """The summary's fields a run's report gives."""
    return {"iters": report.get("iters"), "psnr_input": report.get("psnr_input"), "psnr": report.get("psnr_result")}


def file_record(path: Path | None) -> dict[str, Any] | None:
    """A file's name, size and SHA-256: what tells a rerun that it is the same file."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def record_of(task: Task, options: RunOptions, image: Path, mask: Path | None, ref: Path | None) -> dict[str, Any]:
    """What decides a result: the task, the settings (but NEUTRAL) and the files it is made from.

    A kernel image or a network's JSON file is recorded by its contents, not by how its path was spelled.
    """
    from dip_core.model.config import NETS

    settings = {k: v for k, v in options.to_dict().items() if k not in NEUTRAL}
    files = {"mask": file_record(mask), "reference": file_record(ref), "kernel": None, "net": None}
    if options.kernel and Path(options.kernel).is_file():
        files["kernel"] = file_record(Path(options.kernel))
        del settings["kernel"]
    if options.net and options.net not in NETS and Path(options.net).is_file():
        files["net"] = file_record(Path(options.net))
        del settings["net"]
    return {"task": task.value, "settings": settings, "input": file_record(image), **files}


def _save(path: Path, image: Any) -> None:
    from dip_core.problem.image import save_image

    save_image(path, image)


def restore_job(job: Job, task: Task, options: RunOptions, command: str) -> Outcome:
    """Restore one image and write its report, then its result, each atomically, beside the other results.

    A user error (a corrupt file, a bad mask) or a file that cannot be read or written is a failed `Outcome`,
    not an exception, so that the batch carries on (and Ray does not retry it). A run stopped by Ctrl-C or
    SIGTERM raises KeyboardInterrupt and writes nothing.
    """
    from dip_cli.run import rescue
    from dip_core.problem.image import load_image, save_image
    from dip_core.run.api import restore
    from dip_core.run.summary import summary_line
    from dip_core.system.atomic import write_json
    from dip_core.system.version import dip_version

    started = time.perf_counter()
    base = Outcome(job.image.name, job.target.name, Status.FAILED, hostname=socket.gethostname())
    try:
        result = restore(task.value, load_image(job.image), options, mask=job.mask, reference=job.reference)
        if result.report["interrupted"]:
            raise KeyboardInterrupt
        record = job.record
        if record is None:  # it was unreadable then; read it now that it was restored
            record = record_of(task, options, job.image, job.mask, job.reference)
        report = {**result.report, "output": str(job.target), "batch": record}
        report.update(dip_version=dip_version(), command=command)
        ran = replace(base, warnings=tuple(report["warnings"]), summary=summary_line(report), **numbers(report))
        # The report goes first: a result on disk always has its own record beside it.
        job.target.unlink(missing_ok=True)
        write_json(job.target.with_suffix(".json"), report)
        try:
            save_image(job.target, result.image)
        except (UserError, OSError) as exc:  # a finished result is not lost: it goes to a fallback
            spare = rescue(job.target, functools.partial(_save, image=result.image))
            if spare is None:
                raise
            return replace(
                ran, output=str(spare), error=f"{_message(exc, job.target)}; wrote it to {spare} instead",
                seconds=time.perf_counter() - started,
            )  # fmt: skip
        return replace(ran, status=Status.DONE, seconds=time.perf_counter() - started)
    except (UserError, OSError) as exc:
        return replace(base, error=_message(exc, job.target), seconds=time.perf_counter() - started)


def _message(exc: Exception, target: Path) -> str:
    """One line for a failed image."""
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or target}"
    return " ".join(str(exc).split())
