"""Checkpoint files: everything a run needs to go on after a crash, as one .npz.

A checkpoint holds numpy arrays only (no pickle): the session's parameters,
optimizer state and noise stream, the loop's own state (EMA, windowed
variance, the output chosen so far, curves, counters) and, as JSON, what
identifies the run, so that a checkpoint is never continued with other inputs
or settings.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dip_core.atomic import atomic_write
from dip_core.errors import UserError

FORMAT = "dip-checkpoint/3"  # 2: the discrepancy check's state; 3: the trackers' and the monitors' states


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not belong to this run."""


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a run writes its checkpoint, and what it resumes from."""

    path: Path
    every: int  # iterations between checkpoints; 0 = never write
    run: dict[str, Any]  # identifies the run (inputs, settings): checked on resume
    resume: dict[str, np.ndarray] | None = None  # the loaded arrays to go on from


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays renamed `prefix + name`: one part of a checkpoint."""
    return {prefix + k: v for k, v in arrays.items()}


def under(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of a checkpoint's arrays named `prefix...`, without the prefix."""
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


def digest(*arrays: np.ndarray | None) -> str:
    """A short hash of input arrays, to recognise the same inputs on resume."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], run: dict[str, Any]) -> None:
    """Write arrays and the run's identity atomically (a crash leaves the previous checkpoint)."""
    meta = json.dumps({"format": FORMAT, "run": run}).encode()
    with atomic_write(path) as fh:
        np.savez(fh, __meta__=np.frombuffer(meta, np.uint8), **arrays)


def read_run(path: str | Path) -> dict[str, Any] | None:
    """The identity of the run that wrote a checkpoint (None if it cannot be read): e.g. its thread count,
    which a resumed run takes over so as to go on exactly as the first part ran."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["__meta__"].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    run = meta.get("run") if isinstance(meta, dict) else None
    return run if isinstance(run, dict) else None


def load_checkpoint(path: str | Path, run: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint written by this same run (inputs and settings)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("__meta__").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable dip checkpoint ({type(exc).__name__})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dip checkpoint of format {FORMAT}")
    theirs = meta.get("run", {})
    differ = sorted(k for k in set(run) | set(theirs) if run.get(k) != theirs.get(k))
    if differ:
        raise CheckpointError(
            f"the checkpoint at {path} is of another run (it differs in {', '.join(differ)}); start over with --force"
        )
    return arrays
