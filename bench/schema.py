"""The result file of `dip bench all` (kind "machine", schema_version 1): its checks, and the older files read as it.

A machine result holds one machine's whole benchmark: who measured (machine, software), with which settings, the
speed rows, the quality runs over seeds, the GPU cross-check, the sustained run and the paper's experiments
(`dip bench paper`). `validate` checks a parsed file
and gives it back in that shape, or raises one SchemaError line that names the file and the problem. The per-kind
files written before it (`dip bench speed` and `dip bench quality`: "kind" speed or quality, a "fingerprint", no
schema_version) are version 0 and are converted. `load_folder` reads files and folders and goes on past bad files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dip_core.errors import UserError

SCHEMA_VERSION = 1
MACHINE = "machine"
LEGACY_KINDS = ("speed", "quality")
# Other results that live beside them in a results folder, each with its own table: the command that prints it.
OTHER_KINDS = {
    "autostop": "python -m bench.autostop table",
    "ladder": "python -m bench.ladder --show",
    "loop-pair": "python -m bench.loop_pair --show",
    "fast": "python -m bench.fast --show",
    "drp-sr-curves": "python -m bench.fast --show",
}
# Speed rows of a version-0 file that the chip table has columns for; loop+ref, forward and the small net stay out.
CHIP_TABLE_KINDS = ("step", "loop")


class SchemaError(UserError):
    """A file that is not a dip bench result this dip can read: one line naming the file and the problem."""


class OtherKindError(SchemaError):
    """A dip bench result of another kind (auto-stop, ladder, loop pair): a folder's report skips it."""


@dataclass(frozen=True)
class LoadedResult:
    """One good file: where it came from, the schema version it was written in, and its machine-shaped data."""

    path: Path
    version: int
    data: dict[str, Any]


# --- value checks: each returns whether a JSON value is of the kind named in a field spec --------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda x: isinstance(x, str), "a string"),
    "int": (_is_int, "an integer"),
    "number": (_is_number, "a number"),
    "positive": (lambda x: _is_number(x) and x > 0, "a positive number"),
    "bool": (lambda x: isinstance(x, bool), "true or false"),
    "list": (lambda x: isinstance(x, list), "a list"),
    "dict": (lambda x: isinstance(x, dict), "an object"),
    "pair": (lambda x: isinstance(x, list) and len(x) == 2 and all(_is_number(v) for v in x), "a pair of numbers"),
}

# Field specs: name -> "type" (required, of that type) or "~type" (may also be absent or null).
MACHINE_FIELDS = {
    "label": "str",
    "chip": "~str",
    "cpu": "~str",
    "cores": "~int",
    "gpu": "~str",
    "gpu_cores": "~int",
    "gpu_driver": "~str",
    "memory_gib": "~number",
    "os": "~str",
    "arch": "~str",
    "power_source": "~str",
}
SOFTWARE_FIELDS = {
    "dip": "str",
    "commit": "~str",
    "python": "~str",
    "mlx": "~str",
    "torch": "~str",
    "blas": "~dict",
}
SETTINGS_FIELDS = {"precision": "~str", "threads": "~int", "sizes": "~list", "seeds": "~int", "sustained_s": "~number"}
SPEED_FIELDS = {
    "backend": "str",
    "device": "str",
    "precision": "~str",
    "size": "int",
    "kind": "str",
    "ms_per_iter": "positive",
    "ms_min": "~number",
    "ms_max": "~number",
    "peak_memory_bytes": "~int",
    "gflops_per_s": "~number",
    "flops": "~number",
}
SKIPPED_FIELDS = {"backend": "str", "device": "str", "size": "~int", "reason": "str"}
QUALITY_FIELDS = {"profile": "str", "seeds": "~list", "rows": "list", "summary": "~list", "differences": "~list"}
QUALITY_ROW_FIELDS = {
    "case": "str",
    "backend": "str",
    "device": "~str",
    "seed": "~int",
    "psnr_result": "~number",
    "psnr_input": "~number",
    "seconds": "~number",
}
SUMMARY_FIELDS = {"case": "str", "backend": "str", "n": "int", "mean": "number", "std": "~number"}
DIFFERENCE_FIELDS = {"case": "str", "mlx_minus_torch": "number", "ci95": "~pair", "finding": "~bool"}
CROSSCHECK_FIELDS = {
    "device": "~str",
    "config": "~str",
    "passed": "bool",
    "verdict": "~str",  # dip_core.run.crosscheck's: met, noise, above-noise, disagree (absent in the first files)
    "excess": "~number",
    "max_abs_diff": "~number",
    "tolerance": "~number",
}
SUSTAINED_FIELDS = {
    "backend": "str",
    "device": "str",
    "size": "~int",
    "seconds": "~number",
    "samples": "~list",
    "first_minute_ms": "~number",
    "last_minute_ms": "~number",
}
# `dip bench paper`: the paper's experiments, each row with its figures (ours beside the published number).
PAPER_FIELDS = {"profile": "str", "paper_settings": "bool", "note": "~str", "rows": "list", "skipped": "~list"}
PAPER_ROW_FIELDS = {
    "case": "str",
    "backend": "str",
    "device": "~str",
    "seed": "int",
    "iters": "int",
    "seconds": "number",
    "ms_per_iter": "~number",
    "figures": "list",
}
FIGURE_FIELDS = {"what": "str", "ours": "~number", "published": "~number", "source": "str"}
TOP_FIELDS = {
    "kind": "str",
    "schema_version": "int",
    "date": "str",
    "command": "~str",
    "finished": "bool",
    "machine": "dict",
    "software": "dict",
    "settings": "dict",
    "speed": "list",
    "skipped": "~list",
    "matmul_gflops": "~dict",
    "quality": "~dict",
    "crosscheck": "~dict",
    "sustained": "~dict",
    "paper": "~dict",
}


def _fields(obj: Any, where: str, spec: dict[str, str]) -> dict[str, Any]:
    """`obj` checked against `spec`: a copy with every spec'd field present (None where absent and allowed)."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where} is not an object")
    out = dict(obj)
    for name, kind in spec.items():
        optional, base = kind.startswith("~"), kind.lstrip("~")
        path = f"{where}.{name}" if where else name
        if name not in obj:
            if not optional:
                raise SchemaError(f"{path} is missing")
            out[name] = None
            continue
        value = obj[name]
        if value is None and optional:
            continue
        check, what = _CHECKS[base]
        if not check(value):
            kind_of = "a number" if base == "positive" and not _is_number(value) else what
            raise SchemaError(f"{path} is not {kind_of}")
    return out


def _items(values: list[Any] | None, where: str, spec: dict[str, str]) -> list[dict[str, Any]]:
    return [_fields(v, f"{where}[{i}]", spec) for i, v in enumerate(values or [])]


def _named(mapping: dict[str, Any] | None, where: str) -> dict[str, float]:
    """A dict of name -> number (matmul rates): nulls dropped, anything else not a number is an error."""
    out = {}
    for key, value in (mapping or {}).items():
        if value is None:
            continue
        if not _is_number(value):
            raise SchemaError(f"{where}.{key} is not a number")
        out[key] = float(value)
    return out


def _machine_result(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 file, checked field by field (the first problem found is the one reported)."""
    top = _fields(data, "", TOP_FIELDS)
    top["machine"] = _fields(top["machine"], "machine", MACHINE_FIELDS)
    top["software"] = _fields(top["software"], "software", SOFTWARE_FIELDS)
    top["settings"] = _fields(top["settings"], "settings", SETTINGS_FIELDS)
    top["speed"] = _items(top["speed"], "speed", SPEED_FIELDS)
    top["skipped"] = _items(top["skipped"], "skipped", SKIPPED_FIELDS)
    top["matmul_gflops"] = _named(top["matmul_gflops"], "matmul_gflops")
    if top["quality"] is not None:
        q = _fields(top["quality"], "quality", QUALITY_FIELDS)
        q["rows"] = _items(q["rows"], "quality.rows", QUALITY_ROW_FIELDS)
        q["summary"] = _items(q["summary"], "quality.summary", SUMMARY_FIELDS)
        q["differences"] = _items(q["differences"], "quality.differences", DIFFERENCE_FIELDS)
        top["quality"] = q
    if top["paper"] is not None:
        paper = _fields(top["paper"], "paper", PAPER_FIELDS)
        paper["rows"] = _items(paper["rows"], "paper.rows", PAPER_ROW_FIELDS)
        for i, row in enumerate(paper["rows"]):
            row["figures"] = _items(row["figures"], f"paper.rows[{i}].figures", FIGURE_FIELDS)
        top["paper"] = paper
    if top["crosscheck"] is not None:
        top["crosscheck"] = _fields(top["crosscheck"], "crosscheck", CROSSCHECK_FIELDS)
    if top["sustained"] is not None:
        s = _fields(top["sustained"], "sustained", SUSTAINED_FIELDS)
        for i, sample in enumerate(s["samples"] or []):
            if not _CHECKS["pair"][0](sample):
                raise SchemaError(f"sustained.samples[{i}] is not a pair of numbers [seconds, ms/iter]")
        top["sustained"] = s
    return top


# --- version 0: the per-kind files of `dip bench speed` and `dip bench quality` ------------------------------------


def device_kind(device: str) -> str:
    """dip's device names, cpu and gpu, for the resolved ones of version 0 (cuda, mps, ...)."""
    return "cpu" if device == "cpu" else "gpu"


def _device_key(key: str) -> str:
    """A version-0 matmul rate's key as backend/device: "torch/cuda" -> "torch/gpu"."""
    backend, _, device = key.partition("/")
    return f"{backend}/{device_kind(device)}"


def _machine_from_fingerprint(fp: dict[str, Any]) -> dict[str, Any]:
    from bench.fingerprint import machine_label

    cpu = fp.get("cpu")
    return {
        "label": machine_label(fp),
        "chip": cpu if isinstance(cpu, str) and cpu.startswith("Apple") else None,
        "cpu": cpu,
        "cores": fp.get("cores"),
        "gpu": fp.get("gpu"),
        "gpu_cores": None,
        "gpu_driver": None,
        "memory_gib": fp.get("memory_gib"),
        "os": fp.get("os"),
        "arch": fp.get("machine"),
        "power_source": None,
    }


def _software_from_fingerprint(fp: dict[str, Any]) -> dict[str, Any]:
    return {
        "dip": None,  # not recorded before schema 1; the commit is
        "commit": fp.get("dip_revision"),
        "python": fp.get("python"),
        "mlx": fp.get("mlx"),
        "torch": fp.get("torch"),
        "blas": fp.get("blas") if isinstance(fp.get("blas"), dict) else {},
    }


def _legacy_result(data: dict[str, Any]) -> dict[str, Any]:
    """A version-0 speed or quality file in the machine shape (only what the chip table uses of it)."""
    fp = data.get("fingerprint")
    if not isinstance(fp, dict):
        raise SchemaError(f"a {data['kind']} result without a 'fingerprint' (who measured)")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise SchemaError("rows is missing" if rows is None else "rows is not a list")
    speed: list[dict[str, Any]] = []
    quality = None
    if data["kind"] == "speed":
        # Only the default network's step and loop: the chip table's columns; the other rows have tables of their own.
        kept = [r for r in rows if isinstance(r, dict) and r.get("kind") in CHIP_TABLE_KINDS]
        kept = [r for r in kept if r.get("net", "preset") == "preset"]
        speed = _items(kept, "rows", SPEED_FIELDS)
        for r in speed:
            r["device"] = device_kind(r["device"])
    else:
        rows = _items(rows, "rows", QUALITY_ROW_FIELDS)
        for r in rows:
            r["seed"] = 0 if r["seed"] is None else r["seed"]
            r["device"] = None if r["device"] is None else device_kind(r["device"])
        quality = {
            "profile": data.get("profile") if isinstance(data.get("profile"), str) else "?",
            "seeds": data.get("seeds") or [0],
            "rows": rows,
            "summary": _items(data.get("summary"), "summary", SUMMARY_FIELDS),
            "differences": _items(data.get("differences"), "differences", DIFFERENCE_FIELDS),
        }
    date = data.get("date") if isinstance(data.get("date"), str) else ""
    return {
        "kind": MACHINE,
        "schema_version": 0,
        "date": date,
        "command": data.get("command"),
        "finished": True,
        "machine": _machine_from_fingerprint(fp),
        "software": _software_from_fingerprint(fp),
        "settings": {"precision": None, "threads": None, "sizes": None, "seeds": None, "sustained_s": None},
        "speed": speed,
        "skipped": [],
        "matmul_gflops": {_device_key(k): v for k, v in _named(data.get("roofline_gflops"), "roofline_gflops").items()},
        "quality": quality,
        "crosscheck": None,
        "sustained": None,
        "paper": None,
    }


def validate(data: Any, source: str | Path = "<data>") -> dict[str, Any]:
    """A parsed result file checked and given back in the machine shape (version 0 converted); SchemaError names
    `source` and the first problem found, in one line."""
    try:
        return _validated(data, source)
    except SchemaError as exc:
        raise type(exc)(f"{source}: {exc}") from None


def _validated(data: Any, source: str | Path) -> dict[str, Any]:
    if not isinstance(data, dict) or "kind" not in data:
        raise SchemaError("not a dip bench result (no 'kind')")
    kind = data["kind"]
    if not isinstance(kind, str):
        raise SchemaError(f"not a dip bench result (kind {kind!r})")
    if kind in OTHER_KINDS:
        raise OtherKindError(f"a {kind} result: `{OTHER_KINDS[kind]} {source}` prints it")
    version = data.get("schema_version")
    if version is None:
        if kind in LEGACY_KINDS:
            return _legacy_result(data)
        if kind == MACHINE:
            raise SchemaError("no schema_version")
        raise SchemaError(f"not a dip bench result (kind {kind!r})")
    if not _is_int(version) or version < 1:
        raise SchemaError(f"schema_version {version!r} is not one this dip reads ({SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version} is newer than this dip reads ({SCHEMA_VERSION}): update dip")
    if kind != MACHINE:
        raise SchemaError(f"not a dip bench result (kind {kind!r} with schema_version {version})")
    return _machine_result(data)


def read_json(path: Path) -> Any:
    """A file's JSON; SchemaError (one line, naming the file) when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SchemaError(f"{path}: cannot read it ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    return data


def read_result(path: Path) -> dict[str, Any]:
    """One file read and validated; SchemaError (one line, naming the file) when it cannot be used."""
    return validate(read_json(path), path)


def result_files(paths: list[Path]) -> tuple[list[tuple[Path, bool]], list[str]]:
    """The JSON files named or inside the folders named (each with whether it came from a folder), and one line per
    path that does not exist."""
    files: list[tuple[Path, bool]] = []
    problems = []
    for p in paths:
        if p.is_dir():
            files += [(f, True) for f in sorted(p.glob("*.json"))]
        elif p.exists():
            files.append((p, False))
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


def load_folder(paths: list[Path]) -> tuple[list[LoadedResult], list[str]]:
    """The good results in files and folders, and one line per bad file (broken or foreign JSON, a schema version
    this dip does not read, missing or mistyped fields); bad files do not stop the rest. A folder's results of other
    bench kinds (auto-stop, ladder, loop pair) are skipped silently; named one by one, they are a problem line."""
    files, problems = result_files(paths)
    results = []
    for path, in_folder in files:
        try:
            data = read_result(path)
        except OtherKindError as exc:
            if not in_folder:
                problems.append(str(exc))
            continue
        except SchemaError as exc:
            problems.append(str(exc))
            continue
        results.append(LoadedResult(path, data["schema_version"], data))
    return results, problems


def results_of_kind(paths: list[Path], kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """The readable results of one other kind (OTHER_KINDS) in the files and folders named, oldest first by file
    name; files of other kinds and unreadable ones are passed over (`load_folder` reports those)."""
    files, _ = result_files(paths)
    found = []
    for path, _ in files:
        try:
            data = read_json(path)
        except SchemaError:
            continue
        if isinstance(data, dict) and data.get("kind") == kind:
            found.append((path, data))
    return found
