"""What the page may ask for, checked against fixed lists before anything runs.

The client names no file on disk: a network is one of NETS by name (never a JSON file), a blur kernel is a
`gaussian:`, `box:` or `motion:` spec with bounded numbers (never a kernel image's path), the images are ids of
this session's uploads. Which task takes which option is the task registry's (`takes`), never a list here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from dip_core.backend import BackendName, Device
from dip_core.errors import UserError
from dip_core.model.config import NETS
from dip_core.problem.presets import PRESETS
from dip_core.problem.registry import Task
from dip_core.problem.task_options import TAKEN_BY, takes
from dip_core.run.options import RunOptions, bounds_text, option_bounds, within

# Blur kernels the page may ask for, and the largest value of each (a larger one would make a huge kernel).
KERNEL_LIMITS = {"gaussian": 20.0, "box": 63.0, "motion": 63.0}
_KERNEL = re.compile(r"^(gaussian|box|motion):(\d+(?:\.\d+)?)(?:,(-?\d+(?:\.\d+)?))?$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
MASKED_TASKS = TAKEN_BY["mask"]
DEFAULT_KERNEL = "gaussian:1.5"
# The task-specific options the page may send: one a task does not take is refused, not dropped.
PAGE_TASK_OPTIONS = ("kernel", "mask", "mask_color", "peak")


class BadRequest(UserError):
    """A request the page should not have sent (answered 400 with the message)."""


@dataclass(frozen=True)
class RunRequest:
    """One run as the page asks for it: the task, where it runs, the preset and its few overrides, the inputs."""

    task: Task
    image: str  # upload ids of this session
    mask: str | None = None
    reference: str | None = None
    backend: BackendName = BackendName.MLX
    device: Device = Device.AUTO
    preset: str | None = None  # None: the task's
    net: str | None = None  # None: the preset's
    iters: int | None = None  # None: the preset's (auto-stop where the task has it)
    kernel: str | None = None  # deblur
    mask_color: str | None = None  # inpaint/restore: the overlay's colour is the mask
    peak: float | None = None  # poisson: photons at white (None: estimated from the input)
    seed: int = 0

    def options(self, **more: Any) -> RunOptions:
        """The run's RunOptions (plus `more`, e.g. save_every)."""
        return RunOptions(
            backend=self.backend, device=self.device, preset=self.preset, net=self.net, iters=self.iters,
            kernel=self.kernel, mask_color=self.mask_color, peak=self.peak, seed=self.seed, **more,
        )  # fmt: skip


def _choice(body: dict[str, Any], name: str, allowed: list[str], default: str | None = None) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        return default
    if not isinstance(value, str) or value not in allowed:
        raise BadRequest(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        raise BadRequest(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and not value.is_integer():
        raise BadRequest(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low:,} and {high:,}, got {number:,}")
    return number


def _number(body: dict[str, Any], name: str) -> float | None:
    """A number within the run option's own bounds (RunOptions'), None when not given."""
    value = body.get(name)
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not within(name, number):
        raise BadRequest(f"{name} {bounds_text(name)}, got {value!r}")
    return number


def _int_bounds(name: str) -> tuple[int, int]:
    """A whole-number run option's bounds, as RunOptions states them."""
    low, high = option_bounds(name)
    return int(low or 0), int(high if high is not None else 2**63 - 1)


def _id(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        if required:
            raise BadRequest(f"no {name}: upload one first")
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"bad {name} id")
    return value


def check_kernel(spec: Any) -> str:
    """A blur kernel spec the page may send: gaussian:S, box:K or motion:L,A with bounded values."""
    if not isinstance(spec, str):
        raise BadRequest(f"the kernel is a text like gaussian:2, got {spec!r}")
    m = _KERNEL.match(spec.strip())
    if m is None:
        raise BadRequest(f"unknown kernel {spec!r}: use gaussian:SIGMA, box:SIZE or motion:LENGTH,ANGLE")
    kind, first, second = m.groups()
    if (second is None) != (kind != "motion"):
        raise BadRequest(f"kernel {spec!r}: {'motion takes LENGTH,ANGLE' if kind == 'motion' else 'one number'}")
    if float(first) > KERNEL_LIMITS[kind]:
        raise BadRequest(f"kernel {spec!r}: at most {KERNEL_LIMITS[kind]:g} for {kind}")
    return spec.strip()


def _takers(option: str) -> str:
    """The tasks that take a task-specific option, in words: "deblur takes", "inpaint and restore take"."""
    names = [t.value for t in Task if t in TAKEN_BY[option]]
    return f"{' and '.join(names)} take{'s' * (len(names) == 1)}"


def task_presets(task: Task) -> list[str]:
    return [name for name, p in PRESETS.items() if p.task is task]


MAX_JSON_DEPTH = 8  # a run's settings are one flat object: anything deeper is not the page's


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(data: bytes) -> Any:
    """The JSON of a request, refused (BadRequest) when it is not JSON or nests deeper than MAX_JSON_DEPTH, which
    is checked before parsing so that no input can exhaust the parser's recursion."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadRequest("the request is not valid JSON (not UTF-8)") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"the request's JSON is nested more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest("the request is not valid JSON") from None


def parse_run(body: Any, max_iters: int) -> RunRequest:
    """A RunRequest from the page's JSON, every field checked; BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    task = Task(_choice(body, "task", [t.value for t in Task], "denoise"))
    for name in PAGE_TASK_OPTIONS:  # an option the task does not use is refused, not dropped
        if body.get(name) not in (None, "") and not takes(task, name):
            raise BadRequest(f"{task.value} does not use {name} (only {_takers(name)} it)")
    kernel = None
    if takes(task, "kernel"):
        kernel = check_kernel(body.get("kernel") or DEFAULT_KERNEL)
    colour = body.get("mask_color") or None
    if colour is not None and (not isinstance(colour, str) or not _COLOUR.match(colour)):
        raise BadRequest(f"mask_color is a #rrggbb colour, got {colour!r}")
    mask = _id(body, "mask")
    if takes(task, "mask") and (mask is None) == (colour is None):
        raise BadRequest(f"{task.value} needs a mask: paint one, load one, or choose the overlay colour (one only)")
    return RunRequest(
        task=task,
        image=_id(body, "image", required=True),  # type: ignore[arg-type]
        mask=mask,
        reference=_id(body, "reference"),
        backend=BackendName(_choice(body, "backend", [b.value for b in BackendName], BackendName.MLX.value)),
        device=Device(_choice(body, "device", [d.value for d in Device], Device.AUTO.value)),
        preset=_choice(body, "preset", task_presets(task)),
        net=_choice(body, "net", list(NETS)),
        iters=_integer(body, "iters", _int_bounds("iters")[0], max_iters),
        kernel=kernel,
        mask_color=colour,
        peak=_number(body, "peak"),
        seed=_integer(body, "seed", *_int_bounds("seed")) or 0,
    )
