"""Build the MLX CPU kernels (dip_mlx/csrc/cpu_kernels.cpp) into dip_mlx/_cpu_kernels*.so.

    python -m dip_mlx.build_kernels [--force] [--quiet]

Linux only: on macOS MLX runs the network on Metal, and its CPU path keeps
MLX's own ops. Needs a C++20 compiler and nanobind (the `mlx` extra installs
the version whose ABI matches MLX's). The module is compiled for this
machine's CPU and records the MLX version it was built against; dip ignores
it, with a note in `dip doctor`, when MLX has changed since.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "csrc" / "cpu_kernels.cpp"
MODULE = "_cpu_kernels"


def target() -> Path:
    return HERE / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX')}"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def command(out: Path) -> list[str]:
    """The compiler command line (raises RuntimeError when something it needs is missing)."""
    import mlx.core as mx

    try:
        import nanobind
    except ImportError:
        raise RuntimeError("nanobind is not installed (pip install 'nanobind==3.1.0')") from None
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    mlx_dir = Path(mx.__file__).resolve().parent
    nb_dir = Path(nanobind.__file__).resolve().parent
    return [
        cxx, "-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden", "-DNDEBUG",
        "-DNB_DOMAIN=mlx",  # share MLX's nanobind type registry, so mx.array crosses as mlx::core::array
        f'-DDIP_MLX_VERSION="{mx.__version__}"',
        f"-I{sysconfig.get_paths()['include']}", f"-I{nb_dir / 'include'}",
        f"-I{nb_dir / 'ext' / 'robin_map' / 'include'}", f"-I{mlx_dir / 'include'}",
        str(nb_dir / "src" / "nb_combined.cpp"), str(SOURCE),
        f"-L{mlx_dir / 'lib'}", "-lmlx", f"-Wl,-rpath,{mlx_dir / 'lib'}", "-o", str(out),
    ]  # fmt: skip


def build(force: bool = False, quiet: bool = False) -> Path | None:
    """Compile the module next to this file (atomically); None where it is not needed."""
    if not sys.platform.startswith("linux"):
        if not quiet:
            print("build_kernels: not needed on this platform (MLX's own ops are used)")
        return None
    out = target()
    if out.exists() and not force and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        if not quiet:
            print(f"build_kernels: {out.name} is up to date")
        return out
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = command(tmp_out)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compilation failed:\n{result.stderr[-4000:]}")
        os.replace(tmp_out, out)
    if not quiet:
        print(f"build_kernels: built {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    try:
        build(args.force, args.quiet)
    except RuntimeError as exc:
        sys.exit(f"build_kernels: {exc}")


if __name__ == "__main__":
    main()
