"""`dip run`: restore one image."""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dip_cli.app import Problems, check_outputs, command_line, err, out, user_errors
from dip_cli.options import with_run_options
from dip_cli.signals import run_signals
from dip_core.errors import UserError
from dip_core.fit.loop import StepInfo
from dip_core.problem.registry import Task, spec_of
from dip_core.problem.task_options import takes
from dip_core.run.options import RunOptions
from dip_core.system.version import dip_version

# The estimate is printed once the first steps after the first have taken this long (or 20 steps), and only
# for runs expected to take at least ESTIMATE_FROM_S.
ESTIMATE_AFTER_S = 1.0
ESTIMATE_FROM_S = 60.0


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[psnr]}"),
        TimeRemainingColumn(),
        console=err(),
        transient=False,
    )


@user_errors
@with_run_options()
def run(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    image: Annotated[Path, typer.Argument(help="The corrupted image (for sr: the low-resolution one).")],
    options: RunOptions,
    mask: Annotated[
        Path | None, typer.Option(help="inpaint/restore: mask image, white = known (grey is rounded at 50 %).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output image (default IMAGE_stem.TASK.png).")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Clean image: PSNR/SSIM, and the best iteration by PSNR.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of curves and images here.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from the checkpoint of an unfinished run with the same settings.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate", help="Time a few steps, print how long the run would take (and cheaper choices); no run."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Restore IMAGE with Deep Image Prior and write the result beside it."""
    from dip_core.backend import get_backend
    from dip_core.problem.degrade import parse_kernel
    from dip_core.problem.image import load_image, output_format
    from dip_core.run.prepare import as_image, prepare, resumed_threads
    from dip_core.run.tiled import prepare_tiled

    problems = Problems()
    target = output or image.with_name(f"{image.stem}.{task.value}.png")
    with problems.check():
        output_format(target)
    ckpt = target.with_name(f"{target.stem}.ckpt.npz")
    opts = replace(options, threads=resumed_threads(options, ckpt)) if resume and ckpt.is_file() else options
    partial = target.with_name(f"{target.stem}.partial{target.suffix}")
    outputs = [target] + [p for p in (report, plot) if p is not None]
    if spec_of(task).baseline:  # a bicubic upscale beside the result
        outputs.append(target.with_name(f"{target.stem}.bicubic{target.suffix}"))
        if opts.tile:
            outputs.append(partial.with_name(f"{partial.stem}.bicubic{partial.suffix}"))
    inputs = [p for p in (image, mask, reference) if p is not None]
    if opts.kernel and Path(opts.kernel).exists():
        inputs.append(Path(opts.kernel))
    if plot is not None and plot.suffix.lower() != ".png":
        problems.add(f"--plot writes a PNG: name it *.png, not {plot.name}")
    if opts.tile and (opts.checkpoint_every or opts.save_every or plot):
        problems.add(
            "--tile does not work with --checkpoint-every, --save-every or --plot (a tiled run keeps its finished "
            "tiles for --resume by itself)"
        )
    if resume and not ckpt.is_file():
        problems.add(f"no checkpoint to resume at {ckpt} (a run writes one with --checkpoint-every K)")
    if ckpt.exists() and not (resume or force or estimate):
        problems.add(f"an unfinished run left {ckpt}: go on with --resume, or start over with --force")
    if not estimate:
        with problems.check():  # a resumed run owns the outputs its first part wrote
            check_outputs(outputs + ([partial] if opts.tile else []), inputs, force or resume)
    img = None
    with problems.check():
        img = load_image(image)
    with problems.check():
        get_backend(opts.backend, opts.device, opts.precision, opts.threads)
    # Each file on its own, so that all are reported; not one the task does not use (that is the one problem).
    for path in (mask if takes(task, "mask") else None, reference):
        if path is not None:
            with problems.check():
                as_image(path)
    if opts.kernel is not None and takes(task, "kernel"):
        with problems.check():
            parse_kernel(opts.kernel)
    prepared: Any = None
    if img is not None:
        with problems.check():
            if opts.tile:
                prepared = prepare_tiled(task.value, img, opts.tile, opts.overlap, opts, mask=mask, reference=reference)
            else:
                prepared = prepare(task.value, img, opts, mask=mask, reference=reference)
            if resume and ckpt.is_file():
                prepared.check_resume(ckpt)
    problems.raise_any()
    for warning in prepared.warnings:
        err().print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if estimate:
        _estimate_only(prepared, mask)
        return
    if opts.save_every:
        err().print(f"the result so far is written to {target} every {opts.save_every} iterations", highlight=False)
    if force and not resume:
        ckpt.unlink(missing_ok=True)  # starting over: an older run's checkpoint is not this run's
    first = prepared.first if opts.tile else prepared
    planned = first.preset.iters
    progress = None if quiet else _progress()
    from dip_core.run.estimate import estimate_of

    bar = _Bar(progress, functools.partial(estimate_of, prepared))
    # The first Ctrl-C or SIGTERM stops the run; a later one never cuts short the writing of its result.
    with run_signals() as signals:
        with progress or contextlib.nullcontext(), _nothing_yet():
            on_step = bar.step if progress is not None else None
            if opts.tile:

                def on_tile(k: int, n: int) -> None:
                    bar.tile(task.value, k, n, planned)

                result = prepared.run(on_step=on_step, on_tile=on_tile, checkpoint=ckpt, resume=resume)
            else:
                bar.tile(task.value, 0, 1, planned)

                def save_so_far(i: int, so_far: Any) -> None:
                    _save_so_far(target, so_far)  # the end result is written below, with a fallback if it fails

                result = prepared.run(
                    checkpoint=ckpt if (opts.checkpoint_every or resume) else None, resume=resume, on_step=on_step,
                    on_save=save_so_far if opts.save_every else None,
                )  # fmt: skip
        rep = result.report
        rep["dip_version"] = dip_version()
        rep["command"] = command_line()
        unfinished_tiles = bool(opts.tile) and not rep["finished"]
        image_path = partial if unfinished_tiles else target
        rep["output"] = str(image_path)
        signals.hold()  # a Ctrl-C now waits until the outputs are on disk
        written, failed, lost = _write_outputs(result, image_path, report, plot, task)
        _summary(rep, written)
        for line in rep["warnings"]:
            if line not in prepared.warnings:
                err().print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
        ckpt_written = bool(opts.tile or opts.checkpoint_every or resume) and ckpt.is_file()
        if rep["interrupted"]:
            if unfinished_tiles:
                done = len(rep["tiles"])
                err().print(
                    f"interrupted: {done} of {rep['tiles_total']} tiles restored, the others are the input; "
                    f"this unfinished result is {rep['output']}",
                    highlight=False,
                )
            else:
                err().print(
                    f"interrupted after {rep['iters']} iterations: the result so far was written (unfinished)",
                    highlight=False,
                )
            if ckpt_written:
                err().print(
                    f"the checkpoint {ckpt} is kept: add --resume to the same command to go on", highlight=False
                )
        elif not lost:  # the run is complete and its result on disk: nothing is left to resume
            ckpt.unlink(missing_ok=True)
            if opts.tile:
                partial.unlink(missing_ok=True)
    if rep["interrupted"] or signals.signalled:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


@contextlib.contextmanager
def _nothing_yet() -> Iterator[None]:
    """Ctrl-C before the first step was done: nothing to write, and said so."""
    try:
        yield
    except KeyboardInterrupt:
        err().print("interrupted before the first step was done: nothing was written", highlight=False)
        raise typer.Exit(130) from None


def _write_outputs(
    result: Any, image_path: Path, report: Path | None, plot: Path | None, task: Task
) -> tuple[list[Path], bool, bool]:
    """Write every output, each on its own: one that cannot be written goes to a fallback folder (said so)
    rather than being lost, and the others are written all the same. Returns the files written, whether any
    write failed, and whether the result image is nowhere on disk."""
    from dip_core.problem.image import Image, save_image
    from dip_core.run.prepare import bicubic_baseline
    from dip_core.system.atomic import write_json

    rep = result.report
    jobs: list[tuple[Path, Callable[[Path], None]]] = [(image_path, lambda p: save_image(p, result.image))]
    if spec_of(task).baseline:  # a bicubic upscale beside the result
        img = result.image
        baseline = Image(bicubic_baseline(result.problem), img.mode, img.bit_depth, None, img.source_mode)
        bicubic = image_path.with_name(f"{image_path.stem}.bicubic{image_path.suffix}")
        jobs.append((bicubic, lambda p: save_image(p, baseline)))
    if report is not None:
        jobs.append((report, lambda p: write_json(p, rep)))
    if plot is not None:
        from dip_core.run.plot import plot_run

        pixels = result.image.pixels
        jobs.append((plot, lambda p: plot_run(p, rep, result.problem.corrupted, pixels, result.reference)))
    written: list[Path] = []
    failed = lost = False
    for k, (path, write) in enumerate(jobs):
        try:
            write(path)
            written.append(path)
            continue
        except (UserError, OSError) as exc:
            problem = str(exc) if isinstance(exc, UserError) else f"cannot write {path}: {exc.strerror or exc}"
        failed = True
        spare = rescue(path, write)
        where = f"wrote it to {spare} instead" if spare else "no fallback folder could be written either"
        err().print(f"[bold red]error:[/] {problem}; {where}", highlight=False, soft_wrap=True)
        if spare:
            written.append(spare)
            if k == 0:
                rep["output"] = str(spare)  # the report, written after, says where the result went
        elif k == 0:
            lost = True
    return written, failed, lost


def rescue(path: Path, write: Callable[[Path], None]) -> Path | None:
    """Write to the first writable fallback: the working folder, then the temporary folder."""
    import tempfile

    for folder in (Path.cwd(), Path(tempfile.gettempdir()) / "dip-rescued"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            spare = folder / path.name
            n = 1
            while spare.exists():
                spare = folder / f"{path.stem}.{n}{path.suffix}"
                n += 1
            write(spare)
            return spare
        except (UserError, OSError):
            continue
    return None


def _print_estimate(est: Any, console: Any) -> None:
    """The run's estimate; for a long run, half the iterations and how to time the other choices."""
    from dip_core.run.estimate import LONG_RUN_S, duration

    console.print(est.line(), highlight=False, soft_wrap=True)
    if est.seconds > LONG_RUN_S:
        half = est.halved()
        console.print(
            f"  a long run: --iters {half.iters} takes half as long ({duration(half.seconds)}); --estimate times "
            "the other cheaper choices (--net small, a downscaled image) on this machine",
            highlight=False,
            soft_wrap=True,
        )


def _estimate_only(prepared: Any, mask: Path | None) -> None:
    """`--estimate`: time the run and the paper's cheaper choices on sessions of their own; nothing is written."""
    from dip_core.run.estimate import alternatives, duration, measure

    with err().status("timing a few steps of the run..."):
        est = measure(prepared)
    out().print(est.line(), highlight=False, soft_wrap=True)
    with err().status("timing a few steps of each cheaper choice..."):
        alts = alternatives(prepared, est, mask=mask)
    out().print("cheaper, as the paper allows (timed on this machine):", highlight=False)
    for alt in alts:
        out().print(f"  {alt.change}: {duration(alt.estimate.seconds)} ({alt.note})", highlight=False, soft_wrap=True)


class _Bar:
    """The progress bar of a run: one bar, advanced through the tiles of a tiled run. Once the first steps are
    timed it prints the run's estimate above itself (and cheaper choices for a long run)."""

    def __init__(self, progress: Progress | None, estimate: Callable[[float], Any]) -> None:
        self.progress = progress
        self.estimate = estimate
        self.id: Any = None
        self.offset = 0
        self.started = time.perf_counter()
        self.first: tuple[float, int] | None = None  # when the first step was reported, and its number
        self.estimated = False

    def tile(self, name: str, k: int, n: int, iters: int) -> None:
        if self.progress is None:
            return
        if self.id is None:
            self.id = self.progress.add_task(name, total=iters * n, speed="", loss="-", psnr="")
        self.offset = k * iters
        if n > 1:
            self.progress.update(self.id, description=f"{name} tile {k + 1}/{n}", completed=self.offset)

    def step(self, info: StepInfo) -> None:
        now = time.perf_counter()
        done = self.offset + info.i
        rate = done / max(now - self.started, 1e-9)
        # The step's own output (from the noisy input z + noise); the result is chosen from cleaner ones.
        psnr_text = f"step PSNR {info.psnr:.2f} dB" if info.psnr is not None else f"fit {info.psnr_input:.1f} dB"
        self.progress.update(self.id, completed=done, speed=f"{rate:.1f} it/s", loss=f"{info.loss:.2e}", psnr=psnr_text)
        if self.estimated or self.offset:
            return
        if self.first is None:
            self.first = (now, info.i)  # after compilation; a resumed run starts past 1
        elif info.i > self.first[1] and (now - self.first[0] >= ESTIMATE_AFTER_S or info.i - self.first[1] >= 20):
            self.estimated = True
            est = self.estimate(1000 * (now - self.first[0]) / (info.i - self.first[1]))
            if est.seconds >= ESTIMATE_FROM_S:
                _print_estimate(est, self.progress.console)


def _save_so_far(path: Path, image: Any) -> None:
    """Write the result so far (--save-every); a failure is the loop's warning, not the run's end."""
    from dip_core.problem.image import save_image

    save_image(path, image)


def _summary(rep: dict[str, Any], written: list[Path]) -> None:
    from dip_core.run.summary import summary_line

    line = summary_line(rep)
    out().print(line, highlight=False)
    for path in written:
        out().print(f"  wrote {path}", highlight=False)


@contextlib.contextmanager
def handle_sigterm() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C: the best result so far is still written."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:  # a handler set outside Python (Ray's, in a Ray driver) reads None: the default stands in for it
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
