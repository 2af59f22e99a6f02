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
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dip_core.errors import UserError
from dip_core.system.atomic import atomic_write

FORMAT = "dip-checkpoint/5"  # 2: the discrepancy check's state; 3: the trackers' and the monitors' states;
# 4: an array equal to one written before it is written once (`same` in the meta); 5: the EMA's count of outputs
# (`ema_n`) where 3 and 4 said whether it had started (`ema_on`)
READABLE = ("dip-checkpoint/3", "dip-checkpoint/4", FORMAT)  # 3 is 4 without `same`
# Arrays from this size up are compared with the others (hashed); smaller ones are not worth the hashing.
SHARE_FROM_BYTES = 4096


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


def _shared(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """name -> the earlier name of an array with the same shape, dtype and bytes. A checkpoint written at a check
    (every 100 iterations by default) holds the rollback copy of the weights, Adam's state and the EMA equal to
    the session's own: a third of a 128x128 run's checkpoint."""
    first: dict[tuple[Any, ...], str] = {}
    same: dict[str, str] = {}
    for name, a in arrays.items():
        if a.nbytes < SHARE_FROM_BYTES:
            continue
        data = np.ascontiguousarray(a)
        key = (data.shape, data.dtype.str, hashlib.blake2b(data.data, digest_size=16).digest())
        if key in first and np.array_equal(arrays[first[key]], data):
            same[name] = first[key]
        else:
            first.setdefault(key, name)
    return same


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], run: dict[str, Any]) -> None:
    """Write arrays and the run's identity atomically (a crash leaves the previous checkpoint); an array equal to
    an earlier one is written once."""
    same = _shared(arrays)
    meta = json.dumps({"format": FORMAT, "run": run, "same": same}).encode()
    kept = {k: v for k, v in arrays.items() if k not in same}
    with atomic_write(path) as fh:
        np.savez(fh, __meta__=np.frombuffer(meta, np.uint8), **kept)  # type: ignore[arg-type]  # (numpy's stub)


def _new_in_format_5(name: str, given: dict[str, np.ndarray]) -> bool:
    """Arrays a format 3 or 4 file lacks and a run of its settings (the paper's average, no warm-up) does without:
    the average's count of outputs, where those files kept whether it had started (`ema_on`, which must be there),
    and the trackers' warm-up."""
    if name.endswith("ema_n"):
        return name.removesuffix("ema_n") + "ema_on" in given
    return name.startswith("loop/") and name.endswith("/warmup") and any(n.endswith("ema_on") for n in given)


def check_arrays(path: Path, expected: dict[str, np.ndarray], given: dict[str, np.ndarray]) -> None:
    """A checkpoint's arrays against those a fresh run of the same settings keeps (`expected`): every one there,
    numeric, of the same shape (the curves: of any length, one per step done), and a progress that agrees with
    the curves. A hand-made or damaged file is refused here, in one line, before any of it is loaded."""

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a checkpoint this run can go on from: {why}; start over with --force")

    missing = sorted(n for n in set(expected) - set(given) if not _new_in_format_5(n, given))
    if missing:
        raise refuse(f"it lacks {len(missing)} of the run's arrays ({', '.join(missing[:3])})")
    for name, want in expected.items():
        if name not in given:
            continue  # new in format 5: an earlier file's run had its default (no warm-up)
        have = given[name]
        if have.dtype.kind not in "biuf":
            raise refuse(f"{name} holds {have.dtype} values, not numbers")
        curve = name.startswith("curves/")
        if (have.ndim != 1) if curve else (have.shape != want.shape):
            shape = "one dimension" if curve else f"shape {want.shape}"
            raise refuse(f"{name} is of shape {have.shape}, not {shape}")
    done, seconds = (float(v) for v in given["loop/progress"])
    if not (done.is_integer() and done >= 0 and math.isfinite(seconds) and seconds >= 0):
        raise refuse(f"its progress ({done:g} steps in {seconds:g} s) is not a count of steps and a time")
    if len(given["curves/losses"]) != done:
        raise refuse(f"its progress ({done:g} steps) does not match its loss curve ({len(given['curves/losses'])})")
    every = given.get("checkpoint/every")
    if every is not None and (every.shape != () or every.dtype.kind not in "iu" or int(every) < 0):
        raise refuse("its checkpoint interval is not a whole number")


def read_run(path: str | Path) -> dict[str, Any] | None:
    """The identity of the run that wrote a checkpoint (None if it cannot be read): e.g. its thread count,
    which a resumed run takes over so as to go on exactly as the first part ran."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(np.asarray(npz["__meta__"]).tobytes())
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
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
        odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]  # a member that is no .npy
        if odd:
            raise ValueError(f"{odd[0]} is not an array")
        meta = json.loads(arrays.pop("__meta__").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable dip checkpoint ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") not in READABLE or not isinstance(meta.get("run"), dict):
        raise CheckpointError(f"{path} is not a dip checkpoint of format {FORMAT}")
    same = meta.get("same", {})
    if not isinstance(same, dict) or not all(isinstance(v, str) and v in arrays for v in same.values()):
        raise CheckpointError(f"{path} is not a readable dip checkpoint (a shared array is missing)")
    # A copy each: a backend may take an array over without copying it (torch.from_numpy), and the session and
    # its rollback copy must not share memory.
    arrays.update({name: arrays[source].copy() for name, source in same.items()})
    theirs = meta["run"]
    differ = sorted(k for k in set(run) | set(theirs) if run.get(k) != theirs.get(k))
    if differ:
        raise CheckpointError(
            f"the checkpoint at {path} is of another run (it differs in {', '.join(differ)}); start over with --force"
        )
    return arrays
