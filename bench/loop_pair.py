"""The loop's cost beside the bare step, for this checkout or another one (before/after comparisons).

    .venv/bin/python -m bench.loop_pair [--root CHECKOUT] [--device cpu] [--sizes 128 256] [--blocks 5] [--steps 5]
    .venv/bin/python -m bench.loop_pair --show bench/results/...-loop-pair-....json

For every backend, size and with/without a reference, in a process of its own:
blocks of `steps` bare steps (each read back) alternate with blocks of `dip run
denoise`'s loop (`restore` with auto-stop on a noisy synthetic scene, at the
bare step's size: no padding; timed between the second and the last but one
step it books); prints one JSON line
per case with the medians and the median of the paired ratios, and writes them
with the machine's fingerprint to your per-user results folder (dip_core.system.paths; `--out FILE`
to write elsewhere). `--root` runs
another checkout's code (one whose sessions return the output from `step()`,
as before the loop kept images on the device, works too; build its MLX CPU
kernels there first), so both sides of a change are measured the same way on
the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def measure(root: str, backend: str, size: int, reference: bool, blocks: int, steps: int, device: str = "cpu") -> dict:
    """One case, in this process, with the code under `root`."""
    sys.path.insert(0, root)
    import numpy as np

    from dip_core.backend import SessionSpec, get_backend
    from dip_core.model.config import load_config
    from dip_core.model.inputs import make_input
    from dip_core.model.weights import init_weights
    from dip_core.problem.degrade import Operator, OpKind, add_noise
    from dip_core.problem.examples import synthetic_scene
    from dip_core.run.api import restore

    be = get_backend(backend, device)
    cfg = load_config("default").with_(in_channels=32, out_channels=3)
    z = make_input("noise", 32, size, size, seed=1)
    target = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    session = be.session(SessionSpec(cfg, init_weights(cfg, 0), z, target, Operator(OpKind.IDENTITY), 0.01, 1 / 30, 0))
    reads = hasattr(session, "read")  # else step() returns the loss and the output, read already

    def bare() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            session.read(session.step()) if reads else session.step()
        return 1000 * (time.perf_counter() - start) / steps

    clean = synthetic_scene(size, size, 3)
    noisy = add_noise(clean, 25, 0)

    def loop() -> float:
        booked: list[float] = []
        restore(
            "denoise", noisy, backend=backend, device=device, iters=steps + 3, stop="auto", pad="none",
            reference=clean if reference else None, on_step=lambda info: booked.append(time.perf_counter()),
        )  # fmt: skip
        return 1000 * (booked[-2] - booked[1]) / steps

    bare()  # warm-up
    loop()
    pairs = [(bare(), loop()) for _ in range(blocks)]
    return {
        "root": root,
        "backend": backend,
        "device": be.device,
        "size": size,
        "reference": reference,
        "step_ms": statistics.median(p[0] for p in pairs),
        "loop_ms": statistics.median(p[1] for p in pairs),
        "loop_over_step": statistics.median(p[1] / p[0] for p in pairs),
    }


def show(path: Path) -> None:
    """A recorded result as a Markdown table."""
    data = json.loads(path.read_text())
    print(f"{data['date']}, {data['fingerprint']['cpu']}, code of {data['root']}\n")
    print("| backend | device | size | reference | bare step ms | loop ms | loop / step |")
    print("|---|---|---|---|---|---|---|")
    for r in data["rows"]:
        print(
            f"| {r['backend']} | {r['device']} | {r['size']}² | {'yes' if r['reference'] else 'no'} "
            f"| {r['step_ms']:.1f} | {r['loop_ms']:.1f} | {r['loop_over_step']:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose code is timed")
    ap.add_argument("--backends", nargs="+", default=["mlx", "torch"])
    ap.add_argument("--device", default="cpu", help="cpu, gpu or auto")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per block")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: one in your results folder)")
    ap.add_argument("--show", type=Path, help="print a recorded result")
    ap.add_argument("--case", nargs=3, metavar=("BACKEND", "SIZE", "REF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.show:
        show(args.show)
        return
    if args.case:
        backend, size, ref = args.case
        row = measure(args.root, backend, int(size), ref == "ref", args.blocks, args.steps, args.device)
        print(json.dumps(row), flush=True)
        return
    from bench.fingerprint import fingerprint, git_revision, machine_label
    from bench.fingerprint import slug as machine_slug
    from dip_core.system.atomic import write_json
    from dip_core.system.paths import bench_results_dir

    fp = fingerprint()
    started = time.strftime("%Y%m%dT%H%M%S")
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for backend in args.backends:
            for ref in ("none", "ref"):
                cmd = [sys.executable, "-m", "bench.loop_pair", "--root", args.root, "--blocks", str(args.blocks)]
                cmd += ["--device", args.device, "--steps", str(args.steps), "--case", backend, str(size), ref]
                line = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(line.strip().splitlines()[-1]))
                print(line.strip(), flush=True)
    slug = machine_slug(machine_label(fp))
    out = args.out or bench_results_dir() / f"{started}-loop-pair-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    revision = git_revision() if Path(args.root).resolve() == ROOT else _revision(args.root)
    write_json(out, {"kind": "loop-pair", "date": started, "root": revision, "fingerprint": fp, "rows": rows})
    print(f"wrote {out}")


def _revision(root: str) -> str:
    """The commit of another checkout."""
    result = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or root


if __name__ == "__main__":
    main()
