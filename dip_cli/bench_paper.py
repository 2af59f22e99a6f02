"""`dip bench paper`: the Deep Image Prior paper's experiments at its settings, beside its published numbers."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.paper import CASE_NAMES, ProfileName
from dip_cli.app import DeviceOpt, PrecisionOpt, UsageError, command_line, err, user_errors
from dip_core.backend import BackendName, Device, available_backends
from dip_core.system.atomic import atomic_write, why_unwritable
from dip_core.system.paths import bench_results_dir

CaseName = Enum("CaseName", {n.replace("-", "_").upper(): n for n in CASE_NAMES}, type=str)  # type: ignore[misc]


@user_errors
def bench_paper(
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of the paper's images, named as in its code's data/ (F16_GT.png, kate.png, ...)."),
    ] = None,
    profile: Annotated[
        ProfileName,
        typer.Option(help="quick: downscaled, few iterations (not the paper's settings); paper: the paper's."),
    ] = ProfileName.QUICK,
    backends: Annotated[list[BackendName] | None, typer.Option("--backend", "-b", help="Repeat for several.")] = None,
    cases: Annotated[list[CaseName] | None, typer.Option("--case", help="Only these cases (repeat).")] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Runs per case and backend, seeds 0..N-1.")] = 1,
    device: DeviceOpt = Device.AUTO,
    precision: PrecisionOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the result JSON, the tables (paper-PROFILE.md, .html) and the state a rerun resumes from.",
            show_default=f"per user: {bench_results_dir()}",
        ),
    ] = None,
) -> None:
    """Run the paper's experiments (denoising, inpainting, restoration, super-resolution, JPEG) on each backend and
    write its tables beside the published numbers; a rerun with the same settings skips the finished cases."""
    from bench.fingerprint import slug
    from bench.machine import machine_info
    from bench.paper import CASES, PROFILES, PaperRun

    if data is None:
        raise UsageError("give --data the folder of the paper's images (F16_GT.png, kate.png, ... as in its code)")
    if not data.is_dir():
        raise UsageError(f"no image folder at {data}: give --data the folder of the paper's images")
    names = [b.value for b in backends] if backends else available_backends()
    if not names:
        raise UsageError("no backend is installed")
    folder = out if out is not None else bench_results_dir()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out must be a folder, got the file {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    problem = why_unwritable(folder)
    if problem:
        raise UsageError(f"cannot write into {folder}: {problem}")
    chosen = [c for c in CASES if not cases or c.name in {x.value for x in cases}]
    run = PaperRun(PROFILES[profile.value], chosen, names, seeds, data, device.value,
                   precision.value if precision else None, folder, command_line())  # fmt: skip
    console = err()
    for s in run.skipped:
        console.print(f"skipped {s['case']}: {s['reason']}", highlight=False, soft_wrap=True)
    if run.resumed:
        console.print(f"resuming: {run.resumed} finished runs kept from {run.state_path}", highlight=False)
    pending = run.pending()
    machine = machine_info()
    paths = (run.result_path(slug(machine["label"])), folder / f"paper-{profile.value}.md",
             folder / f"paper-{profile.value}.html")  # fmt: skip
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("starting", total=sum(j.work for j in pending) or 1)

            def on_job(job: Any, row: dict[str, Any] | None) -> None:
                if row is None:
                    bar.update(task, description=f"{job.case.name} {job.backend} seed {job.seed}")
                    return
                bar.advance(task, job.work)
                console.print(f"{job.case.name} {job.backend} seed {job.seed}: {row['summary']}", highlight=False,
                              soft_wrap=True)  # fmt: skip

            run.run(on_job)
    except KeyboardInterrupt:
        _write(run, machine, paths)
        console.print(f"interrupted: kept {len(run.rows)} finished runs (a rerun resumes)", highlight=False)
        raise typer.Exit(130) from None
    _write(run, machine, paths)


def _write(run: Any, machine: dict[str, Any], paths: tuple[Path, Path, Path]) -> None:
    """The result file and the two tables, from what finished (all of it, or a partial table after Ctrl-C)."""
    from bench import paper_table
    from dip_core.system.atomic import write_json

    result = run.result()
    result["machine"] = machine
    json_path, md_path, html_path = paths
    write_json(json_path, result)
    args = (result["paper"], machine["label"], result["date"], result["command"])
    for path, text in ((md_path, paper_table.markdown(*args)), (html_path, paper_table.html_page(*args))):
        with atomic_write(path) as fh:
            fh.write(text.encode())
    for path in paths:
        err().print(f"wrote {path}", highlight=False, soft_wrap=True)
