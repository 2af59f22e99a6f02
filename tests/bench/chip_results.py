"""Synthetic benchmark results for the chip-table tests: three machines in the schema-1 shape of `dip bench all`, an
older (version-0) speed file of a fourth, an auto-stop result, and three bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FLOPS_128 = 2.9e10  # FLOPs of one default-network step at 128² (4x per doubling of the side)

M3_PRO = "Apple M3 Pro (18-core GPU)"
H100 = "NVIDIA H100 80GB HBM3"
XEON = "Intel(R) Xeon(R) Processor (2 cores)"
EPYC = "AMD EPYC (2 cores)"

# machine, backend, device: the rows the folder's table must have, and nothing else
EXPECTED_ROWS = {
    (M3_PRO, "mlx", "gpu"),
    (M3_PRO, "torch", "gpu"),
    (H100, "torch", "gpu"),
    (XEON, "mlx", "cpu"),
    (XEON, "torch", "cpu"),
    (EPYC, "mlx", "cpu"),
    (EPYC, "torch", "cpu"),
}
BAD_FILES = ("broken.json", "foreign.json", "future.json")


def speed_row(backend: str, device: str, size: int, kind: str, ms: float, memory: int | None = None) -> dict:
    flops = FLOPS_128 * (size / 128) ** 2
    return {
        "backend": backend,
        "device": device,
        "precision": "fp32",
        "size": size,
        "kind": kind,
        "ms_per_iter": ms,
        "ms_min": ms * 0.98,
        "ms_max": ms * 1.03,
        "peak_memory_bytes": memory if kind == "step" else None,
        "gflops_per_s": flops / (ms / 1000) / 1e9,
        "flops": flops,
    }


def machine_result(machine: dict[str, Any], speed: list[dict], **sections: Any) -> dict[str, Any]:
    """A schema-1 machine result: `machine`'s fields over a default description, `sections` over empty ones."""
    base = {
        "label": "?",
        "chip": None,
        "cpu": "?",
        "cores": 8,
        "gpu": None,
        "gpu_cores": None,
        "gpu_driver": None,
        "memory_gib": 16.0,
        "os": "Linux 6.1",
        "arch": "x86_64",
        "power_source": None,
    }
    return {
        "kind": "machine",
        "schema_version": 1,
        "date": "2026-11-26T16:40:00+00:00",
        "command": "dip bench all",
        "finished": True,
        "machine": {**base, **machine},
        "software": {
            "dip": "0.2.0",
            "commit": "8a57815",
            "python": "3.11.7",
            "mlx": "0.32.4",
            "torch": "2.13.0",
            "blas": {"mlx": "openblas", "torch": "mkl"},
        },
        "settings": {"precision": "fp32", "threads": 2, "sizes": [128, 256, 512], "seeds": 3, "sustained_s": 0},
        "speed": speed,
        "skipped": [],
        "matmul_gflops": {},
        "quality": None,
        "crosscheck": None,
        "sustained": None,
        **sections,
    }


M3_STEP = {"mlx": {128: 20.0, 256: 60.0, 512: 220.0}, "torch": {128: 25.0, 256: 80.0, 512: 275.0}}
XEON_STEP = {"mlx": {128: 186.0, 256: 615.0}, "torch": {128: 200.0, 256: 700.0}}


def m3_pro() -> dict[str, Any]:
    speed = []
    for backend, times in M3_STEP.items():
        for size, ms in times.items():
            speed.append(speed_row(backend, "gpu", size, "step", ms, memory=400 * 2**20 * size // 128))
            speed.append(speed_row(backend, "gpu", size, "loop", ms * 1.05))
    rows = []
    for seed, (a, b) in enumerate([(28.3, 28.0), (28.4, 28.1), (28.2, 27.9)]):
        for backend, psnr in (("mlx", a), ("torch", b)):
            rows.append({"case": "scene-denoise-s25", "backend": backend, "device": "gpu", "seed": seed,
                         "psnr_result": psnr, "psnr_input": 20.2, "seconds": 12.0})  # fmt: skip
    quality = {
        "profile": "quick",
        "seeds": [0, 1, 2],
        "rows": rows,
        "summary": [
            {"case": "scene-denoise-s25", "backend": "mlx", "n": 3, "mean": 28.3, "std": 0.1},
            {"case": "scene-denoise-s25", "backend": "torch", "n": 3, "mean": 28.0, "std": 0.1},
        ],
        "differences": [
            {"case": "scene-denoise-s25", "mlx_minus_torch": 0.3, "ci95": [0.1, 0.5], "finding": True},
            {"case": "scene-sr4", "mlx_minus_torch": 0.05, "ci95": [-0.2, 0.3], "finding": False},
        ],
    }
    return machine_result(
        {"label": M3_PRO, "chip": "Apple M3 Pro", "cpu": "Apple M3 Pro", "cores": 11, "gpu": "Apple M3 Pro GPU",
         "gpu_cores": 18, "memory_gib": 36.0, "os": "Darwin 24.1.0", "arch": "arm64", "power_source": "AC Power"},
        speed,
        matmul_gflops={"mlx/gpu": 5000.0, "torch/gpu": 4500.0},
        quality=quality,
        crosscheck={"device": "gpu", "config": "default", "passed": True, "max_abs_diff": 1.2e-5, "tolerance": 1e-3},
        sustained={"backend": "mlx", "device": "gpu", "size": 256, "seconds": 300,
                   "samples": [[0.5, 60.0], [299.5, 66.0]], "first_minute_ms": 60.0, "last_minute_ms": 66.0},
    )  # fmt: skip


def h100() -> dict[str, Any]:
    speed = [speed_row("torch", "gpu", s, "step", ms, memory=2**30) for s, ms in ((128, 4.0), (256, 9.0), (512, 30.0))]
    return machine_result(
        {"label": H100, "chip": H100, "cpu": "Intel(R) Xeon(R) Platinum 8480+", "cores": 16, "gpu": H100,
         "gpu_driver": "550.54", "memory_gib": 128.0},
        speed,
        matmul_gflops={"torch/gpu": 50000.0},
        skipped=[{"backend": "mlx", "device": "gpu", "size": 512, "reason": "needs 40 GiB, 16 GiB free"}],
    )  # fmt: skip


def xeon() -> dict[str, Any]:
    speed = [
        speed_row(b, "cpu", s, "step", ms, memory=300 * 2**20) for b, t in XEON_STEP.items() for s, ms in t.items()
    ]
    result = machine_result(
        {"label": XEON, "chip": "Intel(R) Xeon(R) Processor", "cpu": "Intel(R) Xeon(R) Processor", "cores": 2,
         "memory_gib": 23.5},
        speed,
        matmul_gflops={"mlx/cpu": 290.0, "torch/cpu": 300.0},
    )  # fmt: skip
    result["finished"] = False  # interrupted: the sections hold what finished
    return result


def epyc_v0() -> dict[str, Any]:
    """A speed file of `dip bench speed` before schema 1: resolved device names, rows the chip table leaves out."""
    fp = {"os": "Linux 6.18", "machine": "x86_64", "cpu": "AMD EPYC", "cores": 2, "gpu": None, "memory_gib": 23.5,
          "python": "3.11.7", "mlx": "0.32.4", "torch": "2.13.0+cpu", "blas": {"mlx": "openblas", "torch": "mkl"},
          "dip_revision": "0718b0c"}  # fmt: skip

    def row(backend: str, size: int, kind: str, ms: float, net: str = "preset", memory: int | None = None) -> dict:
        r = speed_row(backend, "cpu", size, kind, ms, memory)
        return {**r, "net": net, "iters_per_s": 1000 / ms, "roofline_gflops": 200.0,
                "roofline_fraction": r["gflops_per_s"] / 200.0}  # fmt: skip

    rows = []
    for backend, ms in (("mlx", 173.2), ("torch", 230.1)):
        rows.append(row(backend, 128, "step", ms, memory=2**28))
        rows += [row(backend, 128, "forward", 99.0), row(backend, 128, "loop+ref", 99.0)]
        rows.append(row(backend, 64, "step", 9.0, net="small"))
    return {"kind": "speed", "rows": rows, "roofline_gflops": {"mlx/cpu": 204.0, "torch/cpu": 181.0}, "ratios": [],
            "date": "2026-11-24T09:19:10+00:00", "command": "dip bench speed", "fingerprint": fp}  # fmt: skip


def write_folder(folder: Path) -> Path:
    """The test folder: three good machine files, one version-0 speed file, an auto-stop result (skipped
    silently) and three bad files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "m3-pro.json": m3_pro(),
        "h100.json": h100(),
        "xeon.json": xeon(),
        "20261124T091910-speed-amd-epyc-2-cores.json": epyc_v0(),
        "autostop.json": {"kind": "autostop", "window": 50, "fingerprint": {}, "rows": []},
        "foreign.json": {"name": "some other tool", "results": [1, 2, 3]},
        "future.json": {**copy.deepcopy(h100()), "schema_version": 7},
    }
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data, indent=1))
    (folder / "broken.json").write_text('{"kind": "machine", "schema_version": 1, "speed": [')
    return folder
