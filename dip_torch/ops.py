"""The degradation operators A of dip_core.problem.degrade, applied in PyTorch (NCHW)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dip_core.problem.degrade import Operator, OpKind, lanczos2_taps, lanczos_pad


class TorchOperator:
    """A(x) for x of shape (1, C, H, W), built once from the numpy description."""

    def __init__(self, op: Operator, device: torch.device) -> None:
        self.kind = op.kind
        self.factor = op.factor
        if op.kind is OpKind.MASK:
            self.mask = torch.from_numpy(op.mask.transpose(2, 0, 1)[None].copy()).to(device)
        elif op.kind is OpKind.DOWNSAMPLE:
            self.taps = torch.from_numpy(lanczos2_taps(op.factor)).to(device)
        elif op.kind is OpKind.BLUR:
            k = op.kernel[::-1, ::-1].copy()  # conv2d correlates: flip for a true convolution
            self.kernel = torch.from_numpy(k)[None, None].to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind is OpKind.IDENTITY:
            return x
        if self.kind is OpKind.MASK:
            return x * self.mask
        c = x.shape[1]
        planes = x.reshape(c, 1, *x.shape[2:])  # channels as a batch of grey images
        if self.kind is OpKind.DOWNSAMPLE:
            p, f, t = lanczos_pad(self.factor), self.factor, self.taps
            planes = F.pad(planes, (p, p, p, p), mode="replicate")
            planes = F.conv2d(planes, t.view(1, 1, -1, 1), stride=(f, 1))
            planes = F.conv2d(planes, t.view(1, 1, 1, -1), stride=(1, f))
        else:
            kh, kw = self.kernel.shape[-2:]
            planes = F.pad(planes, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
            planes = F.conv2d(planes, self.kernel)
        return planes.reshape(1, c, *planes.shape[2:])
