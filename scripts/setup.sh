#!/usr/bin/env bash
# Create .venv and install dip with both backends (MLX and PyTorch) and the test tools.
#   PYTHON=python3.12 bash scripts/setup.sh    to pick the interpreter
#   TORCH_SPEC="torch"  bash scripts/setup.sh  to pick the torch build
set -euo pipefail
cd "$(dirname "$0")/.."

OS=$(uname -s)
NEED="Python 3.10 or newer"
[ "$OS" = Darwin ] && NEED="a native (arm64) Python 3.10 or newer"

# MLX's wheels need macOS 14 or newer on Apple silicon.
if [ "$OS" = Darwin ]; then
    MACOS=$(sw_vers -productVersion 2>/dev/null || echo unknown)
    if ! [ "${MACOS%%.*}" -ge 14 ] 2>/dev/null; then
        echo "setup: MLX needs macOS 14 or newer and this Mac runs macOS $MACOS; update macOS first" \
            "(System Settings > General > Software Update)" >&2
        exit 1
    fi
fi

# An interpreter's "major.minor machine", e.g. "3.12 arm64"; fails when it does not run.
py_info() { "$1" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine())' 2>/dev/null; }
# Whether an interpreter can run dip: >= 3.10 (MLX's floor, and the project's), native arm64 on a Mac
# (an x86_64 Python runs under Rosetta, where there is no MLX and no MPS).
suitable() {
    local info major minor
    info=$(py_info "$1") || return 1
    major=${info%%.*}
    minor=${info#*.}
    minor=${minor%% *}
    { [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 10 ]; }; } 2>/dev/null || return 1
    [ "$OS" != Darwin ] || [ "${info##* }" = arm64 ]
}

# A .venv left by an earlier try with an unsuitable interpreter (Apple's python3 is often 3.9), or broken
# half-way, is never reused: every retry would fail the same way.
if [ -e .venv ] && ! suitable .venv/bin/python; then
    echo "setup: removing .venv (its Python: $(py_info .venv/bin/python || echo "none that runs"); dip needs $NEED)" >&2
    rm -rf .venv
fi

# The interpreter: $PYTHON if it is suitable, else the newest python3.13 ... python3.10, else python3.
PY=""
FOUND=()
for candidate in ${PYTHON:+"$PYTHON"} python3.13 python3.12 python3.11 python3.10 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if suitable "$candidate"; then
        PY=$candidate
        break
    fi
    FOUND+=("$candidate: $(py_info "$candidate" || echo "does not run")")
done
if [ -z "$PY" ]; then
    seen="none on PATH"
    if [ ${#FOUND[@]} -gt 0 ]; then
        seen=$(printf '%s, ' "${FOUND[@]}")
        seen=${seen%, }
    fi
    hint="install one (e.g. apt-get install python3.12-venv)"
    [ "$OS" = Darwin ] && hint="install one (https://www.python.org/downloads/macos/ or brew install python@3.12)"
    echo "setup: dip needs $NEED and found none ($seen); $hint and run again, or name it:" \
        "PYTHON=/path/to/python3.12 bash scripts/setup.sh" >&2
    exit 1
fi
if [ -n "${PYTHON:-}" ] && [ "$PY" != "$PYTHON" ]; then
    echo "setup: PYTHON=$PYTHON is not $NEED ($(py_info "$PYTHON" || echo "does not run")); using $PY" >&2
fi
# A .venv of another Python than the one named in $PYTHON is made again with it.
if [ -e .venv ] && [ "$PY" = "${PYTHON:-}" ] && [ "$(py_info .venv/bin/python)" != "$(py_info "$PY")" ]; then
    echo "setup: .venv has Python $(py_info .venv/bin/python); making it again with $PY ($(py_info "$PY"))" >&2
    rm -rf .venv
fi

if [ ! -e .venv ]; then
    # Made whole or not at all: a .venv without pip (Debian without python3-venv) would be reused broken.
    if ! "$PY" -m venv .venv || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv
        echo "setup: $PY could not make a virtual environment with pip in .venv" \
            "(Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# System packages, best effort: root + apt only; the package lists are updated once, when something is missing.
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Linux: MLX's CPU wheel bundles a slow reference BLAS; dip loads OpenBLAS in its
# place when the system has it, and its CPU kernels use the single-threaded build
# (see dip_mlx/blas.py).
blas_missing() {
    [ ! -e /usr/lib/"$(uname -m)"-linux-gnu/openblas-pthread/libopenblas.so.0 ] \
        || [ ! -e /usr/lib/"$(uname -m)"-linux-gnu/openblas-serial/libopenblas.so.0 ]
}
if [ "$OS" = Linux ] && blas_missing; then
    if can_apt; then
        apt_install libopenblas0-pthread libopenblas0-serial \
            || echo "setup: could not install OpenBLAS; MLX will use its bundled (slow) BLAS" >&2
    else
        echo "setup: for fast MLX on Linux install OpenBLAS:" \
            "sudo apt-get install libopenblas0-pthread libopenblas0-serial" >&2
    fi
fi

# PyTorch: on Linux x86-64 pin the release whose CPU wheel is at hand (a bare
# 'torch' can pull a multi-GB CUDA build); elsewhere the platform's default.
if [ -z "${TORCH_SPEC:-}" ]; then
    if [ "$OS-$(uname -m)" = Linux-x86_64 ]; then TORCH_SPEC="torch==2.13.0"; else TORCH_SPEC="torch"; fi
fi
"${PIP[@]}" install "$TORCH_SPEC"
"${PIP[@]}" install -e ".[mlx,torch,dev,browser,ui]"
# Ray (dip batch --engine ray) is an optional extra, not installed here: pip install -e ".[ray]"
# (.ci/run adds it for its tests).

# Linux: compile MLX's CPU kernels for this machine (dip_mlx/csrc); without them the
# MLX backend falls back to MLX's own, slower, ops on the CPU.
if [ "$OS" = Linux ]; then
    .venv/bin/python -m dip_mlx.build_kernels --quiet \
        || echo "setup: the MLX CPU kernels did not build; MLX's own ops will be used on the CPU" >&2
fi
echo "setup: done (.venv/bin/dip)"
