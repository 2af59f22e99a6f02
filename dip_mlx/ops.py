"""The degradation operators A of dip_core.problem.degrade, applied in MLX (NHWC)."""

from __future__ import annotations

import mlx.core as mx

from dip_core.problem.degrade import Operator, OpKind, lanczos2_taps, lanczos_pad


class MLXOperator:
    """A(x) for x of shape (1, H, W, C), built once from the numpy description."""

    def __init__(self, op: Operator) -> None:
        self.kind = op.kind
        self.factor = op.factor
        if op.kind is OpKind.MASK:
            self.mask = mx.array(op.mask[None])
        elif op.kind is OpKind.DOWNSAMPLE:
            self.taps = mx.array(lanczos2_taps(op.factor))
        elif op.kind is OpKind.BLUR:
            k = op.kernel[::-1, ::-1].copy()  # conv2d correlates: flip for a true convolution
            self.kernel = mx.array(k)[None, :, :, None]

    def __call__(self, x: mx.array) -> mx.array:
        if self.kind is OpKind.IDENTITY:
            return x
        if self.kind is OpKind.MASK:
            return x * self.mask
        planes = x.transpose(3, 1, 2, 0)  # channels as a batch of grey images: (C, H, W, 1)
        if self.kind is OpKind.DOWNSAMPLE:
            p, f, t = lanczos_pad(self.factor), self.factor, self.taps
            planes = mx.pad(planes, [(0, 0), (p, p), (p, p), (0, 0)], mode="edge")
            planes = mx.conv2d(planes, t.reshape(1, -1, 1, 1), stride=(f, 1))
            planes = mx.conv2d(planes, t.reshape(1, 1, -1, 1), stride=(1, f))
        else:
            kh, kw = self.kernel.shape[1:3]
            planes = mx.pad(planes, [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)], mode="reflect")
            planes = mx.conv2d(planes, self.kernel)
        return planes.transpose(3, 1, 2, 0)
