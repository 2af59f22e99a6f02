"""`dip run`: restore one image."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dip_cli.app import UsageError, check_outputs, err, out, user_errors
from dip_cli.options import with_run_options
from dip_core.fit import StepInfo
from dip_core.options import RunOptions
from dip_core.presets import Task


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
    mask: Annotated[Path | None, typer.Option(help="inpaint/restore: mask image, white = known.")] = None,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Restore IMAGE with Deep Image Prior and write the result beside it."""
    from dip_core.api import bicubic_baseline, resolve_preset, restore
    from dip_core.atomic import write_json
    from dip_core.image import Image, load_image, output_format, save_image

    opts = options
    target = output or image.with_name(f"{image.stem}.{task.value}.png")
    output_format(target)
    outputs = [target] + [p for p in (report, plot) if p is not None]
    baseline = target.with_name(f"{target.stem}.bicubic{target.suffix}") if task is Task.SR else None
    if baseline is not None:
        outputs.append(baseline)
    inputs = [p for p in (image, mask, reference) if p is not None]
    if opts.kernel and Path(opts.kernel).exists():
        inputs.append(Path(opts.kernel))
    if opts.tile and (opts.checkpoint_every or resume or opts.save_every or plot):
        raise UsageError("--tile does not work with --checkpoint-every, --resume, --save-every or --plot yet")
    ckpt = target.with_name(f"{target.stem}.ckpt.npz")
    if resume and not ckpt.is_file():
        raise UsageError(f"no checkpoint to resume at {ckpt} (a run writes one with --checkpoint-every K)")
    if ckpt.exists() and not (resume or force):
        raise UsageError(f"an unfinished run left {ckpt}: go on with --resume, or start over with --force")
    # A resumed run owns the outputs its first part wrote.
    check_outputs(outputs, inputs, force or resume)
    img = load_image(image)
    planned = resolve_preset(task.value, opts.preset, opts.factor, **opts.overrides()).iters
    progress = None if quiet else _progress()
    bar = _Bar(progress)
    with handle_sigterm(), progress or contextlib.nullcontext():
        on_step = bar.step if progress is not None else None
        if opts.tile:
            from dip_core.api import restore_tiled

            def on_tile(k: int, n: int) -> None:
                bar.tile(task.value, k, n, planned)

            result = restore_tiled(
                task.value, img, opts.tile, opts.overlap, opts, mask=mask, reference=reference, on_step=on_step,
                on_tile=on_tile,
            )  # fmt: skip
        else:
            bar.tile(task.value, 0, 1, planned)
            result = restore(
                task.value, img, opts, mask=mask, reference=reference,
                checkpoint=ckpt if (opts.checkpoint_every or resume) else None, resume=resume, on_step=on_step,
                save_to=target if opts.save_every else None,
            )  # fmt: skip
    save_image(target, result.image)
    written = [target]
    if baseline is not None:
        save_image(baseline, Image(bicubic_baseline(result.problem), img.mode, img.bit_depth, None, img.source_mode))
        written.append(baseline)
    rep = result.report
    rep["output"] = str(target)
    if report is not None:
        write_json(report, rep)
        written.append(report)
    if plot is not None:
        from dip_core.plot import plot_run

        plot_run(plot, rep, result.problem.corrupted, result.image.pixels, result.reference)
        written.append(plot)
    _summary(rep, written)
    if rep["interrupted"]:
        err().print(f"interrupted after {rep['iters']} iterations: the result so far was written")
        if ckpt.is_file():
            err().print(f"the checkpoint {ckpt} is kept: add --resume to the same command to go on")
        raise typer.Exit(130)
    if ckpt.is_file():
        ckpt.unlink()  # the run is complete: nothing is left to resume


class _Bar:
    """The progress bar of a run: one bar, advanced through the tiles of a tiled run."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.id: Any = None
        self.offset = 0
        self.started = time.perf_counter()

    def tile(self, name: str, k: int, n: int, iters: int) -> None:
        if self.progress is None:
            return
        if self.id is None:
            self.id = self.progress.add_task(name, total=iters * n, speed="", loss="-", psnr="")
        self.offset = k * iters
        if n > 1:
            self.progress.update(self.id, description=f"{name} tile {k + 1}/{n}", completed=self.offset)

    def step(self, info: StepInfo) -> None:
        done = self.offset + info.i
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        psnr_text = f"PSNR {info.psnr:.2f} dB" if info.psnr is not None else f"fit {info.psnr_input:.1f} dB"
        self.progress.update(self.id, completed=done, speed=f"{rate:.1f} it/s", loss=f"{info.loss:.2e}", psnr=psnr_text)


def _summary(rep: dict[str, Any], written: list[Path]) -> None:
    line = f"{rep['task']} on {rep['backend']} ({rep['device']}, {rep['precision']}): {rep['iters']} iterations"
    line += f", {rep['ms_per_iter']:.1f} ms/iter"
    if "tiles" in rep:
        line += f" over {len(rep['tiles'])} tiles of {rep['tile']} px (overlap {rep['overlap']})"
        if rep.get("psnr_result") is not None:
            line += f"; PSNR input {rep['psnr_input']:.2f} dB -> result {rep['psnr_result']:.2f} dB"
    elif rep.get("psnr") is not None:
        line += (
            f"; PSNR input {rep['psnr_input']:.2f} dB -> result {rep['psnr_result']:.2f} dB "
            f"(best {rep['best_psnr']:.2f} dB at {rep['best_iter']}), SSIM {rep['ssim']:.3f}"
        )
    else:
        line += f"; result from iteration {rep['result_iter']} ({rep['selection']})"
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
    finally:
        signal.signal(signal.SIGTERM, previous)
