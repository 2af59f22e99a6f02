"""Building blocks of the skip network in MLX (NHWC)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from dip_core.model.config import BN_EPS, LEAKY_SLOPE, Act, Downsample, Pad, Upsample


def activation(x: mx.array, act: Act) -> mx.array:
    if act is Act.LEAKY_RELU:
        return mx.maximum(x, LEAKY_SLOPE * x)
    if act is Act.SWISH:
        return x * mx.sigmoid(x)
    if act is Act.ELU:
        return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))
    return x


def pad(x: mx.array, amount: int, mode: Pad) -> mx.array:
    if amount == 0:
        return x
    widths = [(0, 0), (amount, amount), (amount, amount), (0, 0)]
    return mx.pad(x, widths, mode="reflect" if mode is Pad.REFLECTION else "constant")


def downsample(x: mx.array, mode: Downsample) -> mx.array:
    """2x2 pooling that rounds odd sides up (the odd edge row/column is repeated)."""
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        x = mx.pad(x, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)], mode="edge")
        h, w = h + h % 2, w + w % 2
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return blocks.mean(axis=(2, 4)) if mode is Downsample.AVG else blocks.max(axis=(2, 4))


_REFERENCE_UPSAMPLERS = {
    Upsample.BILINEAR: nn.Upsample(scale_factor=2.0, mode="linear", align_corners=False),
    Upsample.NEAREST: nn.Upsample(scale_factor=2.0, mode="nearest"),
}


def upsample_reference(x: mx.array, mode: Upsample) -> mx.array:
    """mlx.nn.Upsample: gather-based, its backward a scatter (slow on the CPU)."""
    return _REFERENCE_UPSAMPLERS[mode](x)


def _interleave(even: mx.array, odd: mx.array, axis: int) -> mx.array:
    """Alternate slices of `even` and `odd` along `axis` (which doubles in size)."""
    shape = list(even.shape)
    shape[axis] *= 2
    return mx.stack([even, odd], axis=axis + 1).reshape(shape)


def _slice(x: mx.array, axis: int, start: int | None, stop: int | None) -> mx.array:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _bilinear2(x: mx.array, axis: int) -> mx.array:
    """x2 linear interpolation along one axis, align_corners=False: taps 0.75/0.25, edges clamped."""
    if x.shape[axis] == 1:
        return _interleave(x, x, axis)
    prev = mx.concatenate([_slice(x, axis, 0, 1), _slice(x, axis, None, -1)], axis=axis)
    nxt = mx.concatenate([_slice(x, axis, 1, None), _slice(x, axis, -1, None)], axis=axis)
    return _interleave(0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt, axis)


def upsample(x: mx.array, mode: Upsample) -> mx.array:
    """x2 upsampling as fixed slice stencils: exact, and its backward stays cheap."""
    if mode is Upsample.BILINEAR:
        return _bilinear2(_bilinear2(x, 1), 2)
    n, h, w, c = x.shape
    return mx.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def conv2d_stride2(x: mx.array, w: mx.array) -> mx.array:
    """Stride-2 valid convolution as a stride-1 one on the space-to-depth input.

    The four polyphase components of x become channels, the kernel is split the
    same way (zero taps where k is odd), so forward and both gradients stay on
    the GEMM path; MLX's CPU backward of a strided convolution does not.
    """
    n, rows, cols, c = x.shape
    o, k = w.shape[0], w.shape[1]
    half = (k + 1) // 2
    x = mx.pad(x, [(0, 0), (0, rows % 2), (0, cols % 2), (0, 0)])  # the extra row/column meets only zero taps
    r2, c2 = x.shape[1] // 2, x.shape[2] // 2
    xs = x.reshape(n, r2, 2, c2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, r2, c2, 4 * c)
    wp = mx.pad(w, [(0, 0), (0, 2 * half - k), (0, 2 * half - k), (0, 0)])
    ws = wp.reshape(o, half, 2, half, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(o, half, half, 4 * c)
    out = plain_conv(xs, ws)
    return out[:, : (rows - k) // 2 + 1, : (cols - k) // 2 + 1, :]


def _tap_gemms(flat: mx.array, taps: mx.array, width: int, k: int, rows: int) -> mx.array:
    """Sum over the k*k taps of (the rows of `flat` shifted to the tap) @ (the tap's matrix).

    `flat` is an image of row length `width` as a (pixels, channels) matrix: the
    pixel under tap (i, j) of output pixel p is row p + i * width + j, so every
    tap is a contiguous block of rows, and no im2col copy is made.
    """
    y = None
    for t in range(k * k):
        offset = (t // k) * width + t % k
        block = flat[offset : offset + rows]
        y = block @ taps[t] if y is None else mx.addmm(y, block, taps[t])
    return y


def _shifted_conv(x: mx.array, taps: mx.array, k: int) -> mx.array:
    """Valid stride-1 convolution of one image (1, H, W, C) with taps (k*k, C, O)."""
    _, rows, cols, c = x.shape
    out_rows, out_cols = rows - k + 1, cols - k + 1
    # Outputs are computed on the input's full row length; the last k-1 columns of
    # each row wrap around and are cut off (the final ones would run past the end).
    n = out_rows * cols - (k - 1)
    y = _tap_gemms(x.reshape(rows * cols, c), taps, cols, k, n)
    y = mx.pad(y, [(0, k - 1), (0, 0)]).reshape(1, out_rows, cols, -1)
    return y[:, :, :out_cols, :]


@mx.custom_function
def conv2d_shifted(x: mx.array, w: mx.array) -> mx.array:
    """Stride-1 valid convolution of one image as k*k shifted GEMMs, forward and backward.

    Same values as mx.conv2d. On the CPU, MLX's convolution spends more time
    copying its im2col matrix than multiplying; here every product reads the
    input in place, and both gradients are built the same way.
    """
    k = w.shape[1]
    return _shifted_conv(x, w.transpose(1, 2, 3, 0).reshape(k * k, w.shape[3], w.shape[0]), k)


@conv2d_shifted.vjp
def _conv2d_shifted_vjp(primals: list[mx.array], dy: mx.array, out: mx.array) -> tuple[mx.array, mx.array]:
    x, w = primals
    _, rows, cols, c = x.shape
    o, k = w.shape[0], w.shape[1]
    out_rows = rows - k + 1
    n = out_rows * cols - (k - 1)
    # Weight gradient: dy on the input's row length (zero in the wrapped columns) against each tap's rows.
    dy_flat = mx.pad(dy, [(0, 0), (0, 0), (0, k - 1), (0, 0)]).reshape(out_rows * cols, o)[:n]
    x_flat = x.reshape(rows * cols, c)
    offsets = [(t // k) * cols + t % k for t in range(k * k)]
    dw = mx.stack([x_flat[s : s + n].T @ dy_flat for s in offsets])  # (k*k, C, O)
    dw = dw.reshape(k, k, c, o).transpose(3, 0, 1, 2)
    # Input gradient: the full correlation of dy with the flipped kernel, channels swapped.
    dy_padded = mx.pad(dy, [(0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0)]) if k > 1 else dy
    flipped = w[:, ::-1, ::-1, :].transpose(1, 2, 0, 3).reshape(k * k, o, c)
    return _shifted_conv(dy_padded, flipped, k), dw


def plain_conv(x: mx.array, w: mx.array) -> mx.array:
    """Stride-1 convolution: shifted GEMMs on the CPU, MLX's own kernel on a GPU."""
    if mx.default_device() == mx.cpu and x.shape[0] == 1:
        return conv2d_shifted(x, w)
    return mx.conv2d(x, w)


def strided_conv(x: mx.array, w: mx.array) -> mx.array:
    """Stride-2 convolution: space-to-depth on the CPU, MLX's own kernel on a GPU."""
    if mx.default_device() == mx.cpu:
        return conv2d_stride2(x, w)
    return mx.conv2d(x, w, stride=2)


class BatchNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        if mx.default_device() == mx.cpu:
            return batch_norm_closed_form(x, self.weight, self.bias)
        return batch_norm(x, self.weight, self.bias)


def batch_norm(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """Training-mode BatchNorm over (N, H, W) with two-pass statistics; MLX differentiates it."""
    mean = x.mean(axis=(0, 1, 2), keepdims=True)
    var = mx.square(x - mean).mean(axis=(0, 1, 2), keepdims=True)
    return (x - mean) * mx.rsqrt(var + BN_EPS) * weight + bias


@mx.custom_function
def batch_norm_closed_form(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """batch_norm with its textbook gradient: on the CPU MLX's autodiff of it makes several more full passes."""
    return batch_norm(x, weight, bias)


@batch_norm_closed_form.vjp
def _batch_norm_vjp(primals: list[mx.array], dy: mx.array, out: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    x, weight, _ = primals
    n = x.size // x.shape[-1]
    centred = x - x.mean(axis=(0, 1, 2), keepdims=True)
    inv = mx.rsqrt(mx.square(centred).mean(axis=(0, 1, 2), keepdims=True) + BN_EPS)
    d_bias = dy.sum(axis=(0, 1, 2))
    d_weight = (dy * centred).sum(axis=(0, 1, 2)) * inv.reshape(-1)
    dx = (weight * inv) * (dy - d_bias / n - centred * (inv * d_weight / n))
    return dx, d_weight, d_bias


class Conv(nn.Module):
    """Padding then convolution; stride 2 or a pooling when it halves the size.

    Weights are (out, kh, kw, in), MLX's layout; the backend converts to and
    from the canonical (out, in, kh, kw).
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        # Filled from canonical numpy weights by the backend; never used uninitialised.
        self.weight = mx.zeros((c_out, kernel, kernel, c_in))
        if bias:
            self.bias = mx.zeros((c_out,))
        self.stride = 2 if halve is Downsample.STRIDE else 1
        self.amount = (kernel - 1) // 2
        self.pad_mode = pad
        self.pool = halve if halve in (Downsample.AVG, Downsample.MAX) else None

    def __call__(self, x: mx.array) -> mx.array:
        x = pad(x, self.amount, self.pad_mode)
        y = strided_conv(x, self.weight) if self.stride == 2 else plain_conv(x, self.weight)
        if "bias" in self:
            y = y + self.bias
        return downsample(y, self.pool) if self.pool is not None else y


class ConvBlock(nn.Module):
    """Conv, BatchNorm, activation: the unit every scale is made of."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, bias: bool, pad: Pad, act: Act, halve: Downsample | None = None
    ) -> None:
        super().__init__()
        self.conv = Conv(c_in, c_out, kernel, bias=bias, pad=pad, halve=halve)
        self.bn = BatchNorm(c_out)
        self.act = act

    def __call__(self, x: mx.array) -> mx.array:
        return activation(self.bn(self.conv(x)), self.act)
