"""What each speed-up of MLX on the Linux CPU is worth: the default denoising step under each configuration.

    .venv/bin/python -m bench.ladder [--sizes 128 256] [--blocks 3] [--per-block 2] [--out DIR]
    .venv/bin/python -m bench.ladder --show bench/results/...-ladder-....json

Each rung adds one change to the one above and runs, like every `dip bench
speed` row, in a process of its own; PyTorch is measured in the same run, with
and without the allocator setting that dip applies to both backends. Rungs are
switched by the environment variables the code reads (DIP_BLAS, DIP_MALLOC,
DIP_CPU_KERNELS, DIP_WINOGRAD, DIP_SERIAL_BLAS). The reference-BLAS rung is
measured at the smallest size only (it takes seconds per step). The result goes
as JSON to your per-user results folder (dip_core.system.paths; `--out bench/results`
adds it to the repository's) and is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.fingerprint import fingerprint, machine_label
from bench.fingerprint import slug as machine_slug
from bench.speed import SpeedCase, run_isolated
from dip_core.system.atomic import write_json
from dip_core.system.paths import bench_results_dir

OFF = {"DIP_CPU_KERNELS": "0", "DIP_MALLOC": "default"}
RUNGS: list[tuple[str, str, dict[str, str]]] = [
    ("MLX ops, MLX's bundled reference BLAS", "mlx", {**OFF, "DIP_BLAS": "bundled"}),
    ("+ OpenBLAS loaded before mlx.core", "mlx", OFF),
    ("+ heap thresholds (both backends)", "mlx", {"DIP_CPU_KERNELS": "0"}),
    ("+ CPU kernels, 3x3 tap by tap, products on MLX's BLAS", "mlx", {"DIP_WINOGRAD": "0", "DIP_SERIAL_BLAS": "none"}),
    ("+ Winograd F(2x2,3x3)", "mlx", {"DIP_SERIAL_BLAS": "none"}),
    ("+ products on a serial BLAS over the kernels' threads (default)", "mlx", {}),
    ("PyTorch, system allocator", "torch", {"DIP_MALLOC": "default"}),
    ("PyTorch (default)", "torch", {}),
]


def run(sizes: list[int], blocks: int, per_block: int) -> dict[str, Any]:
    rows = []
    for label, backend, env in RUNGS:
        for size in sizes:
            if env.get("DIP_BLAS") == "bundled" and size != min(sizes):
                continue
            r = run_isolated(SpeedCase(backend, "cpu", size), 1, blocks, per_block, env)
            rows.append({"rung": label, "env": env, **r})
            print(f"{label:66s} {size:4d}²  {r['ms_per_iter']:9.1f} ms", flush=True)
    return {"kind": "ladder", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fingerprint": fingerprint(), "rows": rows}


def markdown(data: dict[str, Any]) -> str:
    sizes = sorted({r["size"] for r in data["rows"]})
    ms = {(r["rung"], r["size"]): r["ms_per_iter"] for r in data["rows"]}
    torch = {s: ms.get(("PyTorch (default)", s)) for s in sizes}
    head = "| configuration | " + " | ".join(f"{s}² ms/iter (÷ torch)" for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for label, _, _ in RUNGS:
        cells = []
        for s in sizes:
            v = ms.get((label, s))
            cells.append("-" if v is None else f"{v:,.0f} ({v / torch[s]:.2f})" if torch[s] else f"{v:,.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--per-block", type=int, default=2)
    ap.add_argument("--show", type=Path, help="print the table of a recorded ladder result instead of running")
    ap.add_argument("--out", type=Path, help=f"folder for the result (default: {bench_results_dir()})")
    args = ap.parse_args()
    if args.show:
        print(markdown(json.loads(args.show.read_text())))
        return
    data = run(args.sizes, args.blocks, args.per_block)
    slug = machine_slug(machine_label(data["fingerprint"]))
    folder = args.out or bench_results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-ladder-{slug}.json"
    write_json(out, data)
    print(markdown(data))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
