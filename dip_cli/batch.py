"""`dip batch`: restore every image of a folder with the same options.

Each result's JSON report carries a `batch` record (the task, the settings that
decide the result, and the name, size and SHA-256 of every file it was made
from), so that a rerun skips exactly the results it would make again and
refuses, before any work, to count a result of other settings or inputs as done.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dip_cli.app import UsageError, command_line, err, out, user_errors
from dip_cli.options import with_run_options
from dip_cli.run import handle_sigterm, rescue
from dip_core.atomic import why_unwritable
from dip_core.errors import UserError
from dip_core.options import RunOptions
from dip_core.presets import Task
from dip_core.version import dip_version

# RunOptions fields that do not change the result: left out of the record a rerun compares.
NEUTRAL = ("threads", "trace_output", "save_every", "checkpoint_every")
# Files besides the image whose contents decide the result.
FILES = ("mask", "reference", "kernel", "net")
SHOWN = 10  # outputs named in a message, the rest counted


@dataclass
class _Job:
    """One image of the batch: where its result goes and what it is made from."""

    image: Path
    target: Path
    mask: Path | None
    reference: Path | None
    record: dict[str, Any] | None  # None: the image could not be read to hash it (it fails when run)


@user_errors
@with_run_options(exclude=("save_every", "checkpoint_every"))
def batch(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of corrupted images (masks: STEM_mask.png beside them).")],
    options: RunOptions,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for results and reports (created).")],
    references: Annotated[Path | None, typer.Option(help="Folder of clean images with the same names.")] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Redo every image, even those whose result is already in --out.")
    ] = False,
) -> None:
    """Restore every image of a folder with the same options; resumable, and a bad file does not stop it.

    A rerun skips the images whose result was made with the same settings and inputs; a result made
    otherwise stops it before any work (--force redoes every image). Exit code 1 when an image failed.
    """
    if not input_dir.is_dir():
        raise UsageError(f"{input_dir} is not a folder")
    if references is not None and not references.is_dir():
        raise UsageError(f"--references {references} is not a folder")
    if output.resolve() == input_dir.resolve():
        raise UsageError(f"--out {output} is the input folder: choose another (its results would be read as inputs)")
    images = _images(input_dir)
    if not images:
        raise UsageError(f"no images in {input_dir}")
    targets, note = _targets(images, task, output)
    _check_writable(output)
    jobs = [_job(path, target, task, options, references) for path, target in zip(images, targets, strict=True)]
    done = set() if force else _done(jobs, output)
    if note:
        out().print(note, highlight=False, soft_wrap=True)
    _run(jobs, done, task, options, output)


def _images(folder: Path) -> list[Path]:
    """The images of `folder` to restore: every image file but the masks (STEM_mask.*)."""
    from dip_core.image import IMAGE_SUFFIXES

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


def _save(path: Path, image: Any) -> None:
    from dip_core.image import save_image

    save_image(path, image)


def _check_writable(folder: Path) -> None:
    """Create `folder` and write and delete a file in it, so that a batch does not fail at its first result."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    reason = why_unwritable(folder)
    if reason is not None:
        raise UsageError(f"cannot write into the output folder {folder}: {reason}")


def _job(path: Path, target: Path, task: Task, options: RunOptions, references: Path | None) -> _Job:
    """The image's mask and reference, and the record its result is written with."""
    mask = _sibling(path, "_mask")
    ref = None
    if references is not None:
        ref = references / path.name if (references / path.name).is_file() else _sibling(references / path.name, "")
    try:
        record = _record(task, options, path, mask, ref)
    except OSError:
        record = None
    return _Job(path, target, mask, ref, record)


def _sibling(path: Path, suffix: str) -> Path | None:
    """PATH's sibling STEM{suffix}.EXT with an image extension, if any."""
    from dip_core.image import IMAGE_SUFFIXES

    for ext in IMAGE_SUFFIXES:
        candidate = path.with_name(f"{path.stem}{suffix}{ext}")
        if candidate.is_file():
            return candidate
    return None


def _file(path: Path | None) -> dict[str, Any] | None:
    """A file's name, size and SHA-256: what tells a rerun that it is the same file."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _record(task: Task, options: RunOptions, image: Path, mask: Path | None, ref: Path | None) -> dict[str, Any]:
    """What decides a result: the task, the settings (but NEUTRAL) and the files it is made from.

    A kernel image or a network's JSON file is recorded by its contents, not by how its path was spelled.
    """
    from dip_core.config import NETS

    settings = {k: v for k, v in options.to_dict().items() if k not in NEUTRAL}
    files = {"mask": _file(mask), "reference": _file(ref), "kernel": None, "net": None}
    if options.kernel and Path(options.kernel).is_file():
        files["kernel"] = _file(Path(options.kernel))
        del settings["kernel"]
    if options.net and options.net not in NETS and Path(options.net).is_file():
        files["net"] = _file(Path(options.net))
        del settings["net"]
    return {"task": task.value, "settings": settings, "input": _file(image), **files}


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


def _done(jobs: list[_Job], output: Path) -> set[Path]:
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


def _run(jobs: list[_Job], done: set[Path], task: Task, options: RunOptions, output: Path) -> None:
    """Restore every job not `done`; a failed image is reported and the next one goes on."""
    from dip_core.api import restore
    from dip_core.atomic import write_json
    from dip_core.image import load_image, save_image

    rows: list[dict[str, Any]] = []
    todo = len(jobs) - len(done)
    k = 0
    for job in jobs:
        path, target = job.image, job.target
        row: dict[str, Any] = {"image": path.name, "output": target.name}
        if path in done:
            rows.append({**row, "status": "skipped (done)", **_numbers(_read_report(target) or {})})
            continue
        k += 1
        try:
            out().print(f"[bold]{path.name}[/] ({k}/{todo})", highlight=False)
            with handle_sigterm():
                result = restore(task.value, load_image(path), options, mask=job.mask, reference=job.reference)
            if result.report["interrupted"]:
                raise KeyboardInterrupt
            for warning in result.report["warnings"]:
                err().print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
            if job.record is None:  # it was unreadable then; read it now that it was restored
                job.record = _record(task, options, path, job.mask, job.reference)
            rep = {**result.report, "output": str(target), "batch": job.record}
            rep.update(dip_version=dip_version(), command=command_line())
            # The report goes first: a result on disk always has its own record beside it.
            target.unlink(missing_ok=True)
            write_json(target.with_suffix(".json"), rep)
            try:
                save_image(target, result.image)
            except (UserError, OSError) as exc:  # a finished result is not lost: it goes to a fallback
                spare = rescue(target, functools.partial(_save, image=result.image))
                if spare is None:
                    raise
                err().print(f"[bold red]error:[/] {exc}; wrote it to {spare} instead", highlight=False, soft_wrap=True)
                rows.append({**row, "status": f"error: written to {spare}", **_numbers(rep)})
                continue
            rows.append({**row, "status": "done", **_numbers(rep)})
        except (UserError, OSError) as exc:
            message = str(exc) if isinstance(exc, UserError) else f"{exc.strerror or exc}: {exc.filename or target}"
            err().print(f"[red]failed {path.name}:[/] {message}", highlight=False, soft_wrap=True)
            rows.append({**row, "status": f"error: {message}"})
        except KeyboardInterrupt:
            rows.append({**row, "status": "interrupted"})
            _batch_summary(rows, output)
            raise typer.Exit(130) from None
    _batch_summary(rows, output)
    failed = sum(r["status"].startswith("error") for r in rows)
    if failed:
        err().print(f"{failed} of {len(rows)} images failed", highlight=False)
        raise typer.Exit(1)


def _numbers(rep: dict[str, Any]) -> dict[str, Any]:
    """The columns of the summary a report gives."""
    return {
        "iters": rep.get("iters"),
        "seconds": rep.get("seconds"),
        "psnr_input": rep.get("psnr_input"),
        "psnr": rep.get("psnr_result"),
    }


def _batch_summary(rows: list[dict[str, Any]], folder: Path) -> None:
    from dip_core.atomic import write_json

    table = Table("image", "status", "iters", "seconds", "PSNR input", "PSNR result")
    formats = {"iters": "{}", "seconds": "{:.1f}", "psnr_input": "{:.2f}", "psnr": "{:.2f}"}
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "-" for k, fmt in formats.items()]
        table.add_row(r["image"], r["status"], *cells)
    out().print(table)
    write_json(folder / "summary.json", rows)
    out().print(f"wrote {folder / 'summary.json'}", highlight=False)
