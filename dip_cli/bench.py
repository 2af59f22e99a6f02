"""`dip bench speed|quality|report`: measurements per backend and machine, and the merged report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dip_cli.app import DeviceOpt, PrecisionOpt, UsageError, command_line, err, out, user_errors
from dip_core.backend import BackendName, Device, available_backends
from dip_core.system.paths import COMMITTED_RESULTS, bench_report_dir, bench_results_dir

bench_app = typer.Typer(help="Benchmarks: speed and quality per backend and machine, and the merged report.")

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": False}


def _numbers(first: list[int] | None, extra: list[str], default: tuple[int, ...]) -> tuple[int, ...]:
    """`--sizes 128 256`: click gives the first value to the option and the rest as extra arguments."""
    values = list(first or [])
    for arg in extra:
        try:
            values.append(int(arg))
        except ValueError:
            raise UsageError(f"unexpected argument {arg!r}") from None
    if any(v < 1 or v > 16384 for v in values):
        raise UsageError(f"sizes must be between 1 and 16384, got {values}")
    return tuple(values) or default


def _save_result(data: dict[str, Any], out_dir: Path | None) -> Path | None:

    from bench.fingerprint import machine_label
    from bench.fingerprint import slug as machine_slug
    from dip_core.system.atomic import write_json

    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(machine_label(data["fingerprint"]))
    stamp = data["date"].replace(":", "").replace("-", "")[:15]
    path = out_dir / f"{stamp}-{data['kind']}-{slug}.json"
    write_json(path, data)
    return path


def _envelope(kind_data: dict[str, Any]) -> dict[str, Any]:
    import datetime

    from bench.fingerprint import fingerprint

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**kind_data, "date": now, "command": command_line(), "fingerprint": fingerprint()}


ResultsDir = Annotated[
    str | None,
    typer.Option(
        "--out",
        show_default=f"per user: {bench_results_dir()}",
        help=f"Folder for the result JSON (one file per run); '' to skip; {COMMITTED_RESULTS} to add to the "
        "repository's results on purpose.",
    ),
]


def _results_dir(out: str | None) -> Path | None:
    """The --out folder: the per-user one when not given; None for '' (as a Path, '' means the current folder)."""
    if out is None:
        return bench_results_dir()
    return Path(out) if out.strip() else None


def _wrote(path: Path | None, out: str | None) -> None:
    """Say where the result went, and for the per-user folder what reads it and how to write elsewhere."""
    if path is None:
        return
    err().print(f"wrote {path}", highlight=False, soft_wrap=True)
    if out is None:
        err().print(
            f"  (your results folder: `dip bench report` reads it; --out {COMMITTED_RESULTS} adds to the repository's)",
            highlight=False,
            soft_wrap=True,
        )


@bench_app.command("speed", context_settings=EXTRA_ARGS)
@user_errors
def bench_speed(
    ctx: typer.Context,
    sizes: Annotated[list[int] | None, typer.Option("--sizes", help="Image sides, e.g. --sizes 128 256.")] = None,
    backends: Annotated[list[BackendName] | None, typer.Option("--backend", "-b", help="Repeat for several.")] = None,
    devices: Annotated[list[Device] | None, typer.Option("--device", help="Repeat for several.")] = None,
    preset: Annotated[str, typer.Option(help="Preset whose network is timed.")] = "denoise",
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 2,
    blocks: Annotated[int, typer.Option(min=1, help="Timed blocks (median, min, max over them).")] = 5,
    per_block: Annotated[int, typer.Option(min=1, help="Steps per timed block.")] = 3,
    extras: Annotated[bool, typer.Option(help="Also time forward-only and the small cross-check net.")] = True,
    loop: Annotated[
        bool, typer.Option(help="Also time `dip run`'s loop around the step, without and with a reference.")
    ] = True,
    precision: PrecisionOpt = None,
    isolate: Annotated[
        bool, typer.Option(help="Each row in a process of its own (its own peak memory, no shared threads).")
    ] = True,
    out: ResultsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Time the optimisation step and `dip run`'s loop of every backend in one run: MLX/torch and loop/step ratios."""
    from bench.speed import run_speed
    from dip_core.problem.presets import PRESETS

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = _numbers(sizes, ctx.args, (64, 128, 256, 512))
    names = [b.value for b in backends] if backends else available_backends()
    if not names:
        raise UsageError("no backend is installed")

    def show(row: dict[str, Any]) -> None:
        err().print(
            f"{row['backend']:>5} {row['device']:>4} {row['precision']:>4} {row['size']:>5}² {row['kind']:>8} "
            f"{row['net']:>6}: "
            f"{row['ms_per_iter']:9.1f} ms/iter  {row['gflops_per_s']:7.1f} GFLOP/s  "
            f"{100 * row['roofline_fraction']:4.0f} % of matmul peak",
            highlight=False,
        )

    data = _envelope(
        run_speed(
            names, [d.value for d in devices] if devices else None, chosen, preset, warmup, blocks, per_block,
            extras, on_row=show, isolate=isolate, loop=loop, precision=precision.value if precision else None,
        )
    )  # fmt: skip
    path = _save_result(data, _results_dir(out))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    for r in data["ratios"]:
        err().print(f"MLX / torch at {r['size']}² ({r['device']}, {r['kind']}, {r['net']}): {r['mlx_over_torch']:.2f}")
    for r in data["loop_overhead"]:
        err().print(
            f"{r['kind']} / step, {r['backend']} at {r['size']}² ({r['device']}): {r['loop_over_step']:.3f}",
            highlight=False,
        )
    _wrote(path, out)


@bench_app.command("quality")
@user_errors
def bench_quality(
    profile: Annotated[
        str, typer.Option(help="quick: downscaled, fewer iterations; paper: full size and presets.")
    ] = "quick",
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with the paper's images (F16_GT.png, ...); without it, the built-in scene cases."),
    ] = None,
    backends: Annotated[list[BackendName] | None, typer.Option("--backend", "-b", help="Repeat for several.")] = None,
    device: DeviceOpt = Device.AUTO,
    cases: Annotated[list[str] | None, typer.Option("--case", help="Only these cases (repeat).")] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Runs per case and backend, seeds 0..N-1.")] = 1,
    precision: PrecisionOpt = None,
    out: ResultsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the paper's cases (or the built-in scene's) on each backend over seeds: PSNR mean ± sd, MLX - torch."""
    from bench.quality import BUILTIN_CASES, CASES, PROFILES, run_quality

    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if data is not None and not data.is_dir():
        raise UsageError(f"no image folder at {data}: give --data the folder of the paper's test images")
    known = {c.name for c in (*CASES, *BUILTIN_CASES)}
    if cases and not set(cases) <= known:
        raise UsageError(f"unknown case(s) {sorted(set(cases) - known)}; choose from {', '.join(sorted(known))}")
    paper = {c.name for c in CASES}
    if cases and data is None and set(cases) & paper:
        raise UsageError(f"{', '.join(sorted(set(cases) & paper))} need the paper's images: give --data")
    names = [b.value for b in backends] if backends else available_backends()

    def show(row: dict[str, Any]) -> None:
        err().print(f"{row['case']} seed {row['seed']}: {row['summary']}", highlight=False, soft_wrap=True)

    chosen = precision.value if precision else None
    result = _envelope(
        run_quality(names, device.value, profile, data, cases, on_row=show, precision=chosen, seeds=seeds)
    )
    path = _save_result(result, _results_dir(out))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    if seeds > 1:
        show_seed_statistics(result)
    _wrote(path, out)


def show_seed_statistics(result: dict[str, Any]) -> None:
    """Each case's mean ± sd per backend, and MLX - torch with its 95 % interval (a finding when it leaves out 0)."""
    for s in result["summary"]:
        sd = "" if s["std"] is None else f" ± {s['std']:.2f}"
        err().print(f"{s['case']:>20} {s['backend']:>5}: {s['mean']:.2f}{sd} dB over {s['n']} seeds", highlight=False)
    for d in result["differences"]:
        low, high = d["ci95"]
        verdict = "a finding: the interval leaves out 0" if d["finding"] else "no difference shown"
        err().print(
            f"{d['case']:>20} MLX - torch: {d['mlx_minus_torch']:+.2f} dB, 95 % interval [{low:+.2f}, {high:+.2f}] "
            f"({verdict})",
            highlight=False,
        )


@bench_app.command("report")
@user_errors
def bench_report(
    results: Annotated[
        list[Path] | None,
        typer.Argument(
            help=f"Result JSON files or folders of them ({COMMITTED_RESULTS}: the repository's).",
            show_default=f"per user: {bench_results_dir()}",
        ),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the chip table (chips.html, chips.md), report.md and the charts.",
            show_default=f"per user: {bench_report_dir()}",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="PAGE.html",
            help="Write the chip table (one row per machine x backend x device, plots inline) to this static page.",
        ),
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", metavar="PAGE.md", help="Write the chip table as Markdown here.")
    ] = None,
) -> None:
    """Merge results from any number of machines into the chip table (one row per machine x backend x device, as a
    static HTML page and Markdown), with report.md and PNG charts of the speed and quality results beside it; or
    only the chip table, to the pages given with --html / --markdown."""
    if not results:
        mine = bench_results_dir()
        if not any(mine.glob("*.json")):
            raise UsageError(
                f"no results in {mine} yet: run `dip bench all`, `dip bench speed` or `dip bench quality` first, "
                f"or name result files or folders ({COMMITTED_RESULTS}: the repository's)"
            )
        results = [mine]
    missing = [str(p) for p in results if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    detailed = html is None and markdown is None
    out_dir = folder or bench_report_dir()
    if detailed:  # the chip table beside report.md and its charts
        out_dir.mkdir(parents=True, exist_ok=True)
        html, markdown = out_dir / "chips.html", out_dir / "chips.md"
    _chip_pages(results, html, markdown)
    if not detailed:
        return
    from bench.report import ReportError, render

    try:
        report, charts, _ = render(results, out_dir)  # its problems are the ones just printed
    except ReportError:
        return  # only `dip bench all` results: the chip table holds everything
    for path in (report, *charts):
        out().print(f"wrote {path}", highlight=False, soft_wrap=True)


def _problems(lines: list[str]) -> None:
    """One `error:` line per file that could not be used (the others were)."""
    for line in lines:
        err().print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)


def _chip_pages(results: list[Path], html: Path | None, markdown: Path | None) -> None:
    """`dip bench report --html/--markdown`: every readable file into the chip table; exit 1 when none is."""
    from bench.chip_table import build, write_pages
    from bench.schema import load_folder, results_of_kind

    pages = [p for p in (html, markdown) if p is not None]
    if html is not None and markdown is not None and html.resolve() == markdown.resolve():
        raise UsageError(f"--html and --markdown name the same file {html}")
    for page in pages:
        if not page.parent.is_dir():
            raise UsageError(f"cannot write {page}: directory {page.parent} does not exist")
        if page.is_dir():
            raise UsageError(f"cannot write {page}: it is a directory")
    good, problems = load_folder(results)
    _problems(problems)
    if not good:
        err().print(
            f"[bold red]error:[/] no readable dip bench results in {', '.join(str(p) for p in results)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    table = build(good, problems, results_of_kind(results, "fast"))
    _problems(list(table.problems[len(problems) :]))  # the time-to-quality files that could not be read
    try:
        written = write_pages(table, html, markdown)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    for path in written:
        out().print(f"wrote {path}", highlight=False, soft_wrap=True)
