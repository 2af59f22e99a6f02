"""Who measured: a fingerprint of the machine and the software, attached to every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dip_core.system.allocator import tune_allocator

ROOT = Path(__file__).resolve().parent.parent


def run_command(cmd: list[str]) -> str | None:
    """A command's trimmed output, or None when it is missing, fails or prints nothing."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def cpu_name() -> str:
    """The CPU model, or the Apple chip's name (e.g. "Apple M3 Pro")."""
    if sys.platform == "darwin":
        return run_command(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if sys.platform == "darwin":
        chip = cpu_name()
        return f"{chip} GPU" if chip.startswith("Apple") else None
    return run_command(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])


def blas() -> dict[str, str | None]:
    """The BLAS behind each framework on the CPU."""
    out: dict[str, str | None] = {"mlx": None, "torch": None}
    if package_version("mlx") is not None:
        from dip_mlx import BLAS

        out["mlx"] = BLAS.name if BLAS.path is None else f"{BLAS.name} ({BLAS.path})"
    if package_version("torch") is not None:
        import torch

        config = torch.__config__.show()
        out["torch"] = "mkl" if "BLAS_INFO=mkl" in config else ("openblas" if "openblas" in config.lower() else "other")
    return out


def mlx_cpu_kernels() -> str | None:
    """Whether dip_mlx's compiled CPU kernels are in use (Linux)."""
    if package_version("mlx") is None:
        return None
    from dip_mlx.cpu_kernels import status

    return status()


def git_revision() -> str | None:
    rev = run_command(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if rev and run_command(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]):
        rev += "+dirty"
    return rev


def fingerprint() -> dict[str, Any]:
    import psutil

    return {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "mlx": package_version("mlx"),
        "torch": package_version("torch"),
        "blas": blas(),
        "mlx_cpu_kernels": mlx_cpu_kernels(),
        "allocator": tune_allocator(),
        "dip_revision": git_revision(),
    }


def machine_label(fp: dict[str, Any]) -> str:
    """A short name for tables and charts: the GPU when there is one, else the CPU."""
    cpu = fp.get("cpu") or "unknown CPU"
    if fp.get("gpu") and not str(fp["gpu"]).startswith("Apple"):
        return f"{fp['gpu']}"
    return f"{cpu} ({fp.get('cores')} cores)" if not cpu.startswith("Apple") else cpu


def slug(label: str, length: int = 40) -> str:
    """A machine's label as a file-name part: lower case, runs of other characters as one dash."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:length]
