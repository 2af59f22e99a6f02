"""The canonical parameter layout shared by every backend.

Parameters are exchanged as a flat ``dict[str, np.ndarray]`` of float32 arrays.
Names follow the module tree of the network, identical in both backends::

    scales.{i}.skip.conv.{weight,bias}   skip branch (absent when channels_skip[i] == 0)
    scales.{i}.skip.bn.{weight,bias}
    scales.{i}.down1.conv / .bn          encoder convolution that halves the size
    scales.{i}.down2.conv / .bn          encoder convolution, stride 1
    scales.{i}.merge_bn.{weight,bias}    BatchNorm over concat(skip, deeper)
    scales.{i}.up1.conv / .bn            decoder convolution
    scales.{i}.up2.conv / .bn            decoder 1x1 convolution (when need1x1_up)
    head.{weight,bias}                   1x1 output convolution
    input_bn.{weight,bias}               BatchNorm on the input (when input_bn: DRP)

Convolution weights are stored as (out, in, kh, kw) ("OIHW", PyTorch's layout);
biases and BatchNorm scales/shifts as (channels,). BatchNorm keeps no running
statistics: the network always normalises with the statistics of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from dip_core.model.config import Pad, SkipConfig


@dataclass(frozen=True)
class ConvSpec:
    name: str  # prefix, e.g. "scales.0.down1.conv"
    c_in: int
    c_out: int
    kernel: int


def conv_specs(cfg: SkipConfig) -> list[ConvSpec]:
    """Every convolution of the network, in forward order."""
    convs: list[ConvSpec] = []
    d_in = cfg.in_channels
    for i in range(cfg.depth):
        p = f"scales.{i}"
        if cfg.channels_skip[i]:
            convs.append(ConvSpec(f"{p}.skip.conv", d_in, cfg.channels_skip[i], cfg.filter_skip_size))
        convs.append(ConvSpec(f"{p}.down1.conv", d_in, cfg.channels_down[i], cfg.filter_size_down))
        convs.append(ConvSpec(f"{p}.down2.conv", cfg.channels_down[i], cfg.channels_down[i], cfg.filter_size_down))
        convs.append(ConvSpec(f"{p}.up1.conv", merge_channels(cfg, i), cfg.channels_up[i], cfg.filter_size_up))
        if cfg.need1x1_up:
            convs.append(ConvSpec(f"{p}.up2.conv", cfg.channels_up[i], cfg.channels_up[i], 1))
        d_in = cfg.channels_down[i]
    convs.append(ConvSpec("head", cfg.channels_up[0], cfg.out_channels, 1))
    return convs


def merge_channels(cfg: SkipConfig, i: int) -> int:
    """Channels of concat(skip, deeper) at scale i."""
    deeper = cfg.channels_down[i] if i == cfg.depth - 1 else cfg.channels_up[i + 1]
    return cfg.channels_skip[i] + deeper


def bn_specs(cfg: SkipConfig) -> list[tuple[str, int]]:
    """Every BatchNorm of the network as (name prefix, channels)."""
    bns = [(c.name[: -len(".conv")] + ".bn", c.c_out) for c in conv_specs(cfg) if c.name != "head"]
    bns += [(f"scales.{i}.merge_bn", merge_channels(cfg, i)) for i in range(cfg.depth)]
    if cfg.input_bn:
        bns.append(("input_bn", cfg.in_channels))
    return bns


def param_shapes(cfg: SkipConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every trainable parameter."""
    shapes: dict[str, tuple[int, ...]] = {}
    for c in conv_specs(cfg):
        shapes[f"{c.name}.weight"] = (c.c_out, c.c_in, c.kernel, c.kernel)
        if cfg.need_bias:
            shapes[f"{c.name}.bias"] = (c.c_out,)
    for name, channels in bn_specs(cfg):
        shapes[f"{name}.weight"] = (channels,)
        shapes[f"{name}.bias"] = (channels,)
    return dict(sorted(shapes.items()))


def count_params(cfg: SkipConfig) -> int:
    """Number of trainable scalars, computed from the layout alone."""
    total = 0
    for shape in param_shapes(cfg).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def grad_is_structurally_zero(cfg: SkipConfig, name: str) -> bool:
    """True for a parameter whose loss gradient is zero in exact arithmetic.

    - a convolution bias feeding a BatchNorm: the BatchNorm subtracts the
      per-channel mean, so the bias cannot change the output;
    - the shift of the merge BatchNorm when the next convolution keeps
      constants constant (reflection padding or a 1x1 filter): the shift
      becomes a per-channel constant that the next BatchNorm removes.

    - the shift of the input BatchNorm, for the same reason: the first
      convolutions (skip and down1), each followed by a BatchNorm, see it as a
      per-channel constant when they keep constants constant.

    In float32 such gradients are rounding noise, so a ratio to their own
    magnitude is meaningless; the cross-check judges them on an absolute scale.
    """
    if name.endswith(".conv.bias"):
        return True
    if name == "input_bn.bias":
        return cfg.pad is Pad.REFLECTION or max(cfg.filter_size_down, cfg.filter_skip_size) == 1
    return name.endswith(".merge_bn.bias") and (cfg.pad is Pad.REFLECTION or cfg.filter_size_up == 1)
