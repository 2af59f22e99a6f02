"""`dip presets`, `dip nets`, `dip backends`, `dip doctor`: what is installed and what the settings are."""

from __future__ import annotations

import sys

from rich import box
from rich.table import Table

from dip_cli.app import out, user_errors
from dip_core.backend import BackendName, BackendUnavailable, Device, DeviceUnavailable, available_backends, get_backend
from dip_core.errors import UserError
from dip_core.model.config import NETS, min_size
from dip_core.model.params import count_params


@user_errors
def presets() -> None:
    """List the paper's per-task settings (every value can be overridden on `dip run`)."""
    from dip_core.problem.presets import DEFAULT_PRESET, PRESETS

    # 80 columns hold it: no task column (a preset's name starts with its task; the notes name it where it is
    # not the whole name), names never cut, the headers of narrow columns on two lines.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in ("preset", "net", "input z"):
        table.add_column(header, no_wrap=True)
    for header in ("iters", "lr", "reg\nnoise", "EMA"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("back\ntrack", no_wrap=True)
    defaults = set(DEFAULT_PRESET.values())
    for name, p in PRESETS.items():
        label = f"{name} *" if name in defaults else name
        table.add_row(
            label,
            p.net,
            f"{p.input.value} {p.input_channels}",
            str(p.iters),
            f"{p.lr:g}",
            f"{p.reg_noise_std:.3g}",
            f"{p.exp_weight:g}" if p.exp_weight else "-",
            "yes" if p.backtrack else "-",
        )
    out().print(table)
    out().print("* the task's default (sr: the one of --factor)")
    for name, p in PRESETS.items():
        task = "" if name == p.task.value else f" ({p.task.value})"
        out().print(f"  {name}{task}: {p.note}", highlight=False)


@user_errors
def nets() -> None:
    """List the named networks with their parameter counts and smallest input side."""
    table = Table("name", "scales", "down / up / skip channels", "input", "parameters", "min side")
    for name, cfg in NETS.items():
        chans = " / ".join(_channels(c) for c in (cfg.channels_down, cfg.channels_up, cfg.channels_skip))
        table.add_row(name, str(cfg.depth), chans, str(cfg.in_channels), f"{count_params(cfg):,}", str(min_size(cfg)))
    out().print(table)


def _channels(per_scale: tuple[int, ...]) -> str:
    """(128, 128, 128) -> '128x3'; mixed values are listed."""
    if len(set(per_scale)) == 1:
        return f"{per_scale[0]}x{len(per_scale)}"
    return ",".join(str(c) for c in per_scale)


@user_errors
def backends() -> None:
    """Show which backends are installed and which device each would use."""
    from dip_core.backend import install_hint

    table = Table("backend", "status", "device (auto)", "CPU threads", "note")
    found = available_backends()
    for name in BackendName:
        if name.value not in found:
            table.add_row(name.value, "[red]missing[/]", "-", "-", install_hint(name))
            continue
        try:
            b = get_backend(name, Device.AUTO)
        except (BackendUnavailable, DeviceUnavailable) as exc:
            table.add_row(name.value, "[red]unusable[/]", "-", "-", str(exc))
            continue
        note = ""
        if name is BackendName.MLX:
            from dip_mlx import BLAS
            from dip_mlx.cpu_kernels import status

            note = f"BLAS: {BLAS.name}; CPU kernels: {status()}"
        table.add_row(name.value, "[green]ok[/]", b.device, f"{b.threads} ({b.threads_reason})", note)
    out().print(table)


@user_errors
def doctor() -> None:
    """Backends, devices, the BLAS in use, measured matmul speed, and what to install to go faster."""
    from bench.fingerprint import fingerprint
    from bench.speed import matmul_gflops
    from dip_core.backend import install_hint

    fp = fingerprint()
    out().print(
        f"{fp['cpu']} ({fp['cores']} cores), {fp['memory_gib']} GiB, {fp['os']}, Python {fp['python']}"
        + (f", GPU: {fp['gpu']}" if fp["gpu"] else ""),
        highlight=False,
    )
    out().print(f"memory allocator: {fp['allocator']}", highlight=False)
    table = Table("backend", "version", "device", "default precision", "BLAS", "matmul 2048² (that precision)")
    advice: list[str] = []
    threads: list[str] = []  # per backend on the CPU: how many threads and why
    for name in BackendName:
        if name.value not in available_backends():
            table.add_row(name.value, "-", "-", "-", "-", "not installed")
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
            backend = get_backend(name, device)
            gflops = matmul_gflops(name.value, device)
            blas = fp["blas"].get(name.value) if device == "cpu" else "-"
            if device == "cpu":
                plural = "s" if backend.threads != 1 else ""
                threads.append(f"{name.value}: {backend.threads} thread{plural} - {backend.threads_reason}")
            table.add_row(
                name.value, fp[name.value] or "?", backend.device, backend.precision.value, str(blas),
                f"{gflops:,.0f} GFLOP/s",
            )  # fmt: skip
    out().print(table)
    _print_threads(threads)
    from dip_mlx.blas import load_blas

    if "mlx" in available_backends():
        info = load_blas()
        if info.path is None and sys.platform.startswith("linux"):
            advice.append(f"mlx: {info.note}")
        if sys.platform.startswith("linux"):
            out().print(f"mlx CPU kernels: {fp['mlx_cpu_kernels']}", highlight=False)
            if not fp["mlx_cpu_kernels"].startswith(("on", "off")):
                advice.append("mlx: for ~2x faster MLX on the CPU build its kernels: python -m dip_mlx.build_kernels")
    for line in advice or ["nothing to add: every backend is installed and uses a fast BLAS"]:
        out().print(f"- {line}", highlight=False)


def _print_threads(lines: list[str]) -> None:
    """The load on this process's cores and the CPU threads each backend runs (dip_core/system/threads.py)."""
    from dip_core.system.threads import core_count, current_load, describe_cores

    load = current_load()
    seen = "unknown" if load is None else f"{load:.1f} of {core_count()} cores busy with other processes"
    out().print(f"CPU threads (load now: {seen}; --threads N or DIP_THREADS=N to choose):", highlight=False)
    out().print(f"  {describe_cores()}", highlight=False)
    for line in lines:
        out().print(f"  {line}", highlight=False)
