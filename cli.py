"""`dip`: Deep Image Prior on MLX or PyTorch, from the command line."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from PIL import Image as PILImage
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from dip_core.backend import BackendName, BackendUnavailable, Device, DeviceUnavailable, available_backends, get_backend
from dip_core.config import NETS, load_config, min_size
from dip_core.errors import UserError
from dip_core.fit import StepInfo
from dip_core.inputs import InputKind
from dip_core.padding import PadMode
from dip_core.params import count_params
from dip_core.presets import Task


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown task, bad option value, ...) as one line and exit code 2, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            code = 130
        except typer.TyperException as exc:  # the command line's own errors (typer's click)
            code = getattr(exc, "exit_code", 2)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `dip` alone: the help
            else:
                message = " ".join(exc.format_message().split())
                _err().print(f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Deep Image Prior: restore one image by fitting a random network to it. MLX first, PyTorch beside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _out() -> Console:
    """Standard output (made per call, so that the terminal's width is read when printing)."""
    return Console()


def _err() -> Console:
    return Console(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a user error raised by `fn` into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _err().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help=f"Network: one of {', '.join(NETS)}, or a JSON file of SkipConfig fields.")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: Metal/CUDA/MPS when present, else the CPU.")]


@app.command()
@user_errors
def crosscheck(
    config: ConfigOpt = "default",
    size: Annotated[tuple[int, int], typer.Option(help="Input height and width.")] = (64, 64),
    steps: Annotated[int, typer.Option(min=0, max=10_000, help="Adam steps of the trajectory.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the shared numpy draw.")] = 0,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 0.01,
    floor_samples: Annotated[
        int, typer.Option(min=0, max=16, help="Perturbed reference runs that measure the fp32 noise floor.")
    ] = 3,
    device: DeviceOpt = Device.CPU,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Prove that MLX and PyTorch compute the same outputs, gradients and Adam trajectory from the same weights."""
    from dip_core.crosscheck import CrossCheckCase
    from dip_core.crosscheck import crosscheck as run_crosscheck

    cfg = load_config(config)
    case = CrossCheckCase(cfg, height=size[0], width=size[1], steps=steps, seed=seed, lr=lr)
    mlx_backend = get_backend(BackendName.MLX, device)
    torch_backend = get_backend(BackendName.TORCH, device)
    report = run_crosscheck(mlx_backend, torch_backend, case, floor_samples=floor_samples)
    data = report.to_json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_crosscheck(data)
    if data["verdict"] == "disagree":
        raise typer.Exit(1)


def _print_crosscheck(data: dict[str, Any]) -> None:
    a, b = data["backends"]
    h, w = data["size"]
    _out().print(
        f"[bold]{a}[/] ({data['devices'][0]}) vs [bold]{b}[/] ({data['devices'][1]}), {h}x{w}, "
        f"{data['steps']} Adam steps, lr {data['lr']}, seed {data['seed']}"
    )
    p = data["params"]
    _out().print(f"parameters: {a} {p[a]:,}, {b} {p[b]:,} (layout {p['layout']:,})")
    table = Table("check", "difference", "target", "fp32 noise floor", "met")
    for key, row in data["targets"].items():
        floor = f"{row['noise_floor']:.2e}" if row["noise_floor"] is not None else "-"
        table.add_row(key, f"{row['value']:.2e}", f"{row['target']:.0e}", floor, "yes" if row["met"] else "[red]no[/]")
    _out().print(table)
    _out().print(f"largest gradient difference: {data['grad_worst_param']}")
    if data["diverges_at"]:
        _out().print(f"forward differences first grow at: {data['diverges_at']}")
    verdict = data["verdict"]
    if verdict == "met":
        _out().print("[green]all targets met[/]")
    elif verdict == "noise":
        _out().print(
            "[yellow]targets not all met, but every difference is within 2x the fp32 noise floor:[/] "
            "the backends agree as closely as float32 allows for this network and size"
        )
    elif verdict == "above-noise":
        _out().print(
            f"[yellow]differences reach {data['excess']:.1f}x the larger of target and fp32 noise floor:[/] "
            "rounding amplified by ill-conditioned layers (see where differences first grow); "
            "a bug lands far higher"
        )
    else:
        _out().print(f"[red]the backends disagree: {data['excess']:.0f}x beyond target and fp32 noise floor[/]")


class Keep(str, Enum):
    BEST = "best"
    LAST = "last"


class Stop(str, Enum):
    FIXED = "fixed"
    AUTO = "auto"


BackendOpt = Annotated[BackendName, typer.Option("--backend", "-b", help="Framework to run on.")]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_outputs(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    """Refuse to overwrite an input, an existing file without --force, or write into a missing folder."""
    for out in outputs:
        for inp in inputs:
            if _same_file(out, inp):
                raise UsageError(f"refusing to overwrite the input {inp}: choose another --out")
        if not out.parent.is_dir():
            raise UsageError(f"cannot write {out}: directory {out.parent} does not exist")
        if out.is_dir():
            raise UsageError(f"cannot write {out}: it is a directory")
        if out.exists() and not force:
            raise UsageError(f"{out} exists; add --force to overwrite it")
    if len({o.resolve() for o in outputs}) != len(outputs):
        raise UsageError("two outputs would be written to the same file")


class UsageError(UserError):
    """A bad combination of options or paths."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[psnr]}"),
        TimeRemainingColumn(),
        console=_err(),
        transient=False,
    )


@app.command()
@user_errors
def run(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    image: Annotated[Path, typer.Argument(help="The corrupted image (for sr: the low-resolution one).")],
    backend: BackendOpt = BackendName.MLX,
    device: DeviceOpt = Device.AUTO,
    mask: Annotated[Path | None, typer.Option(help="inpaint/restore: mask image, white = known.")] = None,
    mask_color: Annotated[
        str | None, typer.Option(help="inpaint: the overlay's pure colour (white, #ff0000, 255,0,0) is the mask.")
    ] = None,
    drop: Annotated[
        float | None, typer.Option(help="restore: drop this fraction of the pixels of a clean IMAGE first.")
    ] = None,
    factor: Annotated[int | None, typer.Option(help="sr: upscaling factor, 2, 4 or 8.")] = None,
    kernel: Annotated[
        str | None, typer.Option(help="deblur: gaussian:SIGMA, box:SIZE, motion:LENGTH,ANGLE or a kernel image.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Named preset (see `dip presets`); default: the task's.")] = None,
    iters: Annotated[int | None, typer.Option(help="Iterations (preset's by default).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    reg_noise: Annotated[float | None, typer.Option(help="Std of the noise added to z at every step.")] = None,
    ema: Annotated[float | None, typer.Option(help="EMA weight of outputs in [0, 1); 0 turns it off.")] = None,
    backtrack: Annotated[bool | None, typer.Option("--backtrack/--no-backtrack", help="Roll back on collapse.")] = None,
    net: Annotated[str | None, typer.Option(help=f"Network: {', '.join(NETS)} or a JSON file.")] = None,
    input_kind: Annotated[InputKind | None, typer.Option("--input", help="Network input z.")] = None,
    input_channels: Annotated[int | None, typer.Option(help="Channels of z.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, z and the input noise.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output image (default IMAGE_stem.TASK.png).")] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Clean image: PSNR/SSIM, and the best iteration by PSNR.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of curves and images here.")] = None,
    save_every: Annotated[int, typer.Option(min=0, help="Also write the result so far every K iterations.")] = 0,
    keep: Annotated[
        Keep, typer.Option(help="best: by PSNR with --reference, by output variance without; last.")
    ] = Keep.BEST,
    stop: Annotated[
        Stop | None,
        typer.Option(
            help="auto: stop when the output variance (ES-WMV) has had no new minimum for --patience iterations; "
            "default: auto for denoise, jpeg, restore and sr unless --iters is given, else fixed."
        ),
    ] = None,
    window: Annotated[int, typer.Option(min=2, help="ES-WMV window (outputs).")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="ES-WMV patience (iterations).")] = 1000,
    noise_sigma: Annotated[
        float | None,
        typer.Option(
            help="denoise: the noise's standard deviation (0-255) if known, else estimated from the image; "
            "the automatic choice never keeps an output whose residual is under half its power."
        ),
    ] = None,
    pad: Annotated[
        PadMode, typer.Option(help="reflect: pad to a multiple of 2^depth and crop back; none: only tiny images.")
    ] = PadMode.REFLECT,
    tile: Annotated[
        int, typer.Option(min=0, help="Restore in overlapping tiles of this many input pixels; 0: whole image.")
    ] = 0,
    overlap: Annotated[int, typer.Option(min=0, help="Overlap of neighbouring tiles (pixels), blended.")] = 32,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="Write a checkpoint (OUT_stem.ckpt.npz) every K iterations; 0: none.")
    ] = 0,
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

    out = out or image.with_name(f"{image.stem}.{task.value}.png")
    output_format(out)
    outputs = [out] + [p for p in (report, plot) if p is not None]
    baseline = out.with_name(f"{out.stem}.bicubic{out.suffix}") if task is Task.SR else None
    if baseline is not None:
        outputs.append(baseline)
    inputs = [p for p in (image, mask, reference) if p is not None]
    if kernel and Path(kernel).exists():
        inputs.append(Path(kernel))
    if tile and (checkpoint_every or resume or save_every or plot):
        raise UsageError("--tile does not work with --checkpoint-every, --resume, --save-every or --plot yet")
    ckpt = out.with_name(f"{out.stem}.ckpt.npz")
    if resume and not ckpt.is_file():
        raise UsageError(f"no checkpoint to resume at {ckpt} (a run writes one with --checkpoint-every K)")
    if ckpt.exists() and not (resume or force):
        raise UsageError(f"an unfinished run left {ckpt}: go on with --resume, or start over with --force")
    # A resumed run owns the outputs its first part wrote.
    check_outputs(outputs, inputs, force or resume)
    img = load_image(image)
    overrides = {
        "iters": iters,
        "lr": lr,
        "reg_noise_std": reg_noise,
        "exp_weight": ema,
        "backtrack": backtrack,
        "net": net,
        "input": input_kind,
        "input_channels": input_channels,
    }
    progress = None if quiet else _progress()
    bar = _Bar(progress)
    with _handle_sigterm(), progress or contextlib.nullcontext():
        common: dict[str, Any] = {
            "backend": backend,
            "device": device,
            "mask": mask,
            "mask_color": mask_color,
            "factor": factor,
            "kernel": kernel,
            "drop": drop,
            "reference": reference,
            "seed": seed,
            "preset": preset,
            "keep": keep.value,
            "stop": None if stop is None else stop.value,
            "window": window,
            "patience": patience,
            "noise_sigma": noise_sigma,
            "pad": pad.value,
            "on_step": bar.step if progress is not None else None,
            **overrides,
        }
        planned = resolve_preset(task.value, preset, factor, **overrides).iters
        if tile:
            from dip_core.api import restore_tiled

            def on_tile(k: int, n: int) -> None:
                bar.tile(task.value, k, n, planned)

            result = restore_tiled(task.value, img, tile, overlap, on_tile=on_tile, **common)
        else:
            bar.tile(task.value, 0, 1, planned)
            result = restore(
                task.value,
                img,
                checkpoint=ckpt if (checkpoint_every or resume) else None,
                checkpoint_every=checkpoint_every,
                resume=resume,
                save_every=save_every,
                save_to=out if save_every else None,
                **common,
            )
    save_image(out, result.image)
    written = [out]
    if baseline is not None:
        save_image(baseline, Image(bicubic_baseline(result.problem), img.mode, img.bit_depth, None, img.source_mode))
        written.append(baseline)
    rep = result.report
    rep["output"] = str(out)
    if report is not None:
        write_json(report, rep)
        written.append(report)
    if plot is not None:
        from dip_core.plot import plot_run

        plot_run(plot, rep, result.problem.corrupted, result.image.pixels, result.reference)
        written.append(plot)
    _summary(rep, written)
    if rep["interrupted"]:
        _err().print(f"interrupted after {rep['iters']} iterations: the result so far was written")
        if ckpt.is_file():
            _err().print(f"the checkpoint {ckpt} is kept: add --resume to the same command to go on")
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
    line = f"{rep['task']} on {rep['backend']} ({rep['device']}): {rep['iters']} iterations"
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
    _out().print(line, highlight=False)
    for path in written:
        _out().print(f"  wrote {path}", highlight=False)


@contextlib.contextmanager
def _handle_sigterm() -> Iterator[None]:
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


@app.command()
@user_errors
def presets() -> None:
    """List the paper's per-task settings (every value can be overridden on `dip run`)."""
    from dip_core.presets import DEFAULT_PRESET, PRESETS

    table = Table("preset", "task", "net", "input", "iters", "lr", "reg-noise", "EMA", "backtrack")
    defaults = set(DEFAULT_PRESET.values())
    for name, p in PRESETS.items():
        label = f"{name} *" if name in defaults else name
        table.add_row(
            label,
            p.task.value,
            p.net,
            f"{p.input.value} {p.input_channels}",
            str(p.iters),
            f"{p.lr:g}",
            f"{p.reg_noise_std:.3g}",
            f"{p.exp_weight:g}" if p.exp_weight else "-",
            "yes" if p.backtrack else "-",
        )
    _out().print(table)
    _out().print("* the task's default (sr: the one of --factor)")
    for name, p in PRESETS.items():
        _out().print(f"  {name}: {p.note}", highlight=False)


@app.command()
@user_errors
def degrade(
    task: Annotated[Task, typer.Argument(help="Which corruption to simulate.")],
    clean: Annotated[Path, typer.Argument(help="A clean image.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the corrupted image (and mask).")],
    sigma: Annotated[float, typer.Option(help="denoise: noise std on the 0-255 scale; deblur: added noise.")] = 25.0,
    drop: Annotated[float, typer.Option(help="restore: fraction of pixels dropped.")] = 0.5,
    factor: Annotated[int, typer.Option(help="sr: downscaling factor, 2, 4 or 8.")] = 4,
    kernel: Annotated[str, typer.Option(help="deblur: blur kernel spec or image.")] = "gaussian:2",
    quality: Annotated[int, typer.Option(help="jpeg: JPEG quality 1-95.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the noise / dropped pixels / text.")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing files.")] = False,
) -> None:
    """Corrupt a clean image, to run experiments with a known ground truth."""
    from dip_core import degrade as dg
    from dip_core.image import Image, load_image, save_image
    from dip_core.metrics import psnr

    if not out.is_dir():
        raise UsageError(f"--out must be an existing folder: {out}")
    img = load_image(clean)
    x, stem = img.pixels, clean.stem
    files: dict[Path, Image] = {}
    if task is Task.DENOISE:
        files[out / f"{stem}_noisy{sigma:g}.png"] = img.with_pixels(dg.add_noise(x, sigma, seed))
    elif task is Task.JPEG:
        files[out / f"{stem}_q{quality}.jpg"] = img.with_pixels(dg.jpeg_compress(x, quality))
    elif task is Task.INPAINT:
        mask = dg.text_mask(img.height, img.width, seed)
        files[out / f"{stem}_text.png"] = img.with_pixels(x * mask + (1 - mask))
        files[out / f"{stem}_text_mask.png"] = Image(mask, "L")
    elif task is Task.RESTORE:
        mask = dg.drop_mask(img.height, img.width, drop, seed)
        name = f"{stem}_drop{round(drop * 100)}"
        files[out / f"{name}.png"] = img.with_pixels(x * mask)
        files[out / f"{name}_mask.png"] = Image(mask, "L")
    elif task is Task.SR:
        dg.check_factor(factor)
        h, w = img.height - img.height % factor, img.width - img.width % factor
        hr = img if (h, w) == (img.height, img.width) else _crop(img, h, w)
        if hr is not img:
            files[out / f"{stem}_gt.png"] = hr
        lr = dg.resize(hr.pixels, h // factor, w // factor, PILImage.Resampling.LANCZOS)
        files[out / f"{stem}_lr{factor}.png"] = Image(lr, img.mode, img.bit_depth, None, img.source_mode)
    else:
        blurred = dg.blur(x, dg.parse_kernel(kernel))
        if sigma:
            blurred = dg.add_noise(blurred, sigma, seed)
        files[out / f"{stem}_blur.png"] = img.with_pixels(blurred)
    check_outputs(list(files), [clean], force)
    for path, image in files.items():
        save_image(path, image)
        same = image.pixels.shape == x.shape and "mask" not in path.stem
        note = f"  (PSNR {psnr(image.pixels, x):.2f} dB against the clean image)" if same else ""
        _out().print(f"wrote {path}{note}", highlight=False)


def _crop(img: Any, height: int, width: int) -> Any:
    from dip_core.image import Image

    alpha = None if img.alpha is None else img.alpha[:height, :width]
    return Image(img.pixels[:height, :width], img.mode, img.bit_depth, alpha, img.source_mode, img.path)


@app.command()
@user_errors
def batch(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of corrupted images (masks: STEM_mask.png beside them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results and reports (created).")],
    backend: BackendOpt = BackendName.MLX,
    device: DeviceOpt = Device.AUTO,
    factor: Annotated[int | None, typer.Option(help="sr: upscaling factor, 2, 4 or 8.")] = None,
    kernel: Annotated[str | None, typer.Option(help="deblur: blur kernel spec or image.")] = None,
    drop: Annotated[float | None, typer.Option(help="restore: drop this fraction of clean images' pixels.")] = None,
    preset: Annotated[str | None, typer.Option(help="Named preset (see `dip presets`).")] = None,
    iters: Annotated[int | None, typer.Option(help="Iterations (preset's by default).")] = None,
    net: Annotated[str | None, typer.Option(help="Network name or JSON file.")] = None,
    input_channels: Annotated[int | None, typer.Option(help="Channels of z.")] = None,
    references: Annotated[Path | None, typer.Option(help="Folder of clean images with the same stems.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for every image.")] = 0,
) -> None:
    """Restore every image of a folder; resumable (finished outputs are skipped), a bad file does not stop it."""
    from dip_core.api import restore
    from dip_core.atomic import write_json
    from dip_core.image import IMAGE_SUFFIXES, load_image, save_image

    if not input_dir.is_dir():
        raise UsageError(f"{input_dir} is not a folder")
    if references is not None and not references.is_dir():
        raise UsageError(f"--references {references} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    images = sorted(
        p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")
    )
    if not images:
        raise UsageError(f"no images in {input_dir}")
    overrides = {"iters": iters, "net": net, "input_channels": input_channels}
    rows: list[dict[str, Any]] = []
    for path in images:
        target = out / f"{path.stem}.{task.value}.png"
        row: dict[str, Any] = {"image": path.name, "output": target.name}
        if target.exists():
            rows.append({**row, "status": "skipped (done)"})
            continue
        try:
            mask = _sibling(path, "_mask")
            ref = _sibling(references / path.name, "") if references is not None else None
            _out().print(f"[bold]{path.name}[/]", highlight=False)
            with _handle_sigterm():
                result = restore(
                    task.value,
                    load_image(path),
                    backend=backend,
                    device=device,
                    mask=mask,
                    factor=factor,
                    kernel=kernel,
                    drop=drop,
                    reference=ref,
                    seed=seed,
                    preset=preset,
                    **overrides,
                )
            if result.report["interrupted"]:
                raise KeyboardInterrupt
            save_image(target, result.image)
            write_json(target.with_suffix(".json"), result.report)
            rep = result.report
            rows.append(
                {
                    **row,
                    "status": "done",
                    "iters": rep["iters"],
                    "seconds": rep["seconds"],
                    "psnr_input": rep.get("psnr_input"),
                    "psnr": rep.get("psnr_result"),
                }
            )
        except UserError as exc:
            _err().print(f"[red]skipped {path.name}:[/] {exc}", highlight=False)
            rows.append({**row, "status": f"error: {exc}"})
        except KeyboardInterrupt:
            rows.append({**row, "status": "interrupted"})
            _batch_summary(rows, out)
            raise typer.Exit(130) from None
    _batch_summary(rows, out)
    if all(r["status"].startswith("error") for r in rows):
        raise typer.Exit(1)


def _sibling(path: Path, suffix: str) -> Path | None:
    """PATH's sibling STEM{suffix}.EXT with an image extension, if any."""
    from dip_core.image import IMAGE_SUFFIXES

    for ext in IMAGE_SUFFIXES:
        candidate = path.with_name(f"{path.stem}{suffix}{ext}")
        if candidate.exists():
            return candidate
    return None


def _batch_summary(rows: list[dict[str, Any]], out: Path) -> None:
    from dip_core.atomic import write_json

    table = Table("image", "status", "iters", "seconds", "PSNR input", "PSNR result")
    formats = {"iters": "{}", "seconds": "{:.1f}", "psnr_input": "{:.2f}", "psnr": "{:.2f}"}
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "-" for k, fmt in formats.items()]
        table.add_row(r["image"], r["status"], *cells)
    _out().print(table)
    write_json(out / "summary.json", rows)
    _out().print(f"wrote {out / 'summary.json'}", highlight=False)


@app.command()
@user_errors
def example(
    out: Annotated[Path, typer.Argument(help="Where to write the scene (PNG).")],
    size: Annotated[tuple[int, int], typer.Option(help="Height and width.")] = (96, 96),
    grey: Annotated[bool, typer.Option(help="One channel instead of three.")] = False,
    seed: Annotated[int, typer.Option(help="Where the discs go.")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a synthetic clean test scene (smooth shading, sharp discs) to try every task on."""
    from dip_core.examples import synthetic_scene
    from dip_core.image import from_array, save_image

    if min(size) < 1 or max(size) > 8192:
        raise UsageError(f"size must be between 1 and 8192 pixels per side, got {size[0]}x{size[1]}")
    check_outputs([out], [], force)
    save_image(out, from_array(synthetic_scene(size[0], size[1], 1 if grey else 3, seed)))
    _out().print(f"wrote {out}", highlight=False)


@app.command()
@user_errors
def nets() -> None:
    """List the named networks with their parameter counts and smallest input side."""
    table = Table("name", "scales", "down / up / skip channels", "input", "parameters", "min side")
    for name, cfg in NETS.items():
        chans = " / ".join(_channels(c) for c in (cfg.channels_down, cfg.channels_up, cfg.channels_skip))
        table.add_row(name, str(cfg.depth), chans, str(cfg.in_channels), f"{count_params(cfg):,}", str(min_size(cfg)))
    _out().print(table)


def _channels(per_scale: tuple[int, ...]) -> str:
    """(128, 128, 128) -> '128x3'; mixed values are listed."""
    if len(set(per_scale)) == 1:
        return f"{per_scale[0]}x{len(per_scale)}"
    return ",".join(str(c) for c in per_scale)


@app.command()
@user_errors
def backends() -> None:
    """Show which backends are installed and which device each would use."""
    from dip_core.backend import install_hint

    table = Table("backend", "status", "device (auto)", "note")
    found = available_backends()
    for name in BackendName:
        if name.value not in found:
            table.add_row(name.value, "[red]missing[/]", "-", install_hint(name))
            continue
        try:
            b = get_backend(name, Device.AUTO)
        except (BackendUnavailable, DeviceUnavailable) as exc:
            table.add_row(name.value, "[red]unusable[/]", "-", str(exc))
            continue
        note = ""
        if name is BackendName.MLX:
            from dip_mlx import BLAS
            from dip_mlx.cpu_kernels import status

            note = f"BLAS: {BLAS.name}; CPU kernels: {status()}"
        table.add_row(name.value, "[green]ok[/]", b.device, note)
    _out().print(table)


bench_app = typer.Typer(help="Benchmarks: speed and quality per backend and machine, and the merged report.")
app.add_typer(bench_app, name="bench")

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
    import re

    from bench.fingerprint import machine_label
    from dip_core.atomic import write_json

    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", machine_label(data["fingerprint"])).strip("-").lower()[:40]
    stamp = data["date"].replace(":", "").replace("-", "")[:15]
    path = out_dir / f"{stamp}-{data['kind']}-{slug}.json"
    write_json(path, data)
    return path


def _envelope(kind_data: dict[str, Any]) -> dict[str, Any]:
    import datetime

    from bench.fingerprint import fingerprint

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**kind_data, "date": now, "command": " ".join(["dip", *sys.argv[1:]]), "fingerprint": fingerprint()}


ResultsDir = Annotated[str, typer.Option("--out", help="Folder for the result JSON (one file per run); '' to skip.")]


def _results_dir(out: str) -> Path | None:
    """The --out folder; None for '' (as a Path, '' would mean the current folder)."""
    return Path(out) if out.strip() else None


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
    isolate: Annotated[
        bool, typer.Option(help="Each row in a process of its own (its own peak memory, no shared threads).")
    ] = True,
    out: ResultsDir = "bench/results",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Time the full optimisation step of every backend in one run, with the MLX/torch ratio."""
    from bench.speed import run_speed
    from dip_core.presets import PRESETS

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = _numbers(sizes, ctx.args, (64, 128, 256, 512))
    names = [b.value for b in backends] if backends else available_backends()
    if not names:
        raise UsageError("no backend is installed")

    def show(row: dict[str, Any]) -> None:
        _err().print(
            f"{row['backend']:>5} {row['device']:>4} {row['size']:>5}² {row['kind']:>7} {row['net']:>6}: "
            f"{row['ms_per_iter']:9.1f} ms/iter  {row['gflops_per_s']:7.1f} GFLOP/s  "
            f"{100 * row['roofline_fraction']:4.0f} % of matmul peak",
            highlight=False,
        )

    data = _envelope(
        run_speed(
            names, [d.value for d in devices] if devices else None, chosen, preset, warmup, blocks, per_block,
            extras, on_row=show, isolate=isolate,
        )
    )  # fmt: skip
    path = _save_result(data, _results_dir(out))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    for r in data["ratios"]:
        _err().print(f"MLX / torch at {r['size']}² ({r['device']}, {r['kind']}, {r['net']}): {r['mlx_over_torch']:.2f}")
    if path:
        _err().print(f"wrote {path}", highlight=False)


@bench_app.command("quality")
@user_errors
def bench_quality(
    profile: Annotated[
        str, typer.Option(help="quick: downscaled, fewer iterations; paper: full size and presets.")
    ] = "quick",
    data: Annotated[Path | None, typer.Option(help="Folder with the paper's images (F16_GT.png, ...).")] = None,
    backends: Annotated[list[BackendName] | None, typer.Option("--backend", "-b", help="Repeat for several.")] = None,
    device: DeviceOpt = Device.AUTO,
    cases: Annotated[list[str] | None, typer.Option("--case", help="Only these cases (repeat).")] = None,
    out: ResultsDir = "bench/results",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the paper's cases on each backend: final, EMA and best PSNR beside the published figures."""
    from bench.quality import CASES, DEFAULT_DATA, PROFILES, run_quality

    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    data = data or DEFAULT_DATA
    if not data.is_dir():
        raise UsageError(f"no image folder at {data}: give --data with the paper's test images")
    known = {c.name for c in CASES}
    if cases and not set(cases) <= known:
        raise UsageError(f"unknown case(s) {sorted(set(cases) - known)}; choose from {', '.join(sorted(known))}")
    names = [b.value for b in backends] if backends else available_backends()

    def show(row: dict[str, Any]) -> None:
        result = f"{row['psnr_result']:.2f} dB (input {row['psnr_input']:.2f})" if row.get("psnr_result") else "visual"
        _err().print(f"{row['case']:>20} {row['backend']:>5}: {result}, {row['seconds']:.0f} s", highlight=False)

    result = _envelope(run_quality(names, device.value, profile, data, cases, on_row=show))
    path = _save_result(result, _results_dir(out))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    if path:
        _err().print(f"wrote {path}", highlight=False)


@bench_app.command("report")
@user_errors
def bench_report(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md and the charts.")] = Path("bench/report"),
) -> None:
    """Merge results from any number of machines into a Markdown table and PNG charts."""
    from bench.report import render

    report, charts = render(results, out)
    for path in (report, *charts):
        _out().print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def doctor() -> None:
    """Backends, devices, the BLAS in use, measured matmul speed, and what to install to go faster."""
    from bench.fingerprint import fingerprint
    from bench.speed import matmul_gflops
    from dip_core.backend import install_hint

    fp = fingerprint()
    _out().print(
        f"{fp['cpu']} ({fp['cores']} cores), {fp['memory_gib']} GiB, {fp['os']}, Python {fp['python']}"
        + (f", GPU: {fp['gpu']}" if fp["gpu"] else ""),
        highlight=False,
    )
    _out().print(f"memory allocator: {fp['allocator']}", highlight=False)
    table = Table("backend", "version", "device", "BLAS", "matmul 2048² fp32")
    advice = []
    for name in BackendName:
        if name.value not in available_backends():
            table.add_row(name.value, "-", "-", "-", "not installed")
            advice.append(f"{name.value}: {install_hint(name)}")
            continue
        devices = ["cpu"]
        try:
            auto = get_backend(name, Device.AUTO).device
            if auto != "cpu":
                devices.append("gpu")
        except UserError:
            pass
        for device in devices:
            resolved = get_backend(name, device).device
            gflops = matmul_gflops(name.value, resolved)
            blas = fp["blas"].get(name.value) if device == "cpu" else "-"
            table.add_row(name.value, fp[name.value] or "?", resolved, str(blas), f"{gflops:,.0f} GFLOP/s")
    _out().print(table)
    from dip_mlx.blas import load_blas

    if "mlx" in available_backends():
        info = load_blas()
        if info.path is None and sys.platform.startswith("linux"):
            advice.append(f"mlx: {info.note}")
        if sys.platform.startswith("linux"):
            _out().print(f"mlx CPU kernels: {fp['mlx_cpu_kernels']}", highlight=False)
            if not fp["mlx_cpu_kernels"].startswith(("on", "off")):
                advice.append("mlx: for ~2x faster MLX on the CPU build its kernels: python -m dip_mlx.build_kernels")
    for line in advice or ["nothing to add: every backend is installed and uses a fast BLAS"]:
        _out().print(f"- {line}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
