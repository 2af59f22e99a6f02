"""`dip crosscheck`: proof that MLX and PyTorch compute the same thing from the same weights."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dip_cli.app import ConfigOpt, DeviceOpt, UsageError, err, out, user_errors
from dip_core.backend import BackendName, Device, get_backend
from dip_core.model.config import NETS, SkipConfig, load_config, min_size
from dip_core.model.method import Method
from dip_core.system.precision import Precision

if TYPE_CHECKING:
    from dip_core.run.crosscheck import OnPhase


@user_errors
def crosscheck(
    config: ConfigOpt = "default",
    size: Annotated[tuple[int, int], typer.Option(help="Input height and width.")] = (64, 64),
    steps: Annotated[int, typer.Option(min=0, max=10_000, help="Adam steps of the trajectory.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the shared numpy draw.")] = 0,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 0.01,
    method: Annotated[
        Method,
        typer.Option(
            help="dip: train every weight on MSE; drp: the Deep Random Projector's loss (sqrt(MSE) + TV), "
            "convolutions frozen, the input and the BatchNorms trained (with the default --config: the drp network)."
        ),
    ] = Method.DIP,
    floor_samples: Annotated[
        int, typer.Option(min=0, max=16, help="Perturbed reference runs that measure the fp32 noise floor.")
    ] = 3,
    device: DeviceOpt = Device.CPU,
    precision: Annotated[
        Precision,
        typer.Option(help="fp32 (strict, the targets' precision) or tf32 (what GPUs run by default); not bf16."),
    ] = Precision.FP32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Prove that MLX and PyTorch compute the same outputs, gradients and Adam trajectory from the same weights."""
    from dip_core.run.crosscheck import CrossCheckCase
    from dip_core.run.crosscheck import crosscheck as run_crosscheck

    if precision is Precision.BF16:
        raise UsageError("the cross-check compares fp32 or tf32 runs; bf16 differences are not rounding noise")
    if method is Method.DRP and config == "default":
        config = "drp"  # DRP's own network: one scale, a BatchNorm on its input
    cfg = load_config(config)
    _check_fits(cfg, config, *size)
    case = CrossCheckCase(cfg, height=size[0], width=size[1], steps=steps, seed=seed, lr=lr, method=method)
    mlx_backend = get_backend(BackendName.MLX, device, precision)
    torch_backend = get_backend(BackendName.TORCH, device, precision)
    with _progress(quiet) as on_phase:
        report = run_crosscheck(mlx_backend, torch_backend, case, floor_samples=floor_samples, on_phase=on_phase)
    data = report.to_json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_crosscheck(data)
    if data["verdict"] == "disagree":
        raise typer.Exit(1)


def _check_fits(cfg: SkipConfig, name: str, height: int, width: int) -> None:
    """A size too small for the network: say which sizes work and which named networks fit this one."""
    smallest = min_size(cfg)
    if height >= smallest and width >= smallest:
        return
    fits = [f"--config {n} (sides from {min_size(c)})" for n, c in NETS.items() if min_size(c) <= min(height, width)]
    shallower = f", or a shallower network: {' or '.join(fits)}" if fits else ""
    raise UsageError(
        f"a {height}x{width} input is too small for the {cfg.depth}-scale network {name!r} "
        f"(each side must be at least {smallest} pixels): use --size {max(height, smallest)} {max(width, smallest)} "
        f"or larger{shallower}"
    )


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[OnPhase | None]:
    """A bar on stderr, one tick per phase, naming the phase that runs; gone once done. Only on a terminal: a
    piped or logged run prints its result alone."""
    console = err()
    if quiet or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("cross-check", total=None)

        def on_phase(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what, refresh=True)

        yield on_phase


def _print_crosscheck(data: dict[str, Any]) -> None:
    from dip_core.run.crosscheck import verdict_text

    a, b = data["backends"]
    h, w = data["size"]
    out().print(
        f"[bold]{a}[/] ({data['devices'][0]}) vs [bold]{b}[/] ({data['devices'][1]}), {data['precision']}, {h}x{w}, "
        f"{data['steps']} Adam steps, lr {data['lr']}, seed {data['seed']}, method {data['method']}"
    )
    p = data["params"]
    out().print(f"parameters: {a} {p[a]:,}, {b} {p[b]:,} (layout {p['layout']:,})")
    table = Table("check", "difference", "target", "fp32 noise floor", "met")
    for key, row in data["targets"].items():
        floor = f"{row['noise_floor']:.2e}" if row["noise_floor"] is not None else "-"
        table.add_row(key, f"{row['value']:.2e}", f"{row['target']:.0e}", floor, "yes" if row["met"] else "[red]no[/]")
    out().print(table)
    out().print(f"largest gradient difference: {data['grad_worst_param']}")
    if data["diverges_at"]:
        out().print(f"forward differences first grow at: {data['diverges_at']}")
    verdict = data["verdict"]
    colour = {"met": "green", "disagree": "red"}.get(verdict, "yellow")
    line = verdict_text(verdict, data["excess"])
    if verdict == "above-noise":
        line += " (see where differences first grow)"
    out().print(f"[{colour}]{line}[/]", highlight=False)
