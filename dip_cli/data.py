"""`dip degrade` and `dip example`: corrupted and clean images to try every task on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image as PILImage

from dip_cli.app import UsageError, check_outputs, out, user_errors
from dip_core.presets import Task

# Noise std (0-255 scale) that `dip degrade` adds to each task's corrupted image unless --sigma is given.
# denoise: the paper's sigma = 25. deblur: a little, sigma = 2, as in the user guide's deblurring example (blur
# gaussian:1.5 + noise 2): a blurred photograph carries some noise, and it is what makes plain deconvolution
# fail and a prior matter. The other tasks' corruption is the one they are named after: no noise unless asked.
NOISE_DEFAULTS: dict[Task, float] = {Task.DENOISE: 25.0, Task.DEBLUR: 2.0}
_NOISE_HELP = ", ".join(f"{t.value} {s:g}" for t, s in NOISE_DEFAULTS.items()) + ", none for the other tasks"


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

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out must be a folder: {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)  # as `dip batch --out` does
    except OSError as exc:
        raise UsageError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    img = load_image(clean)
    x, stem = img.pixels, clean.stem
    noise = NOISE_DEFAULTS.get(task, 0.0) if sigma is None else sigma
    # Noise on top of another corruption draws from a stream of its own, apart from the mask's draws.
    stream = seed if task in (Task.DENOISE, Task.DEBLUR) else (seed, 1)

    def noisy(pixels: Any) -> Any:
        return dg.add_noise(pixels, noise, stream) if noise else pixels

    files: dict[Path, Image] = {}
    if task is Task.DENOISE:
        files[folder / f"{stem}_noisy{noise:g}.png"] = img.with_pixels(noisy(x))
    elif task is Task.JPEG:  # a noisy picture, then compressed
        files[folder / f"{stem}_q{quality}.jpg"] = img.with_pixels(dg.jpeg_compress(noisy(x), quality))
    elif task is Task.INPAINT:
        mask = dg.text_mask(img.height, img.width, seed)
        files[folder / f"{stem}_text.png"] = img.with_pixels(noisy(x) * mask + (1 - mask))
        files[folder / f"{stem}_text_mask.png"] = Image(mask, "L")
    elif task is Task.RESTORE:
        mask = dg.drop_mask(img.height, img.width, drop, seed)
        name = f"{stem}_drop{round(drop * 100)}"
        files[folder / f"{name}.png"] = img.with_pixels(noisy(x) * mask)
        files[folder / f"{name}_mask.png"] = Image(mask, "L")
    elif task is Task.SR:
        dg.check_factor(factor)
        h, w = img.height - img.height % factor, img.width - img.width % factor
        hr = img if (h, w) == (img.height, img.width) else _crop(img, h, w)
        if hr is not img:
            files[folder / f"{stem}_gt.png"] = hr
        lr = noisy(dg.resize(hr.pixels, h // factor, w // factor, PILImage.Resampling.LANCZOS))
        files[folder / f"{stem}_lr{factor}.png"] = Image(lr, img.mode, img.bit_depth, None, img.source_mode)
    else:
        blurred = dg.blur(x, dg.parse_kernel(kernel))
        files[folder / f"{stem}_blur.png"] = img.with_pixels(noisy(blurred))
    check_outputs(list(files), [clean], force)
    for target, image in files.items():
        save_image(target, image)
        same = image.pixels.shape == x.shape and "mask" not in target.stem
        note = f"  (PSNR {psnr(image.pixels, x):.2f} dB against the clean image)" if same else ""
        out().print(f"wrote {target}{note}", highlight=False)
    if noise:
        why = f": {task.value}'s default, --sigma to change" if sigma is None else ""
        out().print(f"added noise of std {noise:g} (0-255 scale, seed {seed}){why}", highlight=False, soft_wrap=True)


def _crop(img: Any, height: int, width: int) -> Any:
    from dip_core.image import Image

    alpha = None if img.alpha is None else img.alpha[:height, :width]
    return Image(img.pixels[:height, :width], img.mode, img.bit_depth, alpha, img.source_mode, img.path)


@user_errors
def example(
    path: Annotated[Path, typer.Argument(help="Where to write the scene (PNG).", metavar="OUT")],
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
    check_outputs([path], [], force)
    save_image(path, from_array(synthetic_scene(size[0], size[1], 1 if grey else 3, seed)))
    out().print(f"wrote {path}", highlight=False)
