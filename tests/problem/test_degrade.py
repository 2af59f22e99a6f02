"""Degradations: kernels, numpy operators, and the same operators in both backends."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.problem.degrade import (
    DegradationError,
    Operator,
    OpKind,
    add_noise,
    blur,
    drop_mask,
    jpeg_compress,
    lanczos2_kernel,
    lanczos2_taps,
    lanczos_downsample,
    parse_kernel,
    text_mask,
)
from tests.images import synthetic


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos_kernel(factor):
    taps = lanczos2_taps(factor)
    assert taps.size == 4 * factor and np.isclose(taps.sum(), 1) and np.allclose(taps, taps[::-1])
    assert np.isclose(lanczos2_kernel(factor).sum(), 1)
    flat = np.full((8 * factor, 5 * factor, 3), 0.3, np.float32)
    small = lanczos_downsample(flat, factor)
    assert small.shape == (8, 5, 3) and np.allclose(small, 0.3, atol=1e-6)


@pytest.mark.parametrize("spec, size", [("gaussian:1.5", 11), ("box:5", 5), ("motion:9,30", 11)])
def test_kernels_are_normalised_and_keep_constants(spec, size):
    k = parse_kernel(spec)
    assert k.shape == (size, size) and np.isclose(k.sum(), 1)
    flat = np.full((20, 17, 1), 0.7, np.float32)
    assert np.allclose(blur(flat, k), 0.7, atol=1e-6)


@pytest.mark.parametrize("spec", ["gaussian:0", "box:4", "motion:0,10", "sharpen:3", "gaussian:x", "box:1,2"])
def test_bad_kernel_specs(spec):
    with pytest.raises(DegradationError):
        parse_kernel(spec)


def test_kernel_from_an_image(tmp_path):
    from PIL import Image

    k = np.zeros((5, 5), np.uint8)
    k[2, :] = 255
    Image.fromarray(k).save(tmp_path / "k.png")
    kernel = parse_kernel(str(tmp_path / "k.png"))
    assert np.isclose(kernel.sum(), 1) and np.allclose(kernel[2], 0.2)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "even.png")
    with pytest.raises(DegradationError, match="odd"):
        parse_kernel(str(tmp_path / "even.png"))


def test_corruptions_are_seeded():
    x = synthetic(24, 30)
    assert np.array_equal(add_noise(x, 25, 1), add_noise(x, 25, 1))
    assert 19 < 10 * np.log10(1 / np.mean((add_noise(x, 25, 1) - x) ** 2)) < 22
    m = drop_mask(100, 100, 0.5, 3)
    assert m.shape == (100, 100, 1) and 0.45 < m.mean() < 0.55
    with pytest.raises(DegradationError):
        drop_mask(10, 10, 1.0, 0)
    with pytest.raises(DegradationError):
        add_noise(x, -1, 0)
    assert jpeg_compress(x, 10).shape == x.shape
    t = text_mask(64, 80, 0)
    assert t.shape == (64, 80, 1) and 0.5 < t.mean() < 1


OPS = [
    Operator(OpKind.IDENTITY),
    Operator(OpKind.MASK, mask=drop_mask(40, 48, 0.5, 0)),
    Operator(OpKind.DOWNSAMPLE, factor=2),
    Operator(OpKind.DOWNSAMPLE, factor=4),
    Operator(OpKind.DOWNSAMPLE, factor=8),
    Operator(OpKind.BLUR, kernel=parse_kernel("gaussian:1.2")),
    Operator(OpKind.BLUR, kernel=parse_kernel("motion:7,60")),
]


@pytest.mark.parametrize("op", OPS, ids=lambda o: f"{o.kind.value}{o.factor}")
def test_backend_operators_match_numpy(op):
    """The loss of each backend applies exactly the numpy operator (values and gradients)."""
    mx = pytest.importorskip("mlx.core")
    torch = pytest.importorskip("torch")
    from dip_mlx.ops import MLXOperator
    from dip_torch.ops import TorchOperator

    x = synthetic(40, 48)
    ref = op.apply(x)
    m_op, t_op = MLXOperator(op), TorchOperator(op, torch.device("cpu"))
    out_m = np.array(m_op(mx.array(x[None])))[0]
    xt = torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).requires_grad_()
    out_t = t_op(xt)
    np.testing.assert_allclose(out_m, ref, atol=2e-6)
    np.testing.assert_allclose(out_t.detach()[0].numpy().transpose(1, 2, 0), ref, atol=2e-6)
    ct = np.random.default_rng(0).standard_normal(ref.shape).astype(np.float32)
    (out_t * torch.from_numpy(ct.transpose(2, 0, 1)[None].copy())).sum().backward()
    grad_m = np.array(mx.grad(lambda a: mx.sum(m_op(a) * mx.array(ct[None])))(mx.array(x[None])))[0]
    np.testing.assert_allclose(grad_m, xt.grad[0].numpy().transpose(1, 2, 0), atol=1e-5)
