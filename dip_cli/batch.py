"""`dip batch`: restore every image of a folder with the same options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dip_cli.app import UsageError, err, out, user_errors
from dip_cli.options import with_run_options
from dip_cli.run import handle_sigterm
from dip_core.errors import UserError
from dip_core.options import RunOptions
from dip_core.presets import Task


@user_errors
@with_run_options(exclude=("save_every", "checkpoint_every"))
def batch(
    task: Annotated[Task, typer.Argument(help="What to restore.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of corrupted images (masks: STEM_mask.png beside them).")],
    options: RunOptions,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for results and reports (created).")],
    references: Annotated[Path | None, typer.Option(help="Folder of clean images with the same stems.")] = None,
) -> None:
    """Restore every image of a folder with the same options; resumable, and a bad file does not stop it."""
    from dip_core.api import restore
    from dip_core.atomic import write_json
    from dip_core.image import IMAGE_SUFFIXES, load_image, save_image

    if not input_dir.is_dir():
        raise UsageError(f"{input_dir} is not a folder")
    if references is not None and not references.is_dir():
        raise UsageError(f"--references {references} is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    images = sorted(
        p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")
    )
    if not images:
        raise UsageError(f"no images in {input_dir}")
    rows: list[dict[str, Any]] = []
    for path in images:
        target = output / f"{path.stem}.{task.value}.png"
        row: dict[str, Any] = {"image": path.name, "output": target.name}
        if target.exists():
            rows.append({**row, "status": "skipped (done)"})
            continue
        try:
            mask = _sibling(path, "_mask")
            ref = _sibling(references / path.name, "") if references is not None else None
            out().print(f"[bold]{path.name}[/]", highlight=False)
            with handle_sigterm():
                result = restore(task.value, load_image(path), options, mask=mask, reference=ref)
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
            err().print(f"[red]skipped {path.name}:[/] {exc}", highlight=False)
            rows.append({**row, "status": f"error: {exc}"})
        except KeyboardInterrupt:
            rows.append({**row, "status": "interrupted"})
            _batch_summary(rows, output)
            raise typer.Exit(130) from None
    _batch_summary(rows, output)
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
