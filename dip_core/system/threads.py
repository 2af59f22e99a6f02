"""How many CPU threads a backend runs: the cores this process may use that other processes leave free.

A parallel loop ends when its slowest thread does. With one thread per core and other jobs on
those cores, some thread of every loop waits for a time slice, and torch's OpenMP threads spin
while they wait for it: `dip bench speed --sizes 64 --backend torch` read 4366 ms/iter on a busy
machine, 118.7 with OMP_NUM_THREADS=1. So a backend runs one thread per core that is free when it
starts, unless told otherwise: `--threads N`, then DIP_THREADS, then OMP_NUM_THREADS.

"Free" is measured, not averaged: the cores the other processes kept busy over SAMPLE_S seconds
(/proc/stat, less this process's own CPU time). The 1-minute load average lags by a minute both
ways: it misses a job that just started and still counts one that just ended (such as the
previous row of `dip bench speed`); it is the fallback where /proc/stat is missing (macOS).

Apple silicon has performance and efficiency cores; a thread on an efficiency core is the slowest
of every parallel loop it is part of, so on a Mac dip runs at most one thread per performance core
(sysctl hw.perflevel0/1.physicalcpu), taking the load as spread over all cores.
dip_core must not import mlx or torch: the backends apply the choice.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

THREADS_VAR = "DIP_THREADS"  # both backends; the MLX CPU kernels' pool also reads it when it starts
OMP_VAR = "OMP_NUM_THREADS"  # torch's OpenMP reads it too; honoured for MLX alike
SAMPLE_S = 0.1  # how long the busy cores are measured
CACHE_S = 10  # backends started within this many seconds share one measurement
STAT = "/proc/stat"


@dataclass(frozen=True)
class CoreKinds:
    """A Mac's cores by kind (Apple silicon's performance levels 0 and 1)."""

    performance: int
    efficiency: int


def _sysctl_int(name: str) -> int | None:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return int(value) if done.returncode == 0 and value.isdigit() else None


@functools.lru_cache(maxsize=1)
def core_kinds() -> CoreKinds | None:
    """Performance and efficiency cores on macOS (sysctl); None elsewhere, or where the Mac has one kind."""
    if platform.system() != "Darwin":
        return None
    fast, slow = _sysctl_int("hw.perflevel0.physicalcpu"), _sysctl_int("hw.perflevel1.physicalcpu")
    return CoreKinds(fast, slow) if fast and slow else None


@dataclass(frozen=True)
class ThreadChoice:
    """The threads a backend runs, why, and the load it saw (None when it did not measure one)."""

    threads: int
    reason: str  # "--threads", "DIP_THREADS", "OMP_NUM_THREADS", "2 of 2 cores free", "1 of 2 cores free (load 1.3)"
    load: float | None = None  # cores kept busy by other processes


def usable_cores() -> set[int] | None:
    """The CPUs this process may run on (None where the platform does not say: macOS, Windows)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def core_count() -> int:
    """How many cores this process may use."""
    cores = usable_cores()
    return len(cores) if cores else os.cpu_count() or 1


def _cpu_times(path: str, cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) clock ticks since boot summed over `cpus` (None: all), from /proc/stat; None if unreadable."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
            continue
        ticks = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal (guest is in user)
        if len(ticks) < 5:
            return None
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]  # idle and I/O wait are free
    return (busy, total) if total > 0 else None


def sample_load(path: str = STAT, seconds: float = SAMPLE_S) -> float | None:
    """Cores of this process's set kept busy by other processes over `seconds`; None without /proc/stat.

    Sleeps `seconds`, so this process's own threads are mostly idle meanwhile; the CPU time they
    used anyway is taken off.
    """
    cpus = usable_cores()
    before, own = _cpu_times(path, cpus), time.process_time()
    if before is None:
        return None
    time.sleep(seconds)
    after, own = _cpu_times(path, cpus), time.process_time() - own
    if after is None or after[1] <= before[1]:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    ncores = len(cpus) if cpus else os.cpu_count() or 1
    window = (after[1] - before[1]) / (ncores * tick)  # seconds, as the kernel counted them
    return max(0.0, ((after[0] - before[0]) / tick - own) / window)


def average_load() -> float | None:
    """The 1-minute load average, scaled to this process's share of the machine's cores; None where unknown."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return load * core_count() / (os.cpu_count() or core_count())


@functools.lru_cache(maxsize=1)
def _load_in(window: int) -> float | None:
    """One measurement per CACHE_S window (`window` is only the cache key)."""
    sampled = sample_load()
    return sampled if sampled is not None else average_load()


def current_load() -> float | None:
    """Cores kept busy by other processes now (measured at most once per CACHE_S seconds)."""
    return _load_in(int(time.monotonic() // CACHE_S))


def _from_env(env: Mapping[str, str], var: str) -> int | None:
    """A thread count from an environment variable (OMP_NUM_THREADS may list one per level: the first)."""
    value = env.get(var, "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def free_threads(cores: int, load: float) -> int:
    """One thread per core the load leaves free (a core is taken by more than half a core's load); at least 1."""
    return max(1, min(cores, math.floor(cores - load + 0.5)))


def choose_threads(
    requested: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    load: float | None = None,
    kinds: CoreKinds | None = None,
) -> ThreadChoice:
    """The CPU threads a backend should run: `requested` (--threads), DIP_THREADS, OMP_NUM_THREADS, else the
    cores free now (on a Mac, at most its performance cores). `env`, `cores`, `load` and `kinds` default to this
    process's and the machine's (tests inject them)."""
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    env = os.environ if env is None else env
    for var in (THREADS_VAR, OMP_VAR):
        n = _from_env(env, var)
        if n is not None:
            return ThreadChoice(n, var)
    cores = core_count() if cores is None else cores
    load = current_load() if load is None else load
    kinds = core_kinds() if kinds is None else kinds
    if kinds is not None:
        return _on_performance_cores(kinds, load)
    if load is None:
        return ThreadChoice(cores, f"{cores} cores (load unknown)")
    n = free_threads(cores, load)
    shown = f" (load {load:.1f})" if n < cores else ""
    return ThreadChoice(n, f"{n} of {cores} cores free{shown}", round(load, 2))


def _on_performance_cores(kinds: CoreKinds, load: float | None) -> ThreadChoice:
    """One thread per performance core that the load (over all cores, the 1-minute average on macOS) leaves."""
    fast, total = kinds.performance, kinds.performance + kinds.efficiency
    left_out = f"{kinds.efficiency} efficiency cores left out: a parallel loop waits for its slowest thread"
    if load is None:
        return ThreadChoice(fast, f"{fast} performance cores ({left_out}; load unknown)")
    n = min(fast, free_threads(total, load))
    shown = f", load {load:.1f} on {total} cores" if n < fast else ""
    return ThreadChoice(n, f"{n} of {fast} performance cores free ({left_out}{shown})", round(load, 2))


def describe_cores() -> str:
    """How this machine's load is measured and its cores counted, for `dip doctor`."""
    kinds = core_kinds()
    how = "/proc/stat over 0.1 s" if os.path.exists(STAT) else "the 1-minute load average (no /proc/stat here)"
    if kinds is None:
        return f"{core_count()} cores; load from {how}"
    return (
        f"{kinds.performance} performance + {kinds.efficiency} efficiency cores: at most one thread per "
        f"performance core; load from {how}"
    )
