#!/usr/bin/env bash
# Create .venv and install dip with both backends (MLX and PyTorch) and the test tools.
#   PYTHON=python3.12 bash scripts/setup.sh    to pick the interpreter
#   TORCH_SPEC="torch"  bash scripts/setup.sh  to pick the torch build
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
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
if [ "$(uname -s)" = Linux ] && blas_missing; then
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
    if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then TORCH_SPEC="torch==2.13.0"; else TORCH_SPEC="torch"; fi
fi
"${PIP[@]}" install "$TORCH_SPEC"
"${PIP[@]}" install -e ".[mlx,torch,dev,browser,ui]"
# Ray (dip batch --engine ray) is an optional extra, not installed here: pip install -e ".[ray]"
# (.ci/run adds it for its tests).

# Linux: compile MLX's CPU kernels for this machine (dip_mlx/csrc); without them the
# MLX backend falls back to MLX's own, slower, ops on the CPU.
if [ "$(uname -s)" = Linux ]; then
    .venv/bin/python -m dip_mlx.build_kernels --quiet \
        || echo "setup: the MLX CPU kernels did not build; MLX's own ops will be used on the CPU" >&2
fi
echo "setup: done (.venv/bin/dip)"
