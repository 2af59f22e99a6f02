"""`dip bench speed`: ms/iteration, memory and FLOP efficiency of every backend, in one run."""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.fingerprint import blas
from dip_core.backend import SessionSpec, available_backends, get_backend
from dip_core.model.config import SkipConfig, check_size, load_config
from dip_core.model.flops import forward_flops, step_flops
from dip_core.model.inputs import make_input
from dip_core.model.params import count_params
from dip_core.model.weights import init_weights
from dip_core.problem.degrade import Operator, OpKind
from dip_core.problem.presets import PRESETS


@dataclass(frozen=True)
class SpeedCase:
    backend: str
    device: str  # a device choice: auto, cpu or gpu
    size: int
    preset: str = "denoise"
    net: str | None = None  # overrides the preset's network
    # "step": forward + loss + backward + Adam, back to back; "forward": forward only;
    # "loop": `dip run`'s loop (the step, its monitors and the loop's decisions); "loop+ref": with --reference
    kind: str = "step"
    precision: str | None = None  # None: the device's default


KINDS = ("step", "forward", "loop", "loop+ref")


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (the CPU's share of a run)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def matmul_gflops(backend: str, device: str, n: int = 2048, repeats: int = 5, precision: str | None = None) -> float:
    """Measured fp32 matmul throughput (in the run's precision): the roofline this run is judged against."""
    be = get_backend(backend, device, precision)  # the runtime the rows get: dip_mlx's BLAS, TF32, the allocator
    if backend == "mlx":
        import mlx.core as mx

        dev = be.mx_device
        with mx.stream(dev):
            a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
            mx.eval(a, b, a @ b)
            start = time.perf_counter()
            for _ in range(repeats):
                mx.eval(a @ b)
            seconds = (time.perf_counter() - start) / repeats
    else:
        import torch

        dev = be.torch_device
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        _sync(dev)
        a @ b
        _sync(dev)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(dev)
        seconds = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds / 1e9


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()
    elif dev.type == "mps":
        torch.mps.synchronize()


def _memory(backend: Any) -> tuple[int | None, str]:
    """Peak memory of the measured work, and where it was read."""
    if backend.device == "cpu":
        # MLX's own count leaves out what its CPU kernels allocate: the process's peak tells both
        # backends alike (per row when each row has its own process, as `run_speed` runs them).
        return _peak_rss(), "process peak RSS"
    if backend.name == "mlx":
        import mlx.core as mx

        peak = int(mx.get_peak_memory())
        if peak:
            return peak, "mlx peak memory"
    else:
        import torch

        if backend.device == "cuda":
            return int(torch.cuda.max_memory_allocated()), "cuda allocator peak"
        if backend.device == "mps":
            return int(torch.mps.driver_allocated_memory()), "mps driver allocated"
    return _peak_rss(), "process peak RSS"


def _reset_memory(backend: Any) -> None:
    if backend.name == "mlx":
        import mlx.core as mx

        mx.reset_peak_memory()
    elif backend.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def network_for(case: SpeedCase) -> SkipConfig:
    """The preset's network with its input channels (or the named one as it is), 3 outputs."""
    if case.net is not None:
        return load_config(case.net).with_(out_channels=3)
    preset = PRESETS[case.preset]
    return load_config(preset.net).with_(in_channels=preset.input_channels, out_channels=3)


def bare_spec(cfg: SkipConfig, height: int, width: int, precision: Any) -> SessionSpec:
    """The session the bare step is timed on: the network fitting a fixed random target from a noise input."""
    target = np.random.default_rng(0).random((height, width, cfg.out_channels), dtype=np.float32)
    z = make_input("noise", cfg.in_channels, height, width, seed=1)
    return SessionSpec(cfg, init_weights(cfg, 0), z, target, Operator(OpKind.IDENTITY), 0.01, 1 / 30, 0,
                       precision=precision)  # fmt: skip


def time_case(case: SpeedCase, warmup: int = 2, blocks: int = 5, per_block: int = 3) -> dict[str, Any]:
    """Median, min and max ms/iteration over timed blocks, after warm-up."""
    backend = get_backend(case.backend, case.device, case.precision)
    cfg = network_for(case)
    h = w = case.size
    gc.collect()
    _reset_memory(backend)
    spec = bare_spec(cfg, h, w, backend.precision)
    extra: dict[str, Any] = {}
    if case.kind == "forward":
        net = backend.build(cfg, spec.weights)
        # forward returns numpy: synchronised
        times = _time_blocks(lambda: backend.forward(net, spec.z), warmup, blocks, per_block)
        flops = forward_flops(cfg, h, w)
        step = {"precision": backend.precision.value}
    else:
        session = backend.session(spec)
        flops, step = step_flops(cfg, h, w), session.describe()

        def bare() -> float:
            start = time.perf_counter()
            _steps(session, per_block)
            return 1000 * (time.perf_counter() - start) / per_block

        # A loop row times the loop block by block beside a bare step in the same process: drift hits both alike.
        loop, step = _loop(case, per_block) if case.kind.startswith("loop") else (None, step)
        steps, loops = [], []
        for k in range(warmup + blocks):
            step_ms = bare()
            loop_ms = loop() if loop is not None else None
            if k >= warmup:
                steps.append(step_ms)
                if loop_ms is not None:
                    loops.append(loop_ms)
        times = loops or steps
        if loops:
            ratios = [a / b for a, b in zip(loops, steps, strict=True)]
            extra = {"step_ms_same_process": statistics.median(steps), "loop_over_step": statistics.median(ratios)}
    if case.kind.startswith("loop"):
        memory, memory_source = None, "not measured (the loop's process also holds a bare step's session)"
    else:
        memory, memory_source = _memory(backend)
    ms = statistics.median(times)
    return {
        "backend": case.backend,
        "device": backend.device,
        "precision": backend.precision.value,
        "threads": backend.threads,
        "size": case.size,
        "preset": case.preset,
        "net": case.net or "preset",
        "kind": case.kind,
        "step": step,
        "params": count_params(cfg),
        "ms_per_iter": ms,
        "ms_min": min(times),
        "ms_max": max(times),
        "blocks": blocks,
        "iters_per_block": per_block,
        "iters_per_s": 1000 / ms,
        "peak_memory_bytes": memory,
        "memory_source": memory_source,
        "flops": flops,
        "gflops_per_s": flops / (ms / 1000) / 1e9,
        **extra,
    }


def _steps(session: Any, n: int) -> None:
    """n steps back to back, waiting for the last: the device's own pace, as a loop that never reads sees it."""
    handle = None
    for _ in range(n):
        handle = session.step()
    session.read(handle)


def _time_blocks(run: Any, warmup: int, blocks: int, calls: int) -> list[float]:
    """ms per call of `run`, one figure per block of `calls` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append(1000 * (time.perf_counter() - start) / calls)
    return times


def _loop(case: SpeedCase, per_block: int) -> tuple[Any, dict[str, Any]]:
    """A function that runs `dip run`'s loop (`dip run denoise` on a noisy scene, as `restore` sets it up:
    monitors, the default auto-stop, with a reference for loop+ref) for per_block + 3 steps and returns the
    ms per step over the middle per_block of them; and how the step runs."""
    from dip_core.fit.loop import fit
    from dip_core.problem.degrade import add_noise
    from dip_core.problem.examples import synthetic_scene
    from dip_core.run.prepare import prepare

    clean = synthetic_scene(case.size, case.size, 3)
    p = prepare(
        "denoise", add_noise(clean, 25, 0), backend=case.backend, device=case.device, precision=case.precision,
        preset=case.preset, net=case.net, stop="auto", reference=clean if case.kind == "loop+ref" else None,
        pad="none",  # at the bare step's size, whatever it is
    )  # fmt: skip
    settings = replace(p.fit_settings, iters=per_block + 3)

    def run() -> float:
        booked: list[float] = []
        fit(p.session, settings, reference=p.reference, on_step=lambda info: booked.append(time.perf_counter()))
        # Between the second and the last but one booking: a pipelined session books step i while step i+1
        # runs (on MLX's CPU stream, once it has nearly run), so the first and last intervals are not steps.
        return 1000 * (booked[-2] - booked[1]) / per_block

    return run, p.session.describe()


def run_speed(
    backends: list[str] | None = None,
    devices: list[str] | None = None,
    sizes: tuple[int, ...] = (64, 128, 256, 512),
    preset: str = "denoise",
    warmup: int = 2,
    blocks: int = 5,
    per_block: int = 3,
    extras: bool = True,
    on_row: Any = None,
    isolate: bool = True,
    loop: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Every size x backend x device (backends alternating, so drift in the machine hits them alike): the bare
    step and, with `loop`, `dip run`'s loop around it (with and without a reference); plus forward-only and
    cross-check-net rows at the smallest size.

    With `isolate`, every row and every matmul roofline runs in a process of its own: its peak
    memory is its own, and neither framework's threads or allocations touch the other's timing.
    """
    backends = backends or available_backends()
    devices = devices or ["auto"]
    for size in sizes:  # fail before measuring anything
        check_size(network_for(SpeedCase(backends[0], devices[0], size, preset)), size, size)
    for b in backends:
        for d in devices:
            get_backend(b, d, precision)  # a missing framework or device is a user error, here rather than in a child
    kinds = ("step", "loop", "loop+ref") if loop else ("step",)
    cases = [SpeedCase(b, d, s, preset, kind=k, precision=precision) for s in sizes for k in kinds for b in backends
             for d in devices]  # fmt: skip
    if extras:
        smallest = min(sizes)
        cases += [SpeedCase(b, d, smallest, preset, kind="forward", precision=precision) for b in backends
                  for d in devices]  # fmt: skip
        cases += [SpeedCase(b, d, 64, preset, net="small", precision=precision) for b in backends for d in devices]
    rows: list[dict[str, Any]] = []
    roofline: dict[str, float] = {}
    roofline_blas: dict[str, str | None] = {}  # the BLAS the matmul ran on (as the rows' process had it)
    for case in cases:
        row = run_isolated(case, warmup, blocks, per_block) if isolate else time_case(case, warmup, blocks, per_block)
        key = f"{case.backend}/{row['device']}"  # by the device it resolved to (cpu, gpu, cuda, mps)
        if key not in roofline:
            if isolate:
                measured = _matmul_isolated(case.backend, case.device, precision)
                roofline[key], roofline_blas[key] = measured["gflops"], measured["blas"]
            else:
                roofline[key] = matmul_gflops(case.backend, case.device, precision=precision)
                roofline_blas[key] = blas().get(case.backend)
        row["roofline_gflops"] = roofline[key]
        row["roofline_fraction"] = row["gflops_per_s"] / roofline[key]
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return {
        "kind": "speed",
        "isolated": isolate,
        "rows": rows,
        "roofline_gflops": roofline,
        "roofline_blas": roofline_blas,
        "ratios": ratios(rows),
        "loop_overhead": loop_overhead(rows),
    }


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m bench.speed ARGS` (with `env` added to the environment) and return the JSON it prints last."""
    full_env = {**os.environ, **env} if env else None
    # From the folder that holds this package: a `bench` folder or bench.py where the user is must not shadow it.
    home = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "bench.speed", *args], capture_output=True, text=True, env=full_env, cwd=home
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        raise RuntimeError(f"bench.speed {args[0]} failed: {lines[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_isolated(
    case: SpeedCase, warmup: int, blocks: int, per_block: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """time_case in a fresh process (with `env` added to its environment)."""
    return _child(["case", json.dumps(asdict(case)), str(warmup), str(blocks), str(per_block)], env)


def _matmul_isolated(backend: str, device: str, precision: str | None) -> dict[str, Any]:
    return _child(["matmul", backend, device, precision or ""])


def main() -> None:
    """The child side of `run_speed(isolate=True)`: one measurement, printed as JSON."""
    what, *args = sys.argv[1:]
    if what == "case":
        row = time_case(SpeedCase(**json.loads(args[0])), *(int(a) for a in args[1:]))
        print(json.dumps(row))
    elif what == "matmul":
        gflops = matmul_gflops(args[0], args[1], precision=args[2] or None)
        print(json.dumps({"gflops": gflops, "blas": blas().get(args[0])}))
    else:
        sys.exit(f"unknown measurement {what!r}")


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MLX ms/iter over torch ms/iter for every (device kind, size, kind, net) both measured."""
    out = []
    by_key: dict[tuple, dict[str, float]] = {}
    for r in rows:
        kind = "cpu" if r["device"] == "cpu" else "gpu"
        by_key.setdefault((kind, r["size"], r["kind"], r["net"]), {})[r["backend"]] = r["ms_per_iter"]
    for (kind, size, what, net), ms in by_key.items():
        if "mlx" in ms and "torch" in ms:
            out.append(
                {"device": kind, "size": size, "kind": what, "net": net, "mlx_over_torch": ms["mlx"] / ms["torch"]}
            )
    return out


def loop_overhead(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`dip run`'s loop ms/iter over the bare step's, per backend, device and size (1.0: the loop costs nothing):
    the median over blocks of the ratio, each loop block timed beside a bare-step block in the same process."""
    keys = ("backend", "device", "size", "kind", "loop_over_step")
    return [{k: r[k] for k in keys} for r in rows if "loop_over_step" in r]


if __name__ == "__main__":
    main()
