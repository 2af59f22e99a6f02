"""Find an optimised CBLAS for MLX's Linux CPU build before mlx.core is imported.

The Linux `mlx[cpu]` wheel links a reference (netlib) BLAS. MLX resolves
`cblas_sgemm` dynamically, so a faster library that exports the standard CBLAS
symbols, loaded with RTLD_GLOBAL first, takes its place (about 30x on matmul).
Never done on macOS, where MLX uses Accelerate and Metal. This module must not
import mlx.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Set DIP_BLAS to a library path to force one, or to "bundled" to keep MLX's own.
ENV_VAR = "DIP_BLAS"
# OpenBLAS's idle threads spin for 2^28 cycles by default after each product; between the
# products of a step the CPU kernels need those cores (a Winograd convolution ran 1.5x
# slower). 2^4 puts them to sleep at once; a user's own setting wins.
THREAD_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "4")


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas", "mkl", "bundled (reference BLAS)", "accelerate"
    path: str | None  # the library loaded, None when MLX's own is used
    note: str  # why this one, or what would be faster


def _candidates() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for pattern in (
        "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
        "/usr/lib/*-linux-gnu/libopenblas.so.0",
        "/usr/lib64/libopenblas.so.0",
        "/usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so.0",
    ):
        found += [("openblas", p) for p in sorted(glob.glob(pattern))]
    for prefix in {sys.prefix, sys.base_prefix}:
        found += [("mkl", p) for p in sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))]
    return found


def _has_sgemm(path: str) -> bool:
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return hasattr(lib, "cblas_sgemm")


# The CPU kernels split their products over their own threads and want a single-threaded
# CBLAS for that (loaded privately by dip_mlx.cpu_kernels). DIP_SERIAL_BLAS=path forces
# one, DIP_SERIAL_BLAS=none keeps the kernels on MLX's threaded BLAS.
SERIAL_ENV_VAR = "DIP_SERIAL_BLAS"
SERIAL_CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-serial/libopenblas.so.0",
    "/usr/lib64/openblas-serial/libopenblas.so.0",
)


def serial_blas_path() -> str | None:
    """A single-threaded CBLAS library on this machine (Debian's openblas-serial), or None."""
    forced = os.environ.get(SERIAL_ENV_VAR, "").strip()
    if forced:
        return None if forced.lower() == "none" else forced
    for pattern in SERIAL_CANDIDATES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@functools.lru_cache(maxsize=1)
def load_blas() -> BlasInfo:
    """Load the best CBLAS found (once per process); report what MLX will use."""
    if sys.platform == "darwin":
        return BlasInfo("accelerate", None, "macOS: MLX uses Accelerate on the CPU and Metal on the GPU")
    if not sys.platform.startswith("linux"):
        return BlasInfo("bundled", None, "no BLAS override on this platform")
    if "mlx.core" in sys.modules:
        return BlasInfo(
            "bundled (reference BLAS)", None, "mlx.core was imported before dip_mlx: too late to load a faster BLAS"
        )
    forced = os.environ.get(ENV_VAR, "").strip()
    os.environ.setdefault(*THREAD_TIMEOUT)  # read when OpenBLAS starts its threads
    if forced.lower() == "bundled":
        return BlasInfo("bundled (reference BLAS)", None, f"{ENV_VAR}=bundled keeps MLX's own BLAS")
    if forced:
        if Path(forced).exists() and _has_sgemm(forced):
            return BlasInfo(Path(forced).name, forced, f"chosen by {ENV_VAR}")
        return BlasInfo("bundled (reference BLAS)", None, f"{ENV_VAR}={forced} has no cblas_sgemm; using MLX's own")
    for name, path in _candidates():
        if _has_sgemm(path):
            return BlasInfo(name, path, "optimised CBLAS loaded before mlx.core")
    return BlasInfo(
        "bundled (reference BLAS)",
        None,
        "slow reference BLAS: install OpenBLAS (apt-get install libopenblas0-pthread) for ~30x faster matmul",
    )
