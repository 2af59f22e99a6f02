"""Every layer type of the skip network: MLX against PyTorch, values and input gradients."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.model.config import Act, Downsample, Pad, Upsample

mx = pytest.importorskip("mlx.core")
torch = pytest.importorskip("torch")
import dip_mlx.layers as ml  # noqa: E402
import dip_torch.layers as tl  # noqa: E402

ATOL = 1e-5


def run_torch(fn, x_nhwc: np.ndarray, ct_nhwc_shape_fn=None, seed: int = 0):
    x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()).requires_grad_()
    out = fn(x)
    ct = np.random.default_rng(seed).standard_normal(tuple(out.shape)).astype(np.float32)
    (out * torch.from_numpy(ct)).sum().backward()
    return out.detach().numpy().transpose(0, 2, 3, 1), x.grad.numpy().transpose(0, 2, 3, 1), ct.transpose(0, 2, 3, 1)


def run_mlx(fn, x_nhwc: np.ndarray, ct_nhwc: np.ndarray):
    out = fn(mx.array(x_nhwc))
    grad = mx.grad(lambda a: mx.sum(fn(a) * mx.array(ct_nhwc)))(mx.array(x_nhwc))
    return np.array(out), np.array(grad)


def assert_same(fn_mlx, fn_torch, x: np.ndarray, atol: float = ATOL):
    out_t, grad_t, ct = run_torch(fn_torch, x)
    out_m, grad_m = run_mlx(fn_mlx, x, ct)
    assert out_m.shape == out_t.shape
    np.testing.assert_allclose(out_m, out_t, atol=atol, rtol=1e-5)
    np.testing.assert_allclose(grad_m, grad_t, atol=atol, rtol=1e-5)


SIZES = [(8, 8), (7, 9), (5, 6)]


@pytest.fixture
def x(request, rng):
    h, w = request.param
    return rng.standard_normal((1, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("x", SIZES, indirect=True)
@pytest.mark.parametrize("mode", list(Pad))
@pytest.mark.parametrize("amount", [1, 2])
def test_padding(x, mode, amount):
    assert_same(lambda a: ml.pad(a, amount, mode), lambda a: tl.pad(a, amount, mode), x)


@pytest.mark.parametrize("x", SIZES, indirect=True)
@pytest.mark.parametrize("mode", list(Upsample))
def test_upsampling(x, mode):
    assert_same(lambda a: ml.upsample(a, mode), lambda a: tl.upsample(a, mode), x)


@pytest.mark.parametrize("x", SIZES, indirect=True)
@pytest.mark.parametrize("mode", [Downsample.AVG, Downsample.MAX])
def test_pooling_rounds_odd_sides_up(x, mode):
    assert_same(lambda a: ml.downsample(a, mode), lambda a: tl.downsample(a, mode), x)
    out = np.array(ml.downsample(mx.array(x), mode))
    assert out.shape[1:3] == (-(-x.shape[1] // 2), -(-x.shape[2] // 2))


@pytest.mark.parametrize("x", SIZES, indirect=True)
@pytest.mark.parametrize("act", list(Act))
def test_activations(x, act):
    assert_same(lambda a: ml.activation(a, act), lambda a: tl.activation(a, act), x)


def test_leaky_relu_slope_is_the_papers(rng):
    out = np.array(ml.activation(mx.array(np.array([-1.0, 2.0], np.float32)), Act.LEAKY_RELU))
    np.testing.assert_allclose(out, [-0.2, 2.0])


@pytest.mark.parametrize("x", SIZES, indirect=True)
def test_batchnorm_uses_batch_statistics(x, rng):
    w = rng.standard_normal(3).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    bn_m, bn_t = ml.BatchNorm(3), tl.BatchNorm(3)
    bn_m.weight, bn_m.bias = mx.array(w), mx.array(b)
    with torch.no_grad():
        bn_t.weight.copy_(torch.from_numpy(w))
        bn_t.bias.copy_(torch.from_numpy(b))
    assert_same(bn_m, bn_t, x * 3 + 1, atol=1e-4)
    out = np.array(bn_m(mx.array(x)))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), b, atol=1e-5)


@pytest.mark.parametrize("x", SIZES, indirect=True)
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("pad_mode", list(Pad))
@pytest.mark.parametrize("halve", [None, *Downsample])
def test_convolution(x, kernel, pad_mode, halve, rng):
    if pad_mode is Pad.REFLECTION and kernel == 5 and min(x.shape[1:3]) < 3:
        pytest.skip("reflection needs a side larger than the padding")
    w = (rng.standard_normal((4, 3, kernel, kernel)) / kernel).astype(np.float32)  # canonical OIHW
    b = rng.standard_normal(4).astype(np.float32)
    conv_m = ml.Conv(3, 4, kernel, bias=True, pad=pad_mode, halve=halve)
    conv_m.weight, conv_m.bias = mx.array(w.transpose(0, 2, 3, 1)), mx.array(b)
    conv_t = tl.Conv(3, 4, kernel, bias=True, pad=pad_mode, halve=halve)
    with torch.no_grad():
        conv_t.weight.copy_(torch.from_numpy(w))
        conv_t.bias.copy_(torch.from_numpy(b))
    assert_same(conv_m, conv_t, x, atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 5), (2, 3)])
@pytest.mark.parametrize("mode", list(Upsample))
def test_stencil_upsampling_equals_mlx_upsample(size, mode, rng):
    """The fast slice stencils replace mlx.nn.Upsample exactly (values and gradients)."""
    x = rng.standard_normal((1, *size, 3)).astype(np.float32)
    ct = mx.array(rng.standard_normal((1, 2 * size[0], 2 * size[1], 3)).astype(np.float32))
    fast, ref = ml.upsample(mx.array(x), mode), ml.upsample_reference(mx.array(x), mode)
    np.testing.assert_allclose(np.array(fast), np.array(ref), atol=1e-6)
    g_fast = mx.grad(lambda a: mx.sum(ml.upsample(a, mode) * ct))(mx.array(x))
    g_ref = mx.grad(lambda a: mx.sum(ml.upsample_reference(a, mode) * ct))(mx.array(x))
    np.testing.assert_allclose(np.array(g_fast), np.array(g_ref), atol=1e-5)


@pytest.mark.parametrize("size", [(10, 10), (11, 9), (9, 12), (3, 3)])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_space_to_depth_stride2_equals_strided_conv(size, kernel, rng):
    """The polyphase stride-2 convolution replaces mx.conv2d(stride=2) (values and both gradients)."""
    if kernel > min(size):
        pytest.skip("kernel larger than the input")
    x = mx.array(rng.standard_normal((1, *size, 4)).astype(np.float32))
    w = mx.array(rng.standard_normal((6, kernel, kernel, 4)).astype(np.float32))
    ref = mx.conv2d(x, w, stride=2)
    fast = ml.conv2d_stride2(x, w)
    assert fast.shape == ref.shape
    np.testing.assert_allclose(np.array(fast), np.array(ref), atol=1e-5)
    ct = mx.array(rng.standard_normal(ref.shape).astype(np.float32))
    g_ref = mx.grad(lambda a, b: mx.sum(mx.conv2d(a, b, stride=2) * ct), argnums=(0, 1))(x, w)
    g_fast = mx.grad(lambda a, b: mx.sum(ml.conv2d_stride2(a, b) * ct), argnums=(0, 1))(x, w)
    for a, b in zip(g_fast, g_ref, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-4)


@pytest.mark.parametrize("size", [(10, 10), (7, 9), (5, 13)])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
def test_shifted_gemm_conv_equals_mlx_conv(size, kernel, rng):
    """The shifted-GEMM convolution replaces mx.conv2d (values and both gradients)."""
    x = mx.array(rng.standard_normal((1, *size, 5)).astype(np.float32))
    w = mx.array(rng.standard_normal((3, kernel, kernel, 5)).astype(np.float32))
    ref = mx.conv2d(x, w)
    np.testing.assert_allclose(np.array(ml.conv2d_shifted(x, w)), np.array(ref), atol=1e-5)
    ct = mx.array(rng.standard_normal(ref.shape).astype(np.float32))
    g_ref = mx.grad(lambda a, b: mx.sum(mx.conv2d(a, b) * ct), argnums=(0, 1))(x, w)
    g_new = mx.grad(lambda a, b: mx.sum(ml.conv2d_shifted(a, b) * ct), argnums=(0, 1))(x, w)
    for a, b in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-4)


def test_shifted_gemm_conv_is_at_least_as_accurate(rng):
    """Against a float64 reference the shifted-GEMM convolution errs no more than mx.conv2d (or torch fp32)."""
    x = rng.standard_normal((1, 34, 37, 32)).astype(np.float32)
    w = (0.1 * rng.standard_normal((16, 3, 3, 32))).astype(np.float32)
    ref = sum(
        np.einsum("hwc,oc->hwo", x[0, i : i + 32, j : j + 35].astype(np.float64), w[:, i, j].astype(np.float64))
        for i in range(3)
        for j in range(3)
    )

    def rms(y):
        return float(np.sqrt(np.mean((np.array(y)[0] - ref) ** 2)))

    assert rms(ml.conv2d_shifted(mx.array(x), mx.array(w))) <= rms(mx.conv2d(mx.array(x), mx.array(w)))


@pytest.mark.parametrize("shape", [(1, 7, 9, 5), (1, 2, 2, 3), (1, 16, 11, 32)])
def test_closed_form_batch_norm_gradient_equals_autodiff(shape, rng):
    """The hand-written BatchNorm gradient replaces MLX's autodiff of it (values and all three gradients)."""
    x = mx.array((3 + 2 * rng.standard_normal(shape)).astype(np.float32))
    w = mx.array(rng.standard_normal(shape[-1]).astype(np.float32))
    b = mx.array(rng.standard_normal(shape[-1]).astype(np.float32))
    ct = mx.array(rng.standard_normal(shape).astype(np.float32))
    np.testing.assert_allclose(np.array(ml.batch_norm_closed_form(x, w, b)), np.array(ml.batch_norm(x, w, b)))
    g_ref = mx.grad(lambda *a: mx.sum(ml.batch_norm(*a) * ct), argnums=(0, 1, 2))(x, w, b)
    g_new = mx.grad(lambda *a: mx.sum(ml.batch_norm_closed_form(*a) * ct), argnums=(0, 1, 2))(x, w, b)
    for a, r in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(r), rtol=1e-4, atol=1e-4)
