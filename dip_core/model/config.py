"""The skip network's configuration: every knob of the paper's `skip` builder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from dip_core.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot describe a valid network (user error)."""


class Pad(str, Enum):
    ZERO = "zero"
    REFLECTION = "reflection"


class Upsample(str, Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"


class Downsample(str, Enum):
    STRIDE = "stride"  # 3x3 (filter_size_down) convolution with stride 2
    AVG = "avg"  # stride-1 convolution, then 2x2 average pooling
    MAX = "max"  # stride-1 convolution, then 2x2 max pooling


class Act(str, Enum):
    LEAKY_RELU = "LeakyReLU"  # slope 0.2, as in the paper
    SWISH = "Swish"
    ELU = "ELU"
    NONE = "none"


LEAKY_SLOPE = 0.2
BN_EPS = 1e-5


@dataclass(frozen=True)
class SkipConfig:
    """The encoder-decoder with skip connections of the paper ("skip" in its code; Ulyanov et al. 2018, supp. mat.)."""

    in_channels: int = 32  # channels of the input z (32 noise maps, 2 for meshgrid)
    out_channels: int = 3  # 3 for colour, 1 for grey
    channels_down: tuple[int, ...] = (128, 128, 128, 128, 128)  # per scale, encoder
    channels_up: tuple[int, ...] = (128, 128, 128, 128, 128)  # per scale, decoder
    channels_skip: tuple[int, ...] = (4, 4, 4, 4, 4)  # per scale, 0 = no skip branch
    filter_size_down: int = 3  # kernel of both encoder convolutions
    filter_size_up: int = 3  # kernel of the decoder convolution
    filter_skip_size: int = 1  # kernel of the skip-branch convolution
    pad: Pad = Pad.REFLECTION  # padding before every convolution
    upsample: Upsample = Upsample.BILINEAR  # x2 upsampling in the decoder
    downsample: Downsample = Downsample.STRIDE  # how the encoder halves the size
    act: Act = Act.LEAKY_RELU  # activation after every BatchNorm
    need1x1_up: bool = True  # extra 1x1 conv + BN + act at the end of each scale
    need_sigmoid: bool = True  # sigmoid on the output
    need_bias: bool = True  # bias on every convolution
    # BatchNorm on the input before the first convolutions (DRP: its scale and shift are trained with the seed z).
    input_bn: bool = False

    def __post_init__(self) -> None:
        # Coerce lists and strings (from JSON or the CLI) into the declared types.
        for name in ("channels_down", "channels_up", "channels_skip"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        for name, enum in (("pad", Pad), ("upsample", Upsample), ("downsample", Downsample), ("act", Act)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                choices = ", ".join(e.value for e in enum)
                raise ConfigError(f"{name} must be one of {choices}, got {value!r}") from None
        self._validate()

    def _validate(self) -> None:
        n = len(self.channels_down)
        if n == 0:
            raise ConfigError("the network needs at least one scale (channels_down is empty)")
        if len(self.channels_up) != n or len(self.channels_skip) != n:
            raise ConfigError(
                "channels_down, channels_up and channels_skip must have the same length, got "
                f"{len(self.channels_down)}, {len(self.channels_up)}, {len(self.channels_skip)}"
            )
        for name in ("channels_down", "channels_up"):
            if any(c < 1 for c in getattr(self, name)):
                raise ConfigError(f"{name} must be positive at every scale, got {getattr(self, name)}")
        if any(c < 0 for c in self.channels_skip):
            raise ConfigError(f"channels_skip must be >= 0, got {self.channels_skip}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError("in_channels and out_channels must be positive")
        for name in ("filter_size_down", "filter_size_up", "filter_skip_size"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"{name} must be a positive odd number, got {k}")

    @property
    def depth(self) -> int:
        """Number of scales; the input is halved this many times."""
        return len(self.channels_down)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.input_bn:
            # Left out when off: the networks of earlier releases keep their description (checkpoints, reports).
            del d["input_bn"]
        for key, value in d.items():
            if isinstance(value, Enum):
                d[key] = value.value
            elif isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkipConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown network setting(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a number where a list was expected
            raise ConfigError(f"invalid network settings: {exc}") from None

    def with_(self, **changes: Any) -> SkipConfig:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)


def _scales(value: int, n: int = 5) -> tuple[int, ...]:
    return (value,) * n


# The networks the paper's code uses for each task (see dip_core/problem/presets.py), by name.
NETS: dict[str, SkipConfig] = {
    "default": SkipConfig(),
    "jpeg": SkipConfig(
        in_channels=3,
        channels_down=(8, 16, 32, 64, 128),
        channels_up=(8, 16, 32, 64, 128),
        channels_skip=(0, 0, 0, 4, 4),
    ),
    "inpaint-text": SkipConfig(channels_skip=_scales(128), upsample=Upsample.NEAREST),
    "inpaint-hole": SkipConfig(in_channels=2, channels_skip=_scales(0), upsample=Upsample.NEAREST),
    "inpaint-region": SkipConfig(
        in_channels=1,
        channels_down=(16, 32, 64, 128, 128, 128),
        channels_up=(16, 32, 64, 128, 128, 128),
        channels_skip=(0, 0, 0, 0, 0, 0),
        filter_size_down=5,
        filter_size_up=3,
        need1x1_up=False,
    ),
    "restore-grey": SkipConfig(out_channels=1),
    # The Deep Random Projector's networks (dip_core/model/method.py), from the authors' scripts: one scale, a
    # BatchNorm on the seed, reflection padding, bilinear upsampling. Denoising: width 64 and 4 skip channels.
    "drp": SkipConfig(in_channels=3, channels_down=(64,), channels_up=(64,), channels_skip=(4,), input_bn=True),
    # Super-resolution: width 128, 4 skip channels.
    "drp-wide": SkipConfig(in_channels=1, channels_down=(128,), channels_up=(128,), channels_skip=(4,), input_bn=True),
    # Inpainting: width 128 and as many skip channels.
    "drp-inpaint": SkipConfig(
        in_channels=2, channels_down=(128,), channels_up=(128,), channels_skip=(128,), input_bn=True
    ),
    # Small networks for tests and quick experiments.
    "small": SkipConfig(
        in_channels=8,
        channels_down=(16, 16, 16),
        channels_up=(16, 16, 16),
        channels_skip=(4, 4, 4),
    ),
    "tiny": SkipConfig(
        in_channels=4,
        channels_down=(8, 8),
        channels_up=(8, 8),
        channels_skip=(2, 2),
    ),
}


def load_config(spec: str | Path) -> SkipConfig:
    """A named network from NETS, or a JSON file of SkipConfig fields."""
    name = str(spec)
    if name in NETS:
        return NETS[name]
    path = Path(name)
    if not path.suffix == ".json":
        raise ConfigError(f"unknown network {name!r}; choose one of {', '.join(NETS)} or give a .json file")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"network config file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read network config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"network config {path} must hold a JSON object")
    return SkipConfig.from_dict(data)


def min_size(cfg: SkipConfig) -> int:
    """Smallest image side the network accepts.

    Every scale must leave at least two pixels per side for BatchNorm statistics
    and more than the padding for reflection padding.
    """
    k = max(cfg.filter_size_down, cfg.filter_size_up, cfg.filter_skip_size)
    need = max(2, (k - 1) // 2 + 1)
    # The deepest feature map has ceil(side / 2**depth) pixels.
    return (need - 1) * 2**cfg.depth + 1


def check_size(cfg: SkipConfig, height: int, width: int) -> None:
    """Raise ConfigError when an input of this size cannot pass through the net."""
    smallest = min_size(cfg)
    if height < smallest or width < smallest:
        raise ConfigError(
            f"a {height}x{width} input is too small for a {cfg.depth}-scale network "
            f"(each side must be at least {smallest} pixels)"
        )
