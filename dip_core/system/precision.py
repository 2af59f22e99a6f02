"""How float32 work runs on a device: strict fp32, TF32 tensor cores, or bfloat16 compute.

Both frameworks quietly run fp32 convolutions and matmuls in TF32 on NVIDIA GPUs
(10-bit mantissa products, fp32 accumulation). That is faster and, for DIP,
as good (F16 512x512 sigma 25, 3000 iterations on an H200: best 32.61 dB torch,
32.65 dB MLX with TF32, against 32.68 dB published), but it makes a cross-check
read 1e-2 where fp32 reads 1e-5. So precision is a setting of its own, recorded
in every report, and the cross-check asks for fp32.
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    FP32 = "fp32"  # IEEE float32 everywhere
    TF32 = "tf32"  # float32 storage, reduced-precision products in convolutions and matmuls where the GPU has them
    BF16 = "bf16"  # float32 weights and optimizer, forward and backward computed in bfloat16


def default_precision(device: str) -> Precision:
    """The precision a run gets when none is asked for: fp32 on a CPU, TF32 on a GPU.

    TF32 is what both frameworks do on NVIDIA by default. On a CPU and on MPS there is none, and
    `effective` calls it fp32 there; on Metal, MLX has a reduced-precision path only on GPUs with
    matrix units (M5 and later, macOS >= 26.2), and the MLX backend records fp32 everywhere else.
    """
    return Precision.FP32 if device == "cpu" else Precision.TF32


def effective(precision: Precision, device: str) -> Precision:
    """What a device really runs when asked for `precision`: TF32 exists on GPUs only."""
    if precision is Precision.TF32 and device in ("cpu", "mps"):
        return Precision.FP32
    return precision
