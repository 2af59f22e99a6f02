"""The compiled MLX CPU kernels against the MLX formulations they replace: values and gradients."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from dip_core.model.config import BN_EPS, LEAKY_SLOPE, Act, Pad, Upsample  # noqa: E402
from dip_mlx import cpu_kernels as ck  # noqa: E402
from dip_mlx import layers as ml  # noqa: E402
from tests.model.test_skip import KNOBS, SMALL  # noqa: E402

pytestmark = pytest.mark.skipif(not ck.enabled(), reason=f"CPU kernels: {ck.status()}")

RTOL = ATOL = 2e-5


@pytest.fixture(autouse=True)
def _on_cpu():
    with mx.stream(mx.cpu):
        yield


def _rand(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> mx.array:
    return mx.array((shift + scale * rng.standard_normal(shape)).astype(np.float32))


def _grads(fn, args: list[mx.array], ct: mx.array) -> list[mx.array]:
    """Gradients of sum(fn(*args) * ct) with respect to every argument."""
    return mx.grad(lambda *a: mx.sum(fn(*a) * ct), argnums=tuple(range(len(args))))(*args)


def _close(a: mx.array, b: mx.array, tol: float = RTOL) -> None:
    a, b = np.array(a), np.array(b)
    scale = max(float(np.abs(b).max()), 1.0)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def _buffer(rng, h: int, w: int, c: int, border: int) -> ck.ActBuf:
    """A buffer with `border` pixels of reflection padding around an h x w region."""
    x = _rand(rng, 1, h, w, c)
    return ck.from_image(x, border, Pad.REFLECTION)


@pytest.mark.parametrize("winograd", ["1", "0"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize(("h", "w"), [(9, 13), (16, 16), (7, 5), (1, 2), (2, 1)])
def test_conv_matches_mlx_conv(winograd, stride, k, h, w, rng, monkeypatch):
    """Tap-by-tap GEMMs and (3x3, stride 1) the Winograd form, against mx.conv2d."""
    monkeypatch.setenv(ck.WINOGRAD_VAR, winograd)
    border = max((k - 1) // 2, 1)
    x = _buffer(rng, h, w, 6, border)
    weight = _rand(rng, 5, k, k, 6, scale=0.3)
    q = (k - 1) // 2
    d = border - q

    def reference(buf, wt):
        sub = buf[:, d : buf.shape[1] - d, d : buf.shape[2] - d, :]
        return mx.conv2d(sub, wt, stride=stride)

    def kernels(buf, wt):
        return ck.conv(ck.ActBuf(buf, x.r0, x.c0, x.h, x.w, x.border), wt, stride).image()

    ref = reference(x.array, weight)
    got = kernels(x.array, weight)
    assert got.shape == ref.shape
    _close(got, ref)
    ct = _rand(rng, *ref.shape)
    for g, r in zip(_grads(kernels, [x.array, weight], ct), _grads(reference, [x.array, weight], ct), strict=True):
        _close(g, r)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("mode", [Pad.REFLECTION, Pad.ZERO])
@pytest.mark.parametrize("act", [Act.LEAKY_RELU, Act.NONE])
def test_bn_act_matches_batch_norm_activation_pad(parts, pad, mode, act, rng):
    h, w = 7, 10
    ys = [_rand(rng, 1, h + 2, w + 3, c, scale=2.0, shift=1.5) for c in (3, 5)[:parts]]
    regions = [(1, 2), (0, 1)][:parts]  # the region sits at a different place in each buffer
    c_total = sum(y.shape[-1] for y in ys)
    gamma, beta = _rand(rng, c_total), _rand(rng, c_total)

    def crop(y, r):
        return y[:, r[0] : r[0] + h, r[1] : r[1] + w, :]

    def reference(*args):
        x = mx.concatenate([crop(y, r) for y, r in zip(args[:parts], regions, strict=True)], axis=-1)
        return ml.pad(ml.activation(ml.batch_norm(x, args[parts], args[parts + 1]), act), pad, mode)

    def kernels(*args):
        bufs = [ck.ActBuf(y, r[0], r[1], h, w) for y, r in zip(args[:parts], regions, strict=True)]
        return ck.bn_act(bufs, args[parts], args[parts + 1], act, pad, mode).array

    args = [*ys, gamma, beta]
    _close(kernels(*args), reference(*args))
    ct = _rand(rng, 1, h + 2 * pad, w + 2 * pad, c_total)
    for g, r in zip(_grads(kernels, args, ct), _grads(reference, args, ct), strict=True):
        _close(g, r, 1e-4)


def test_bn_act_gradient_is_zero_outside_the_region(rng):
    """The convolution's gradient reads the junk columns as zero: the kernel must write zeros there."""
    y = _rand(rng, 1, 6, 9, 4)
    gamma, beta = _rand(rng, 4), _rand(rng, 4)
    ct = _rand(rng, 1, 6, 7, 4)

    def loss(y):
        return mx.sum(ck.bn_act([ck.ActBuf(y, 0, 0, 6, 7)], gamma, beta, Act.NONE, 0, Pad.ZERO).array * ct)

    g = mx.grad(loss)(y)
    assert np.all(np.array(g)[:, :, 7:, :] == 0)


@pytest.mark.parametrize("mode", [Upsample.BILINEAR, Upsample.NEAREST])
@pytest.mark.parametrize(("h", "w", "out_h", "out_w"), [(5, 7, 10, 14), (5, 7, 9, 13), (1, 3, 2, 5), (4, 1, 7, 2)])
def test_upsample_matches_slice_stencils(mode, h, w, out_h, out_w, rng):
    x = _rand(rng, 1, h + 2, w + 2, 3)

    def reference(buf):
        return ml.upsample(buf[:, 1 : 1 + h, 1 : 1 + w, :], mode)[:, :out_h, :out_w, :]

    def kernels(buf):
        return ck.upsample(ck.ActBuf(buf, 1, 1, h, w), out_h, out_w, mode).array

    _close(kernels(x), reference(x))
    ct = _rand(rng, 1, out_h, out_w, 3)
    _close(_grads(kernels, [x], ct)[0], _grads(reference, [x], ct)[0])


def test_leaky_slope_is_the_papers(rng):
    y = _rand(rng, 1, 4, 4, 2)
    out = ck.bn_act([ck.ActBuf(y, 0, 0, 4, 4)], mx.ones((2,)), mx.zeros((2,)), Act.LEAKY_RELU, 0, Pad.ZERO).array
    xhat = (np.array(y) - np.array(y).mean(axis=(0, 1, 2))) / np.sqrt(np.array(y).var(axis=(0, 1, 2)) + BN_EPS)
    np.testing.assert_allclose(np.array(out), np.where(xhat > 0, xhat, LEAKY_SLOPE * xhat), rtol=1e-5, atol=1e-5)


def _net_outputs(cfg, size, kernels: str, monkeypatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from dip_core.backend import get_backend
    from dip_core.model.inputs import make_input
    from dip_core.model.weights import init_weights

    monkeypatch.setenv(ck.ENV_VAR, kernels)
    backend = get_backend("mlx", "cpu")
    net = backend.build(cfg, init_weights(cfg, 0))
    z = make_input("noise", cfg.in_channels, *size, seed=1)
    target = np.random.default_rng(2).random((*size, cfg.out_channels), dtype=np.float32)
    return backend.forward(net, z), backend.loss_and_grads(net, z, target)[1]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "paper")
@pytest.mark.parametrize("size", [(17, 17), (23, 40)])
def test_network_on_the_kernels_matches_mlx_ops(knobs, size, monkeypatch):
    """The whole skip network, forward and every gradient, with and without the kernels."""
    cfg = SMALL.with_(**knobs)
    if not ck.supports(cfg):
        pytest.skip("layers the kernels do not implement run on MLX's ops")
    out, grads = _net_outputs(cfg, size, "1", monkeypatch)
    ref_out, ref_grads = _net_outputs(cfg, size, "0", monkeypatch)
    np.testing.assert_allclose(out, ref_out, atol=5e-5 * max(1.0, float(np.abs(ref_out).max())))
    top = max(float(np.abs(g).max()) for g in ref_grads.values())
    for name, g in grads.items():
        if name.endswith("conv.bias") and not name.startswith("head"):
            # A bias before BatchNorm cancels: its gradient is zero (MLX's ops give rounding noise).
            assert not np.any(g), name
            continue
        np.testing.assert_allclose(g, ref_grads[name], atol=2e-4 * top, err_msg=name)


def test_kernels_only_on_the_cpu(monkeypatch):
    """A GPU device (Metal, CUDA) runs MLX's own ops: the kernels never leave the CPU, and the choice
    is made once, when the network is built for its backend's device."""
    from dip_core.backend import get_backend
    from dip_core.model.weights import init_weights

    assert ck.usable(SMALL, mx.cpu) and not ck.usable(SMALL, mx.gpu)
    assert not ck.usable(SMALL, mx.cpu, mx.bfloat16)
    backend = get_backend("mlx", "cpu")
    assert backend.build(SMALL, init_weights(SMALL, 0)).kernels
    monkeypatch.setattr(backend, "mx_device", mx.gpu)
    assert not backend.build(SMALL, init_weights(SMALL, 0)).kernels


def test_unsupported_layers_fall_back():
    for knobs in ({"act": "Swish"}, {"act": "ELU"}, {"downsample": "avg"}, {"downsample": "max"}):
        assert not ck.supports(SMALL.with_(**knobs))
    assert ck.supports(SMALL)


@pytest.mark.parametrize(
    ("env", "expect"),
    [({"DIP_SERIAL_BLAS": "none"}, "MLX's BLAS"), ({"DIP_THREADS": "3"}, "3 threads")],
    ids=["mlx-blas", "3-threads"],
)
def test_kernels_in_other_thread_setups(env, expect):
    """Products on MLX's threaded BLAS from one thread, or split three ways: the same results."""
    code = (
        "import numpy as np, mlx.core as mx\n"
        "from dip_mlx import cpu_kernels as ck\n"
        "from dip_core.model.config import Pad\n"
        f"assert {expect!r} in ck.status(), ck.status()\n"
        "x = ck.from_image(mx.array(np.random.default_rng(0).random((1, 9, 11, 5), np.float32)), 1, Pad.REFLECTION)\n"
        "w = mx.array(np.random.default_rng(1).random((4, 3, 3, 5), np.float32))\n"
        "for s in (1, 2):\n"
        "    ref = mx.conv2d(x.array, w, stride=s)\n"
        "    got = ck.conv(x, w, s).image()\n"
        "    assert np.allclose(np.array(got), np.array(ref), atol=1e-4), s\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
