"""The compiled CPU kernels (csrc/cpu_kernels.cpp) in the network's terms, and whether they can be used.

An activation on this path is an `Act`: an MLX buffer (1, Hb, Wb, C) and the
region of it that holds the image. A BatchNorm output carries `border` pixels
of real padding around its region, so the next convolution reads it in place;
a convolution's output has junk columns right of its region, which only the
kernels that know the region read. `Act.image()` gives the plain array.

Set DIP_CPU_KERNELS=0 to run MLX's own ops instead, DIP_WINOGRAD=0 to run
3x3 convolutions tap by tap (for comparisons), DIP_SERIAL_BLAS (see dip_mlx/blas.py).

The kernels run on one pool of threads, which the compiled module sizes from DIP_THREADS
when its first kernel runs (the self-test here) and never again: the first MLX backend on
the CPU of a process (`start_pool`) fixes it for the process, to its `--threads` or to the
choice of dip_core/system/threads.py (DIP_THREADS, OMP_NUM_THREADS, else the cores free then).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import mlx.core as mx

from dip_core.model.config import BN_EPS, LEAKY_SLOPE, Act, Downsample, Pad, SkipConfig, Upsample
from dip_core.system.threads import THREADS_VAR, choose_threads
from dip_mlx.blas import serial_blas_path

ENV_VAR = "DIP_CPU_KERNELS"
WINOGRAD_VAR = "DIP_WINOGRAD"

try:
    from dip_mlx import _cpu_kernels as _k
except ImportError:  # not built (macOS, no compiler): MLX's own ops
    _k = None


def _self_test() -> str | None:
    """None when the module works with this MLX; else why not."""
    if _k is None:
        return "not built (python -m dip_mlx.build_kernels)"
    if _k.mlx_version != mx.__version__:
        rebuild = "rebuild: python -m dip_mlx.build_kernels"
        return f"built for mlx {_k.mlx_version}, mlx {mx.__version__} installed ({rebuild})"
    try:
        with mx.stream(mx.cpu):
            x = mx.ones((1, 3, 3, 2))
            y = _k.conv(x, mx.ones((1, 1, 1, 2)), 1, [0, 0, 3, 3])
            mx.eval(y)
        if float(y[0, 0, 0, 0]) != 2.0:
            return "self-test gave a wrong result"
    except (TypeError, RuntimeError, ValueError) as exc:  # e.g. a nanobind ABI that does not match MLX's
        return f"self-test failed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
    return None


@functools.lru_cache(maxsize=1)
def _setup() -> str | None:
    """Self-test once (which starts the pool) and hand the kernels the serial BLAS; None when they work."""
    problem = _self_test()
    if problem is None and (path := serial_blas_path()) is not None:
        _k.use_serial_blas(path)
    return problem


def _start(threads: int | None = None) -> str | None:
    """`_setup`, starting the pool with `threads` threads (None: the automatic choice) if it has not started."""
    if _k is None or _setup.cache_info().currsize:
        return _setup()
    previous = os.environ.get(THREADS_VAR)
    os.environ[THREADS_VAR] = str(threads if threads is not None else choose_threads().threads)
    try:
        return _setup()
    finally:  # the pool has read it: leave the user's setting as it was for the other backend
        if previous is None:
            del os.environ[THREADS_VAR]
        else:
            os.environ[THREADS_VAR] = previous


def start_pool(threads: int) -> int | None:
    """Start the kernels' pool with `threads` threads unless it runs already; its size (None: no kernels)."""
    if not enabled(threads):
        return None
    return _k.threads()


def status() -> str:
    """One line for `dip doctor` and the fingerprint."""
    if os.environ.get(ENV_VAR, "").strip() == "0":
        return f"off ({ENV_VAR}=0)"
    problem = _start()
    if problem is not None:
        return problem
    blas = "a single-threaded BLAS per thread" if _k.serial_blas() else "MLX's BLAS"
    n = _k.threads()
    return f"on ({n} thread{'s' if n != 1 else ''}, products on {blas})"


def enabled(threads: int | None = None) -> bool:
    """The kernels work and are on (starting their pool with `threads` threads if it has not started)."""
    return os.environ.get(ENV_VAR, "").strip() != "0" and _start(threads) is None


def supports(cfg: SkipConfig) -> bool:
    """The network's layers are all ones these kernels implement."""
    return (
        cfg.act in (Act.LEAKY_RELU, Act.NONE)
        and cfg.downsample is Downsample.STRIDE
        and cfg.upsample in (Upsample.BILINEAR, Upsample.NEAREST)
        and all(k % 2 == 1 for k in (cfg.filter_size_down, cfg.filter_size_up, cfg.filter_skip_size))
    )


def usable(cfg: SkipConfig, device: mx.Device, dtype: mx.Dtype = mx.float32) -> bool:
    """Build this network on the kernels? (the CPU, float32, supported layers; decided once per network)."""
    return enabled() and device == mx.cpu and dtype == mx.float32 and supports(cfg)


@dataclass(frozen=True)
class ActBuf:
    """An activation: `array` (1, Hb, Wb, C) whose region rows r0.., cols c0.. of size h x w is the image."""

    array: mx.array
    r0: int
    c0: int
    h: int
    w: int
    border: int = 0  # rows/columns of real padding around the region (0: none, or junk)

    @property
    def region(self) -> list[int]:
        return [self.r0, self.c0, self.h, self.w]

    def image(self) -> mx.array:
        return self.array[:, self.r0 : self.r0 + self.h, self.c0 : self.c0 + self.w, :]


def from_image(x: mx.array, border: int, mode: Pad) -> ActBuf:
    """An input image padded for the convolutions that read it (MLX's own pad)."""
    h, w = x.shape[1], x.shape[2]
    if border:
        x = mx.pad(x, [(0, 0), (border, border), (border, border), (0, 0)], mode=_mx_mode(mode))
    return ActBuf(x, border, border, h, w, border)


def _mx_mode(mode: Pad) -> str:
    return "reflect" if mode is Pad.REFLECTION else "constant"


def winograd() -> bool:
    return os.environ.get(WINOGRAD_VAR, "").strip() != "0"


def conv(x: ActBuf, weight: mx.array, stride: int) -> ActBuf:
    """Convolution (no bias) with the padding (k-1)/2 that x carries; stride 1 or 2."""
    k = weight.shape[1]
    if x.border < (k - 1) // 2:
        raise ValueError(f"a {k}x{k} convolution needs {(k - 1) // 2} pixels of padding, the input has {x.border}")
    if k == 3 and stride == 1 and winograd():
        return ActBuf(_k.winograd_conv(x.array, weight, x.region), 0, 0, x.h, x.w)
    y = _k.conv(x.array, weight, stride, x.region)
    q = (k - 1) // 2
    ho = (x.h + 2 * q - k) // stride + 1
    wo = (x.w + 2 * q - k) // stride + 1
    return ActBuf(y, 0, 0, ho, wo)


def bn_act(parts: list[ActBuf], weight: mx.array, bias: mx.array, act: Act, pad: int, mode: Pad) -> ActBuf:
    """BatchNorm (batch statistics) of the channel concatenation of `parts`, the activation, then padding."""
    slope = LEAKY_SLOPE if act is Act.LEAKY_RELU else 1.0
    out, _, _ = _k.bn_act(
        [p.array for p in parts], [p.region for p in parts], weight, bias, pad, mode is Pad.REFLECTION, slope, BN_EPS
    )
    return ActBuf(out, pad, pad, parts[0].h, parts[0].w, pad)


def upsample(x: ActBuf, h: int, w: int, mode: Upsample) -> ActBuf:
    """x2 upsampling cropped to (h, w)."""
    return ActBuf(_k.upsample(x.array, x.region, h, w, mode is Upsample.BILINEAR), 0, 0, h, w)
