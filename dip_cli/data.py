"""`dip degrade` and `dip example`: corrupted and clean images to try every task on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dip_cli.app import UsageError, check_outputs, out, user_errors
from dip_core.problem.registry import SPECS, Task, spec_of
from dip_core.problem.simulate import Corruption

# Noise std (0-255 scale) that `dip degrade` adds to each task's corrupted image unless --sigma is given: the
# registry's `degrade_sigma` (denoise: the paper's 25; deblur: 2). The other tasks' corruption is the one they are
# named after: no noise unless asked.
_NOISE_HELP = ", ".join(f"{s.task.value} {s.degrade_sigma:g}" for s in SPECS if s.degrade_sigma)
_NOISE_HELP += ", none for the other tasks"
_DEFAULTS = Corruption()


@user_errors
def degrade(
    task: Annotated[Task, typer.Argument(help="Which corruption to simulate.")],
    clean: Annotated[Path, typer.Argument(help="A clean image.")],
    folder: Annotated[Path, typer.Option("--out", "-o", help="Folder for the corrupted image (and mask).")],
    sigma: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            show_default=_NOISE_HELP,
            help="Std of the Gaussian noise added to the corrupted image, on the 0-255 scale (0: none).",
        ),
    ] = None,
    drop: Annotated[float, typer.Option(help="restore: fraction of pixels dropped.")] = _DEFAULTS.drop,
    factor: Annotated[int, typer.Option(help="sr: downscaling factor, 2, 4 or 8.")] = _DEFAULTS.factor,
    kernel: Annotated[str, typer.Option(help="deblur: blur kernel spec or image.")] = _DEFAULTS.kernel,
    quality: Annotated[int, typer.Option(help="jpeg: JPEG quality 1-95.")] = _DEFAULTS.quality,
    peak: Annotated[float, typer.Option(help="poisson: photons of a white pixel (lower: noisier).")] = _DEFAULTS.peak,
    seed: Annotated[int, typer.Option(help="Seed of the noise / dropped pixels / text.")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing files.")] = False,
) -> None:
    """Corrupt a clean image, to run experiments with a known ground truth."""
    from dip_core.problem.image import load_image, save_image
    from dip_core.problem.metrics import psnr

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out must be a folder: {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)  # as `dip batch --out` does
    except OSError as exc:
        raise UsageError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    img = load_image(clean)
    x, stem = img.pixels, clean.stem
    spec = spec_of(task)
    noise = spec.degrade_sigma if sigma is None else sigma
    corruption = Corruption(noise, drop, factor, kernel, quality, peak, seed)
    files = {folder / f"{stem}{suffix}": image for suffix, image in spec.simulate(img, corruption).items()}
    check_outputs(list(files), [clean], force)
    for target, image in files.items():
        save_image(target, image)
        same = image.pixels.shape == x.shape and "mask" not in target.stem
        note = f"  (PSNR {psnr(image.pixels, x):.2f} dB against the clean image)" if same else ""
        out().print(f"wrote {target}{note}", highlight=False)
    if noise:
        why = f": {task.value}'s default, --sigma to change" if sigma is None else ""
        out().print(f"added noise of std {noise:g} (0-255 scale, seed {seed}){why}", highlight=False, soft_wrap=True)


@user_errors
def example(
    path: Annotated[Path, typer.Argument(help="Where to write the scene (PNG).", metavar="OUT")],
    size: Annotated[tuple[int, int], typer.Option(help="Height and width.")] = (96, 96),
    grey: Annotated[bool, typer.Option(help="One channel instead of three.")] = False,
    seed: Annotated[int, typer.Option(help="Where the discs go.")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a synthetic clean test scene (smooth shading, sharp discs) to try every task on."""
    from dip_core.problem.examples import synthetic_scene
    from dip_core.problem.image import from_array, save_image

    if min(size) < 1 or max(size) > 8192:
        raise UsageError(f"size must be between 1 and 8192 pixels per side, got {size[0]}x{size[1]}")
    check_outputs([path], [], force)
    save_image(path, from_array(synthetic_scene(size[0], size[1], 1 if grey else 3, seed)))
    out().print(f"wrote {path}", highlight=False)
