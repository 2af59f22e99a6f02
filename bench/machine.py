"""`dip bench all`: one machine's benchmark in one command, written as one self-describing file.

The file (kind "machine", bench.schema's version) holds who measured (chip, memory, OS, power, versions,
commit), the bare step and `dip run`'s loop at each size on every installed backend, peak memory, the quick
quality cases over seeds, the cross-check on the machine's default device, and optionally a sustained run.
It is rewritten after every measurement, so a Ctrl-C keeps what finished (`finished: false`).
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fingerprint import blas, cpu_name, fingerprint, git_revision, package_version, run_command
from bench.fingerprint import slug as machine_slug
from bench.schema import SCHEMA_VERSION
from dip_core.errors import UserError
from dip_core.system.atomic import write_json
from dip_core.system.version import dip_version

SIZES = (128, 256, 512)
SPEED_KINDS = ("step", "loop")
SPEED_TIMING = {"warmup": 2, "blocks": 5, "per_block": 3}
CROSSCHECK = {"size": 64, "steps": 20, "floor_samples": 3}


@dataclass(frozen=True)
class AllSettings:
    sizes: tuple[int, ...] = SIZES  # image sides of the speed rows
    seeds: int = 5  # quality: runs per case and backend
    sustained_s: float = 0.0  # seconds of the sustained run (0: none)
    sustained_size: int = 256  # its image side
    precision: str | None = None  # None: each device's default
    quality: bool = True
    profile: str = "quick"  # the quality profile (bench.quality.PROFILES; "smoke" for the test suite)
    crosscheck: bool = True
    crosscheck_config: str = "default"  # the cross-check's network
    data: Path | None = None  # the paper's images: their quick cases too
    backends: tuple[str, ...] = ()  # () : every installed one


@dataclass
class Job:
    """One measurement: what the progress display names, its estimated seconds, and the work."""

    what: str
    estimate_s: float
    run: Callable[[], None]
    section: str = "speed"


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)

    @property
    def estimate_s(self) -> float:
        return sum(j.estimate_s for j in self.jobs)


def power_source() -> str | None:
    """On a laptop, what it runs on ("AC Power", "Battery Power"); None where it cannot be read."""
    if sys.platform == "darwin":
        text = run_command(["pmset", "-g", "batt"]) or ""
        found = re.search(r"drawing from '([^']+)'", text)
        return found.group(1) if found else None
    supplies = Path("/sys/class/power_supply")
    try:
        mains = [p for p in supplies.iterdir() if (p / "type").read_text().strip() == "Mains"]
        batteries = [p for p in supplies.iterdir() if (p / "type").read_text().strip() == "Battery"]
    except OSError:
        return None
    if not batteries:
        return None  # a desktop or a server: nothing to say
    online = any((p / "online").read_text().strip() == "1" for p in mains)
    return "AC Power" if online else "Battery Power"


def apple_gpu_cores() -> int | None:
    """The GPU core count of an Apple chip (system_profiler), None elsewhere."""
    if sys.platform != "darwin":
        return None
    text = run_command(["system_profiler", "SPDisplaysDataType", "-json"])
    if not text:
        return None
    try:
        displays = json.loads(text).get("SPDisplaysDataType", [])
    except json.JSONDecodeError:
        return None
    for d in displays:
        cores = str(d.get("sppci_cores", "")).strip()
        if cores.isdigit():
            return int(cores)
    return None


def nvidia_gpu() -> tuple[str | None, str | None]:
    """The first NVIDIA GPU's name and driver version (nvidia-smi), or Nones."""
    text = run_command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not text:
        return None, None
    name, _, driver = text.splitlines()[0].partition(",")
    return name.strip() or None, driver.strip() or None


def machine_info() -> dict[str, Any]:
    """Who measured: the chip (Apple: its name and GPU cores; Linux: the CPU model; NVIDIA: the GPU and driver),
    memory, OS and power source."""
    fp = fingerprint()
    cpu = cpu_name()
    gpu_cores = apple_gpu_cores()
    gpu, driver = nvidia_gpu()
    gpu = gpu or fp.get("gpu")
    chip = cpu if cpu.startswith("Apple") else (gpu if gpu else cpu)
    label = f"{chip} ({gpu_cores}-core GPU)" if gpu_cores else (chip if chip != cpu else f"{cpu} ({fp['cores']} cores)")
    return {
        "label": label,
        "chip": chip,
        "cpu": cpu,
        "cores": fp["cores"],
        "gpu": gpu,
        "gpu_cores": gpu_cores,
        "gpu_driver": driver,
        "memory_gib": fp["memory_gib"],
        "os": fp["os"],
        "arch": platform.machine(),
        "power_source": power_source(),
    }


def software_info() -> dict[str, Any]:
    return {
        "dip": dip_version(),
        "commit": git_revision(),
        "python": platform.python_version(),
        "mlx": package_version("mlx"),
        "torch": package_version("torch"),
        "blas": blas(),
    }


def machine_result(date: str, command: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """A result file of this machine (kind "machine", bench/schema.py's version) with every section empty: who
    measured and with which settings, before any measurement."""
    return {
        "kind": "machine",
        "schema_version": SCHEMA_VERSION,
        "date": date,
        "command": command,
        "finished": False,
        "machine": machine_info(),
        "software": software_info(),
        "settings": settings,
        "speed": [],
        "skipped": [],
        "matmul_gflops": {},
        "quality": None,
        "crosscheck": None,
        "sustained": None,
    }


def file_name(machine: dict[str, Any], date: str) -> str:
    """`<machine>-<date>T<hhmm>.json`: named after the machine and the start (two runs a day keep both files)."""
    slug = machine_slug(machine["label"], 60)
    return f"{slug}-{date[:10]}T{date[11:13]}{date[14:16]}.json"


def _device_kind(device: str) -> str:
    return "cpu" if device == "cpu" else "gpu"


class MachineRun:
    """The measurements of one `dip bench all`, the file they go to, and the plan that makes them."""

    def __init__(self, settings: AllSettings, path: Path | None, command: str) -> None:
        from dip_core.backend import available_backends

        self.settings = settings
        self.backends = list(settings.backends) or available_backends()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        settings_record = {
            "precision": settings.precision or "default",
            "threads": None,
            "sizes": list(settings.sizes),
            "seeds": settings.seeds if settings.quality else 0,
            "quality_profile": settings.profile,
            "crosscheck_config": settings.crosscheck_config,
            "sustained_s": settings.sustained_s,
            "backends": self.backends,
        }
        self.data: dict[str, Any] = machine_result(now, command, settings_record)
        self.path = path or Path(file_name(self.data["machine"], now))
        self.probe_ms: dict[str, float] = {}  # ms per step at the smallest size, per backend: the estimates' base

    def save(self) -> None:
        write_json(self.path, self.data)

    # The plan -----------------------------------------------------------------------------------------------------

    def probe(self) -> None:
        """Time a few steps per backend at the smallest size: every estimate scales from these."""
        from bench.speed import SpeedCase, run_isolated

        size = min(self.settings.sizes)
        for b in self.backends:
            try:
                row = run_isolated(SpeedCase(b, "auto", size, precision=self.settings.precision), 1, 1, 2)
            except RuntimeError as exc:
                raise UserError(f"{b} cannot run here: {exc}") from None
            self.probe_ms[b] = row["ms_per_iter"]
            self.data["settings"]["threads"] = row.get("threads")

    def _step_s(self, backend: str, size: int) -> float:
        """Estimated seconds per step at `size`: the probe scaled by pixels (the step is nearly linear in them)."""
        base = min(self.settings.sizes)
        return self.probe_ms[backend] / 1000 * max(1.0, (size / base) ** 2)

    def plan(self) -> Plan:
        plan = Plan()
        t = SPEED_TIMING
        steps = (t["warmup"] + t["blocks"]) * t["per_block"]
        for size in self.settings.sizes:
            for kind in SPEED_KINDS:
                for b in self.backends:
                    cost = steps * self._step_s(b, size) * (2 if kind == "loop" else 1) + 4  # + a process start
                    plan.jobs.append(Job(f"{b} {kind} {size}²", cost, self._speed_job(b, size, kind)))
        for b in self.backends:
            plan.jobs.append(Job(f"{b} matmul peak", 5.0, self._matmul_job(b)))
        if self.settings.quality:
            plan.jobs += self._quality_jobs()
        if self.settings.crosscheck and {"mlx", "torch"} <= set(self.backends):
            runs = 2 + CROSSCHECK["floor_samples"]
            est = runs * CROSSCHECK["steps"] * 3 * self._step_s(self.backends[0], CROSSCHECK["size"]) + 10
            plan.jobs.append(Job("cross-check", est, self._crosscheck_job, "crosscheck"))
        if self.settings.sustained_s > 0:
            plan.jobs.append(Job(f"sustained {self.settings.sustained_s:.0f} s", self.settings.sustained_s + 10,
                                 self._sustained_job, "sustained"))  # fmt: skip
        return plan

    # Speed --------------------------------------------------------------------------------------------------------

    def _fits(self, backend: str, size: int) -> str | None:
        """Why a size does not fit this device's memory (None: it fits)."""
        from bench.speed import SpeedCase, network_for
        from dip_core.backend import get_backend
        from dip_core.run.memory import shortfall

        be = get_backend(backend, "auto", self.settings.precision)
        short = shortfall(network_for(SpeedCase(backend, "auto", size)), size, size, be)
        if short is None:
            return None
        need, free = short
        return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {be.device}"

    def _speed_job(self, backend: str, size: int, kind: str) -> Callable[[], None]:
        def run() -> None:
            from bench.speed import SpeedCase, run_isolated

            why = self._fits(backend, size)
            if why is not None:
                self.data["skipped"].append({"backend": backend, "device": "auto", "size": size, "kind": kind,
                                             "reason": why})  # fmt: skip
                return
            case = SpeedCase(backend, "auto", size, kind=kind, precision=self.settings.precision)
            try:
                row = run_isolated(case, **SPEED_TIMING)
            except RuntimeError as exc:  # e.g. out of memory on the device although the estimate fitted
                self.data["skipped"].append({"backend": backend, "device": "auto", "size": size, "kind": kind,
                                             "reason": str(exc)})  # fmt: skip
                return
            self.data["speed"].append(
                {
                    "backend": backend,
                    "device": _device_kind(row["device"]),
                    "device_name": row["device"],
                    "precision": row["precision"],
                    "threads": row.get("threads"),
                    "size": size,
                    "kind": kind,
                    "ms_per_iter": row["ms_per_iter"],
                    "ms_min": row["ms_min"],
                    "ms_max": row["ms_max"],
                    "peak_memory_bytes": row["peak_memory_bytes"],
                    "memory_source": row["memory_source"],
                    "flops": row["flops"],
                    "gflops_per_s": row["gflops_per_s"],
                    "step": row["step"],
                }
            )

        return run

    def _matmul_job(self, backend: str) -> Callable[[], None]:
        def run() -> None:
            from bench.speed import _matmul_isolated
            from dip_core.backend import get_backend

            device = _device_kind(get_backend(backend, "auto", self.settings.precision).device)
            measured = _matmul_isolated(backend, "auto", self.settings.precision)
            self.data["matmul_gflops"][f"{backend}/{device}"] = measured["gflops"]

        return run

    # Quality ------------------------------------------------------------------------------------------------------

    def _quality_jobs(self) -> list[Job]:
        from bench.quality import BUILTIN_CASES, PROFILES, cases_for

        cases = list(BUILTIN_CASES) + (cases_for(self.settings.data) if self.settings.data else [])
        iters = PROFILES[self.settings.profile]["iters"]
        size = PROFILES[self.settings.profile]["long_side"]
        self.data["quality"] = {"profile": self.settings.profile, "seeds": list(range(self.settings.seeds)), "rows": [],
                                "summary": [], "differences": []}  # fmt: skip
        jobs = []
        for case in cases:
            for seed in range(self.settings.seeds):
                for b in self.backends:
                    est = iters.get(case.task, 300) * self._step_s(b, size) * 0.5 + 2
                    jobs.append(Job(f"{b} {case.name} seed {seed}", est, self._quality_job(case, b, seed), "quality"))
        return jobs

    def _quality_job(self, case: Any, backend: str, seed: int) -> Callable[[], None]:
        def run() -> None:
            from bench.quality import run_case, seed_statistics

            row = run_case(case, backend, "auto", self.settings.profile, self.settings.data, seed=seed,
                           precision=self.settings.precision)  # fmt: skip
            q = self.data["quality"]
            q["rows"].append({**row, "device": _device_kind(row["device"]), "device_name": row["device"]})
            q.update(seed_statistics(q["rows"]))

        return run

    # Cross-check and sustained ------------------------------------------------------------------------------------

    def _crosscheck_job(self) -> None:
        from dip_core.backend import get_backend
        from dip_core.model.config import load_config
        from dip_core.run.crosscheck import CrossCheckCase, agrees, crosscheck

        precision = self.settings.precision if self.settings.precision in (None, "fp32", "tf32") else None
        a = get_backend("mlx", "auto", precision)
        b = get_backend("torch", "auto", precision)
        cfg = load_config(self.settings.crosscheck_config)
        side = CROSSCHECK["size"]
        case = CrossCheckCase(cfg, height=side, width=side, steps=CROSSCHECK["steps"], seed=0, lr=0.01)
        report = crosscheck(a, b, case, floor_samples=CROSSCHECK["floor_samples"]).to_json()
        self.data["crosscheck"] = {
            "device": _device_kind(a.device),
            "devices": report["devices"],
            "config": self.settings.crosscheck_config,
            "size": [side, side],
            "precision": report["precision"],
            "verdict": report["verdict"],
            "passed": agrees(report["verdict"]),  # as `dip crosscheck` judges it (exit code 0)
            "max_abs_diff": report["forward_max_abs_diff"],
            "tolerance": report["targets"]["forward_max_abs_diff"]["target"],
            "grad_max_rel_diff": report["grad_max_rel_diff"],
            "loss_max_rel_diff": report["loss_max_rel_diff"],
            "excess": report["excess"],
        }

    def _sustained_job(self) -> None:
        """ms/iter over the whole span, sampled about every half second, on the first backend: fanless machines
        slow down once hot."""
        from bench.speed import SpeedCase, bare_spec, network_for
        from dip_core.backend import get_backend

        backend = self.backends[0]
        size = self.settings.sustained_size
        be = get_backend(backend, "auto", self.settings.precision)
        spec = bare_spec(network_for(SpeedCase(backend, "auto", size)), size, size, be.precision)
        session = be.session(spec)
        session.read(session.step())  # compile and warm up
        samples: list[list[float]] = []
        start = time.perf_counter()
        record = {"backend": backend, "device": _device_kind(be.device), "size": size, "samples": samples}
        self.data["sustained"] = record
        while (elapsed := time.perf_counter() - start) < self.settings.sustained_s or len(samples) < 2:
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 0.5 or n == 0:
                session.read(session.step())
                n += 1
            samples.append([round(time.perf_counter() - start, 3), 1000 * (time.perf_counter() - t0) / n])
            record.update(sustained_summary(samples, elapsed))
            if len(samples) % 20 == 0:
                self.save()
        record.update(sustained_summary(samples, time.perf_counter() - start))

    # Running ------------------------------------------------------------------------------------------------------

    def run(self, plan: Plan, on_job: Callable[[Job, int, float], None] | None = None) -> None:
        """Every job in turn, the file rewritten after each; Ctrl-C leaves the file with what finished."""
        self.save()
        for k, job in enumerate(plan.jobs):
            if on_job is not None:
                on_job(job, k, 0.0)
            start = time.perf_counter()
            job.run()
            self.save()
            if on_job is not None:
                on_job(job, k + 1, time.perf_counter() - start)
        self.data["finished"] = True
        self.save()


def sustained_summary(samples: list[list[float]], seconds: float) -> dict[str, Any]:
    """First-minute and last-minute ms/iter (means of the samples in each; on a run under two minutes, the first
    and last half)."""
    span = min(60.0, seconds / 2)
    first = [ms for t, ms in samples if t <= span] or [samples[0][1]]
    last = [ms for t, ms in samples if t > seconds - span] or [samples[-1][1]]
    return {
        "seconds": round(seconds, 1),
        "first_minute_ms": float(sum(first) / len(first)),
        "last_minute_ms": float(sum(last) / len(last)),
        "window_s": span,
    }
