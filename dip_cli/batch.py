"""`dip batch`: restore every image of a folder with the same options, here or on a Ray cluster.

Each result's JSON report carries a `batch` record (the task, the settings that decide the result, and the name,
size and SHA-256 of every file it was made from), so that a rerun skips exactly the results it would make again
and refuses, before any work, to count a result of other settings or inputs as done. Both engines run the same
per-image work (dip_cli.batch_work) and end with the same summary (OUT/summary.json).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dip_cli.app import UsageError, command_line, out, user_errors
from dip_cli.batch_progress import BatchProgress
from dip_cli.batch_work import FILES, Job, Outcome, Status, numbers, record_of, restore_job
from dip_cli.options import with_run_options
from dip_cli.run import handle_sigterm
from dip_cli.shard import Shard
from dip_core.backend import Device
from dip_core.problem.registry import Task
from dip_core.problem.task_options import TAKEN_BY, check_options_apply, takes
from dip_core.run.options import RunOptions
from dip_core.system.atomic import why_unwritable
from dip_core.system.version import dip_version

if TYPE_CHECKING:
    from dip_cli.batch_ray import RaySettings

SHOWN = 10  # outputs named in a message, the rest counted
SUMMARY = "summary"  # OUT/summary.json, or OUT/summary.shard-I-of-N.json for a shard


class Engine(str, Enum):
    LOCAL = "local"  # one image after the other, in this process
    RAY = "ray"  # every image a Ray task, on this machine or a cluster


@user_errors
@with_run_options(exclude=("save_every", "checkpoint_every"))
def batch(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of corrupted images (masks: STEM_mask.png beside them).")],
    options: RunOptions,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for results and reports (created).")],
    references: Annotated[
        Path | None, typer.Option(help="Folder of clean images with the same names: PSNR in the reports and summary.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Redo every image, even those whose result is already in --out.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="I/N",
            help="Restore only shard I of N (I counted from 0): image k of the folder's sorted list goes to shard "
            "k mod N, so N jobs cover the folder exactly once. SLURM array ids start where --array says: pass "
            "--shard $((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))/$SLURM_ARRAY_TASK_COUNT (with --array=0-3, "
            "simply $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). The summary is OUT/summary.shard-I-of-N.json.",
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help='local: one image after the other here; ray: every image a Ray task (pip install -e ".[ray]"), '
            "retried once if its worker dies. On a cluster, the images and --out must be on a file system every "
            "node sees at the same path, and dip installed on every node."
        ),
    ] = Engine.LOCAL,
    address: Annotated[
        str | None,
        typer.Option(
            metavar="auto|HOST:PORT",
            help="ray: the cluster to run on (auto: the one `ray start` made on this machine); "
            "default: a Ray instance started here for the batch.",
        ),
    ] = None,
    gpus_per_run: Annotated[
        float | None, typer.Option(min=0, help="ray: GPUs of each image's task (a fraction shares one); default 0.")
    ] = None,
    cpus_per_run: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="ray: CPUs of each image's task, and its run's threads unless --threads; default 1. Without "
            "--threads, the local engine runs one thread per fit too, so that both engines give the same results.",
        ),
    ] = None,
) -> None:
    """Restore every image of a folder with the same options; resumable, and a bad file does not stop it.

    A rerun skips the images whose result was made with the same settings and inputs; a result made otherwise
    stops it before any work (--force redoes every image). The summary, OUT/summary.json (written atomically),
    lists each image's status (done, skipped, failed with its error, interrupted), seconds, PSNR with
    --references, and the machine (and Ray node) that ran it. Exit code 1 when an image failed, 130 when
    interrupted.
    """
    if not input_dir.is_dir():
        raise UsageError(f"{input_dir} is not a folder")
    if references is not None and not references.is_dir():
        raise UsageError(f"--references {references} is not a folder")
    if output.resolve() == input_dir.resolve():
        raise UsageError(f"--out {output} is the input folder: choose another (its results would be read as inputs)")
    check_options_apply(task, {name: getattr(options, name) for name in TAKEN_BY if name != "mask"})  # before any work
    part = Shard.parse(shard) if shard is not None else None
    ray_settings = _ray_settings(engine, options, address, gpus_per_run, cpus_per_run)
    options = replace(options, threads=batch_threads(options, ray_settings))
    images = _images(input_dir)
    if not images:
        raise UsageError(f"no images in {input_dir}")
    targets, note = _targets(images, task, output)
    pairs = list(zip(images, targets, strict=True))
    mine = part.pick(pairs) if part is not None else pairs
    _check_writable(output)
    jobs = [_job(path, target, task, options, references) for path, target in mine]
    done = set() if force else _done(jobs, output)
    if note:
        out().print(note, highlight=False, soft_wrap=True)
    if part is not None:
        out().print(f"shard {part}: {len(jobs)} of the {len(images)} images", highlight=False)
    if done:
        out().print(
            f"{len(done)} of {len(jobs)} results are in {output} already, with these settings: skipped",
            highlight=False,
        )
    todo = [job for job in jobs if job.image not in done]
    command = command_line()
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    with handle_sigterm(), BatchProgress(len(todo)) as progress:
        if not todo:
            ran = []
        elif ray_settings is None:
            ran = _run_local(todo, task, options, command, progress)
        else:
            from dip_cli.batch_ray import run_on_ray

            ran = run_on_ray(todo, task, options, command, ray_settings, progress)
    by_image = {o.image: o for o in ran}
    outcomes = [by_image[job.image.name] if job.image not in done else _skipped(job) for job in jobs]
    context = {
        "engine": engine.value, "task": task.value, "input_dir": str(input_dir), "output_dir": str(output),
        "shard": str(part) if part is not None else None, "images_in_folder": len(images), "command": command,
        "dip_version": dip_version(), "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 3),
        "ray": asdict(ray_settings) if ray_settings is not None else None,
    }  # fmt: skip
    _summary(outcomes, context, output / f"{SUMMARY}{part.suffix if part is not None else ''}.json")
    if any(o.status is Status.INTERRUPTED for o in outcomes):
        raise typer.Exit(130)
    failed = sum(o.status is Status.FAILED for o in outcomes)
    if failed:
        out().print(f"{failed} of {len(outcomes)} images failed", highlight=False)
        raise typer.Exit(1)


def _ray_settings(
    engine: Engine, options: RunOptions, address: str | None, gpus: float | None, cpus: int | None
) -> RaySettings | None:
    """The Ray engine's settings (None for the local engine), checked before any work."""
    if engine is Engine.LOCAL:
        given = [name for name, value in (("--address", address), ("--gpus-per-run", gpus), ("--cpus-per-run", cpus))
                 if value is not None]  # fmt: skip
        if given:
            raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray")
        return None
    from dip_cli.batch_ray import RaySettings, require_ray

    require_ray()
    if options.device is Device.GPU and not gpus:
        raise UsageError("--engine ray with --device gpu needs --gpus-per-run (e.g. 1, or 0.25 to share a GPU)")
    return RaySettings(address, cpus if cpus is not None else 1, gpus if gpus is not None else 0.0)


def batch_threads(options: RunOptions, ray: RaySettings | None) -> int:
    """The CPU threads of every fit of a batch, the same on both engines: --threads, else the CPUs of a Ray task
    (--cpus-per-run, default 1), else 1. Another thread count splits a fit's sums otherwise, so it is part of a
    result (issue 25 saw 12/255 between 2 threads and 1): a batch never takes it from the machine's load."""
    if options.threads is not None:
        return options.threads
    return ray.cpus_per_run if ray is not None else 1


def _images(folder: Path) -> list[Path]:
    """The images of `folder` to restore: every image file but the masks (STEM_mask.*)."""
    from dip_core.problem.image import IMAGE_SUFFIXES

    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask") and p.is_file()
    )


def _targets(images: list[Path], task: Task, output: Path) -> tuple[list[Path], str | None]:
    """Each image's result: STEM.TASK.png, or NAME.TASK.png for images that share a stem (a.png, a.jpg).

    Stems are compared ignoring case, so that the names also differ on a case-insensitive disk.
    Also the line that says which images were named so, if any.
    """
    stems = Counter(p.stem.lower() for p in images)
    shared = [p for p in images if stems[p.stem.lower()] > 1]
    targets = [output / f"{p.name if p in shared else p.stem}.{task.value}.png" for p in images]
    by_name: dict[str, list[Path]] = {}
    for p, t in zip(images, targets, strict=True):
        by_name.setdefault(t.name, []).append(p)
    clashes = [f"{' and '.join(p.name for p in ps)} -> {name}" for name, ps in by_name.items() if len(ps) > 1]
    if clashes:
        raise UsageError(f"images would be restored to the same file ({'; '.join(clashes)}): rename them")
    if not shared:
        return targets, None
    pairs = ", ".join(f"{p.name} -> {t.name}" for p, t in zip(images, targets, strict=True) if p in shared)
    return (
        targets,
        f"{len(shared)} images share a name with another: their results are named from the whole file name ({pairs})",
    )


def _check_writable(folder: Path) -> None:
    """Create `folder` and write and delete a file in it, so that a batch does not fail at its first result."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    reason = why_unwritable(folder)
    if reason is not None:
        raise UsageError(f"cannot write into the output folder {folder}: {reason}")


def _job(path: Path, target: Path, task: Task, options: RunOptions, references: Path | None) -> Job:
    """The image's mask and reference, and the record its result is written with."""
    mask = _sibling(path, "_mask") if takes(task, "mask") else None  # a denoise batch leaves inpaint's masks be
    ref = None
    if references is not None:
        ref = references / path.name if (references / path.name).is_file() else _sibling(references / path.name, "")
    try:
        record = record_of(task, options, path, mask, ref)
    except OSError:
        record = None
    return Job(path, target, mask, ref, record)


def _sibling(path: Path, suffix: str) -> Path | None:
    """PATH's sibling STEM{suffix}.EXT with an image extension, if any."""
    from dip_core.problem.image import IMAGE_SUFFIXES

    for ext in IMAGE_SUFFIXES:
        candidate = path.with_name(f"{path.stem}{suffix}{ext}")
        if candidate.is_file():
            return candidate
    return None


def _read_report(target: Path) -> dict[str, Any] | None:
    """The JSON report beside a result, or None when it is missing or unreadable."""
    try:
        report = json.loads(target.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _differences(old: Any, new: dict[str, Any]) -> list[str]:
    """How an existing result's record differs from this run's, in words (e.g. `iters 300, now 100`)."""
    if not isinstance(old, dict):
        return ["no settings recorded"]
    words: list[str] = []
    if old.get("task") != new["task"]:
        words.append(f"task {old.get('task')}, now {new['task']}")
    before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
    for key in sorted(set(before) | set(new["settings"])):
        was, now = before.get(key), new["settings"].get(key)
        if was != now:
            words.append(f"{key.replace('_', '-')} {_word(was)}, now {_word(now)}")
    for key in ("input", *FILES):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict) and was.get("name") == now.get("name"):
            words.append(f"{now['name']} changed")
        else:
            name = {"input": "image", "net": "network"}.get(key, key)
            words.append(f"{name} {_name(was)}, now {_name(now)}")
    return words or ["other settings"]


def _word(value: Any) -> str:
    return "default" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _name(file: Any) -> str:
    return file.get("name", "?") if isinstance(file, dict) else "none"


def _listed(names: list[str]) -> str:
    """Names joined, the first SHOWN of them, the rest counted."""
    more = f", and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _done(jobs: list[Job], output: Path) -> set[Path]:
    """The images whose result exists with this run's record; refuse when an existing result has another."""
    done: set[Path] = set()
    stale: list[str] = []
    reasons: list[str] = []
    for job in jobs:
        if job.record is None or not job.target.exists():
            continue
        report = _read_report(job.target)
        old = report.get("batch") if report is not None else None
        if old == job.record:
            done.add(job.image)
            continue
        stale.append(job.target.name)
        reasons += [r for r in _differences(old, job.record) if r not in reasons]
    if stale:
        n = len(stale)
        raise UsageError(
            f"{n} output{'s' if n > 1 else ''} in {output} {'were' if n > 1 else 'was'} made with other settings or "
            f"inputs ({_listed(reasons)}): {_listed(stale)}; add --force to redo "
            f"{'them' if n > 1 else 'it'}, or use another --out"
        )
    return done


def _skipped(job: Job) -> Outcome:
    """An image whose result is in --out already: its numbers from the result's report."""
    report = _read_report(job.target) or {}
    return Outcome(job.image.name, job.target.name, Status.SKIPPED, **numbers(report))


def _run_local(
    jobs: list[Job], task: Task, options: RunOptions, command: str, progress: BatchProgress
) -> list[Outcome]:
    """The local engine: one image after the other in this process; Ctrl-C marks the rest interrupted."""
    outcomes: list[Outcome] = []
    for job in jobs:
        progress.started(job.image.name)
        try:
            outcome = restore_job(job, task, options, command)
        except KeyboardInterrupt:
            break
        outcomes.append(outcome)
        progress.ended(outcome)
    return outcomes + [Outcome(j.image.name, j.target.name, Status.INTERRUPTED) for j in jobs[len(outcomes) :]]


def _summary(outcomes: list[Outcome], context: dict[str, Any], path: Path) -> None:
    """The table of every image, and the same as JSON at `path` (atomically)."""
    from dip_core.system.atomic import write_json

    counts = Counter(o.status.value for o in outcomes)
    done, seconds = counts[Status.DONE.value], context["seconds"]
    data = {
        **context,
        "counts": {s.value: counts[s.value] for s in Status},
        "images_per_minute": round(60 * done / seconds, 3) if done and seconds > 0 else None,
        "images": [o.to_dict() for o in outcomes],
    }
    hosts = context["engine"] == Engine.RAY.value
    table = Table("image", "status", "iters", "seconds", "PSNR input", "PSNR result", *(["host"] if hosts else []))
    formats = {"iters": "{}", "seconds": "{:.1f}", "psnr_input": "{:.2f}", "psnr": "{:.2f}"}
    for o in outcomes:
        cells = [fmt.format(getattr(o, k)) if getattr(o, k) is not None else "-" for k, fmt in formats.items()]
        table.add_row(escape(o.image), o.status.value, *cells, *([escape(o.hostname or "-")] if hosts else []))
    out().print(table)
    for o in outcomes:
        if o.error is not None:
            out().print(f"{o.image}: {o.error}", highlight=False, soft_wrap=True, markup=False)
    write_json(path, data)
    out().print(f"wrote {path}", highlight=False)
