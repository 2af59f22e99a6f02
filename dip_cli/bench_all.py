"""`dip bench all`: the whole benchmark of one machine in one command, into one file to share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dip_cli.app import ConfigOpt, PrecisionOpt, UsageError, command_line, err, user_errors
from dip_core.backend import BackendName, available_backends
from dip_core.system.atomic import why_unwritable
from dip_core.system.paths import bench_results_dir

MACHINES_FOLDER = "bench/results/machines"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@user_errors
def bench_all(
    sizes: Annotated[
        list[int] | None, typer.Option("--size", help="Image side of the speed rows (repeat); default 128 256 512.")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, max=50, help="Quality: runs per case and backend.")] = 5,
    sustained: Annotated[
        float, typer.Option(min=0, help="Also time the step for this many seconds (throttling); 0: no.")
    ] = 0.0,
    sustained_size: Annotated[int, typer.Option(min=16, max=8192, help="Image side of the sustained run.")] = 256,
    backends: Annotated[list[BackendName] | None, typer.Option("--backend", "-b", help="Repeat for several.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder of the paper's images: their quick quality cases too.")
    ] = None,
    quality: Annotated[bool, typer.Option(help="Run the quality cases.")] = True,
    profile: Annotated[
        str, typer.Option(help="Quality profile: quick (64 px, 300-400 iterations); smoke: seconds, for tests.")
    ] = "quick",
    crosscheck: Annotated[bool, typer.Option(help="Run the MLX-PyTorch cross-check on this device.")] = True,
    config: ConfigOpt = "default",
    precision: PrecisionOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The result file, or a folder for <machine>-<date>.json (default: your results folder).",
        ),
    ] = None,
) -> None:
    """Benchmark this machine on every installed backend: step and loop speed at 128-512², memory, quality over
    seeds, the cross-check, optionally a sustained run; one JSON file to share."""
    from bench.machine import SIZES, AllSettings, Job, MachineRun, file_name

    names = [b.value for b in backends] if backends else available_backends()
    if not names:
        raise UsageError("no backend is installed")
    if data is not None and not data.is_dir():
        raise UsageError(f"no image folder at {data}: give --data the folder of the paper's test images")
    from dip_core.model.config import load_config

    if profile not in ("quick", "smoke"):
        raise UsageError(f"unknown quality profile {profile!r}; choose quick or smoke")
    load_config(config)  # a bad network name is a user error now, not after the speed rows
    chosen = tuple(sizes) if sizes else SIZES
    if any(s < 16 or s > 8192 for s in chosen):
        raise UsageError(f"sizes must be between 16 and 8192, got {list(chosen)}")
    from bench.speed import SpeedCase, network_for
    from dip_core.model.config import check_size

    for side in (*chosen, *((sustained_size,) if sustained else ())):  # too small for the network: say so now
        check_size(network_for(SpeedCase(names[0], "auto", side)), side, side)
    settings = AllSettings(
        sizes=chosen, seeds=seeds, sustained_s=sustained, sustained_size=sustained_size,
        precision=precision.value if precision else None, quality=quality, profile=profile,
        crosscheck=crosscheck, crosscheck_config=config, data=data, backends=tuple(names),
    )  # fmt: skip
    folder = bench_results_dir() if out is None else out if out.is_dir() else None
    if folder is None and out is not None and out.suffix != ".json":
        raise UsageError(f"the result file must end in .json (or be a folder), got {out}")
    run = MachineRun(settings, out, command_line())
    if folder is not None:  # a folder: the file is named after the machine and the day
        folder.mkdir(parents=True, exist_ok=True)
        run.path = folder / file_name(run.data["machine"], run.data["date"])
    if not run.path.parent.is_dir():
        raise UsageError(f"no folder {run.path.parent} for the result file")
    problem = why_unwritable(run.path.parent)
    if problem:
        raise UsageError(f"cannot write the result in {run.path.parent}: {problem}")
    console = err()
    machine = run.data["machine"]
    console.print(f"machine: {machine['label']}, {machine['memory_gib']} GiB, {machine['os']}", highlight=False)
    console.print(f"backends: {', '.join(names)}; timing a few steps to estimate the whole run...", highlight=False)
    run.probe()
    plan = run.plan()
    console.print(
        f"{len(plan.jobs)} measurements, about {_minutes(plan.estimate_s)} in all (Ctrl-C keeps what finished)",
        highlight=False,
    )
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    done_s = 0.0
    try:
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("starting", total=plan.estimate_s)

            def on_job(job: Job, k: int, seconds: float) -> None:
                nonlocal done_s
                if seconds:
                    done_s += job.estimate_s
                    bar.update(task, completed=done_s)
                    if not console.is_terminal:
                        console.print(f"[{k}/{len(plan.jobs)}] {job.what}: {seconds:.0f} s", highlight=False)
                else:
                    bar.update(task, description=f"{job.what} ({k + 1}/{len(plan.jobs)})")

            run.run(plan, on_job)
    except KeyboardInterrupt:
        run.save()
        speed = len(run.data["speed"])
        console.print(f"interrupted: kept what finished ({speed} speed rows) in {run.path}", highlight=False)
        raise typer.Exit(130) from None
    _summary(run.data)
    console.print(f"wrote {run.path}", highlight=False, soft_wrap=True)
    console.print(
        "To add this machine to the chip table: copy the file to "
        f"{MACHINES_FOLDER}/ in a clone of dip and open a pull request. "
        f"`dip bench report {MACHINES_FOLDER} --html chips.html` shows it beside the others.",
        highlight=False,
        soft_wrap=True,
    )


def _summary(data: dict[str, Any]) -> None:
    """The headline figures: ms/iter per backend and size, skipped sizes, quality findings, the cross-check."""
    console = err()
    for row in data["speed"]:
        console.print(
            f"{row['backend']:>5} {row['device']:>3} {row['size']:>4}² {row['kind']:>4}: {row['ms_per_iter']:8.1f} "
            "ms/iter",
            highlight=False,
        )
    for s in data["skipped"]:
        console.print(f"skipped {s['backend']} {s['kind']} {s['size']}²: {s['reason']}", highlight=False)
    if data["quality"]:
        for d in data["quality"]["differences"]:
            low, high = d["ci95"]
            mark = " (a finding)" if d["finding"] else ""
            console.print(
                f"{d['case']}: MLX - torch {d['mlx_minus_torch']:+.2f} dB [{low:+.2f}, {high:+.2f}]{mark}",
                highlight=False,
            )
    if data["crosscheck"]:
        c = data["crosscheck"]
        console.print(f"cross-check on {c['device']}: {c['verdict']}", highlight=False)
    if data["sustained"]:
        s = data["sustained"]
        console.print(
            f"sustained {s['seconds']:.0f} s: first {s['first_minute_ms']:.1f}, last {s['last_minute_ms']:.1f} ms/iter",
            highlight=False,
        )
