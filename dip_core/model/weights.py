"""Initial weights drawn in numpy, strict validation, and .npz files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from dip_core.errors import UserError
from dip_core.model.config import ConfigError, SkipConfig
from dip_core.model.method import is_batch_norm
from dip_core.model.params import param_shapes
from dip_core.system.atomic import atomic_write

Weights = dict[str, np.ndarray]

_CONFIG_KEY = "__config__"


class WeightsError(UserError, ValueError):
    """Weights that do not fit the network (missing, extra or mis-shaped keys)."""


def init_weights(cfg: SkipConfig, seed: int = 0) -> Weights:
    """Fresh weights with PyTorch's default initialisation, drawn from one numpy seed.

    Convolutions: weight and bias uniform in +-1/sqrt(fan_in) (Kaiming-uniform
    with a=sqrt(5)); BatchNorm: scale 1, shift 0. Both backends start from these
    arrays, so one seed gives the same network everywhere.
    """
    rng = np.random.default_rng(seed)
    shapes = param_shapes(cfg)
    weights: Weights = {}
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) == 4:
            bound = 1.0 / np.sqrt(shape[1] * shape[2] * shape[3])
            weights[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        elif len(shape) == 1 and is_batch_norm(name):
            fill = 1.0 if name.endswith(".weight") else 0.0
            weights[name] = np.full(shape, fill, dtype=np.float32)
        else:  # convolution bias: fan_in from the matching weight
            w_shape = shapes[name[: -len("bias")] + "weight"]
            bound = 1.0 / np.sqrt(w_shape[1] * w_shape[2] * w_shape[3])
            weights[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return weights


def check_weights(cfg: SkipConfig, weights: Weights) -> None:
    """Raise WeightsError unless `weights` has exactly the network's keys and shapes."""
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if extra:
        problems.append(f"unexpected {_some(extra)}")
    for name in sorted(set(expected) & set(weights)):
        shape = tuple(np.shape(weights[name]))
        if shape != expected[name]:
            problems.append(f"{name} has shape {shape}, expected {expected[name]}")
    if problems:
        raise WeightsError("weights do not fit the network: " + "; ".join(problems))


def _some(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def save_weights(path: str | Path, cfg: SkipConfig, weights: Weights) -> None:
    """Write weights and the network config to an .npz file, atomically."""
    check_weights(cfg, weights)
    path = Path(path)
    arrays = {name: np.asarray(w, dtype=np.float32) for name, w in weights.items()}
    arrays[_CONFIG_KEY] = np.array(json.dumps(cfg.to_dict()))
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags


def load_weights(path: str | Path, cfg: SkipConfig | None = None) -> tuple[SkipConfig, Weights]:
    """Read an .npz written by save_weights; with `cfg`, also check that it matches."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from None
    if _CONFIG_KEY not in arrays:
        raise WeightsError(f"{path} holds no network config (not written by dip?)")
    try:
        stored = SkipConfig.from_dict(json.loads(str(arrays.pop(_CONFIG_KEY))))
    except (ConfigError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: invalid network config: {exc}") from None
    if cfg is not None and cfg != stored:
        raise WeightsError(f"{path} was saved for another network configuration")
    weights = {name: a.astype(np.float32, copy=False) for name, a in arrays.items()}
    check_weights(stored, weights)
    return stored, weights
