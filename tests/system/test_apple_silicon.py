"""The Apple-silicon paths (MLX on Metal, torch on MPS), simulated on Linux: no Mac is at hand, so each test
fakes what differs there (MLX's device info, a torch without an op, the interpreter setup.sh finds)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dip_core.problem.degrade import add_noise
from dip_core.run.api import restore
from tests.common import ROOT, TINY_NET
from tests.conftest import BACKENDS
from tests.images import synthetic

needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
needs_mlx = pytest.mark.skipif("mlx" not in BACKENDS, reason="needs mlx")


@pytest.fixture(scope="module")
def noisy():
    return add_noise(synthetic(40, 36), 25, 0)


# --- 1. installing on a stock Mac ---


TOOLS = ("sh", "mkdir", "cp", "rm", "dirname", "id", "cat", "printf")  # what setup.sh and the fakes call


def _fake_python(path, version: str, machine: str) -> None:
    """An interpreter that reports `version` and `machine`, makes venvs of itself and logs what pip is asked."""
    path.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  -c) echo "{version} {machine}";;\n'
        '  -m) case "$2" in\n'
        '        venv) mkdir -p "$3/bin" && cp "$0" "$3/bin/python";;\n'
        '        pip) echo "$0 $*" >> "$PIP_LOG";;\n'
        "      esac;;\n"
        "esac\n"
    )
    path.chmod(0o755)


def _mac(tmp_path, pythons: dict[str, tuple[str, str]], macos: str = "15.1", system: str = "Darwin"):
    """A copy of the project's setup.sh in a folder of its own, and a PATH holding only the shell tools it needs,
    a faked `uname` and `sw_vers`, and the fake interpreters `pythons` (name: (version, machine))."""
    import shutil

    root, bin_ = tmp_path / "project", tmp_path / "bin"
    (root / "scripts").mkdir(parents=True)
    bin_.mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    for tool in TOOLS:
        (bin_ / tool).symlink_to(shutil.which(tool))
    fakes = {"uname": f'[ "$1" = -m ] && echo arm64 || echo {system}', "sw_vers": f"echo {macos}"}
    for name, body in fakes.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    for name, (version, machine) in pythons.items():
        _fake_python(bin_ / name, version, machine)
    return root, bin_


def _setup(root, bin_, python: str | None):
    import shutil
    import subprocess

    env = {"PATH": str(bin_), "PIP_LOG": str(root / "pip.log"), "HOME": str(root)}
    if python is not None:
        env["PYTHON"] = str(bin_ / python) if (bin_ / python).exists() else python
    return subprocess.run([shutil.which("bash"), "scripts/setup.sh"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_setup_on_a_stock_mac_refuses_apples_python_in_one_line_and_leaves_no_venv(tmp_path):
    """Only Apple's python3 (3.9), and a .venv an earlier try made with it: setup says what it needs in one
    line, exits non-zero, and removes that .venv rather than reuse it."""
    root, bin_ = _mac(tmp_path, {"python3": ("3.9", "arm64"), "python3.9": ("3.9", "arm64")})
    _fake_python((root / ".venv" / "bin").mkdir(parents=True) or root / ".venv" / "bin" / "python", "3.9", "arm64")
    done = _setup(root, bin_, "python3.9")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert lines[-1].startswith("setup: dip needs a native (arm64) Python 3.10 or newer and found none (")
    assert "python3: 3.9 arm64" in lines[-1] and "PYTHON=" in lines[-1]
    assert len([line for line in lines if "found none" in line]) == 1
    assert not (root / ".venv").exists() and not (root / "pip.log").exists()


def test_setup_on_a_mac_picks_a_suitable_python_over_a_39_one(tmp_path):
    root, bin_ = _mac(
        tmp_path,
        {"python3": ("3.9", "arm64"), "python3.9": ("3.9", "arm64"), "python3.13": ("3.13", "x86_64"),
         "python3.12": ("3.12", "arm64")},
    )  # fmt: skip
    done = _setup(root, bin_, "python3.9")
    assert done.returncode == 0, done.stderr
    assert "using python3.12" in done.stderr  # 3.13 here is an x86_64 build, which runs under Rosetta
    made = (root / ".venv" / "bin" / "python").read_text()
    assert '"3.12 arm64"' in made
    asked = (root / "pip.log").read_text().splitlines()  # pip runs in the new .venv only
    assert asked and all(line.startswith(".venv/bin/python -m pip") for line in asked)
    assert any("install -e .[mlx,torch,dev,browser,ui]" in line for line in asked)


def test_setup_refuses_a_mac_older_than_macos_14(tmp_path):
    root, bin_ = _mac(tmp_path, {"python3.12": ("3.12", "arm64")}, macos="13.6.1")
    done = _setup(root, bin_, None)
    assert done.returncode != 0 and not (root / ".venv").exists()
    assert done.stderr.strip().splitlines() == [
        "setup: MLX needs macOS 14 or newer and this Mac runs macOS 13.6.1; update macOS first "
        "(System Settings > General > Software Update)"
    ]


def test_setup_on_linux_with_only_39_stops_before_installing_anything(tmp_path):
    root, bin_ = _mac(tmp_path, {"python3": ("3.9", "x86_64")}, system="Linux")
    done = _setup(root, bin_, None)
    assert done.returncode != 0 and not (root / ".venv").exists()
    assert done.stderr.strip().startswith("setup: dip needs Python 3.10 or newer and found none (python3: 3.9")


def test_setup_makes_the_venv_again_for_the_python_named(tmp_path):
    root, bin_ = _mac(tmp_path, {"python3.11": ("3.11", "arm64"), "python3.12": ("3.12", "arm64")})
    _fake_python((root / ".venv" / "bin").mkdir(parents=True) or root / ".venv" / "bin" / "python", "3.11", "arm64")
    kept = _setup(root, bin_, None)  # a suitable .venv, no interpreter named: kept
    assert kept.returncode == 0 and '"3.11 arm64"' in (root / ".venv" / "bin" / "python").read_text()
    done = _setup(root, bin_, "python3.12")
    assert done.returncode == 0, done.stderr
    assert '"3.12 arm64"' in (root / ".venv" / "bin" / "python").read_text()


# --- 2. torch on MPS ---


@needs_torch
def test_torch_runs_without_index_copy(noisy, monkeypatch):
    """The variance window is written without `index_copy_` (no MPS kernel before torch 2.8, ~100x slower than
    the CPU on MPS after): a run without a reference, which keeps the window, never calls it."""
    import torch

    def missing(*args, **kwargs):
        raise NotImplementedError("aten::index_copy.out is not implemented for the MPS device")

    monkeypatch.setattr(torch.Tensor, "index_copy_", missing)
    monkeypatch.setattr(torch.Tensor, "index_copy", missing)
    r = restore("denoise", noisy, backend="torch", device="cpu", iters=30, stop="auto", window=5, seed=1, **TINY_NET)
    assert r.fit.iters_done > 0 and any(v is not None for v in r.fit.variance_curve)


class _FakeEvent:
    """An event as torch.mps.event.Event has them (record, synchronize), counted; a CPU step needs no waiting."""

    made = recorded = waited = 0

    def __init__(self) -> None:
        type(self).made += 1

    def record(self) -> None:
        type(self).recorded += 1

    def synchronize(self) -> None:
        type(self).waited += 1


@needs_torch
def test_mps_reads_its_scalars_through_an_event_and_a_plain_host_copy(monkeypatch):
    """On MPS a session is pipelined as on CUDA: an MPS event (torch.mps.event.Event) behind a non-blocking copy
    into unpinned host memory (MPS pins host memory only in recent torch)."""
    import torch

    from dip_torch import loop

    make, pinned = loop.READBACK["mps"]
    monkeypatch.setattr(torch.mps.event, "Event", _FakeEvent)
    assert isinstance(make(), _FakeEvent) and pinned is False
    assert loop.READBACK["cuda"][1] is True and "cpu" not in loop.READBACK


@needs_torch
@pytest.mark.parametrize(
    "settings",
    [
        {"exp_weight": 0.0, "stop": "auto", "window": 5, "patience": 40, "noise_sigma": 25},  # kept parameters
        {"stop": "auto", "window": 5, "patience": 30},  # the EMA, the variance rule
        {"backtrack": True, "window": 5},  # snapshots and rollbacks checks
    ],
    ids=["discrepancy", "variance", "backtrack"],
)
def test_a_session_read_as_on_mps_runs_as_one_read_directly(settings, noisy, monkeypatch):
    """The CPU session made to take MPS's path (scalars through a host copy and an event, the next step queued
    before they are read) makes the same run, bit for bit, as one that reads them directly."""
    import dip_core.fit.loop
    from dip_core.fit.loop import fit
    from dip_core.run.prepare import prepare
    from dip_torch import loop

    monkeypatch.setattr(dip_core.fit.loop, "PIPELINE_UNDER_S", float("inf"))  # a busy machine must not turn it off

    def run():
        p = prepare("denoise", noisy, backend="torch", device="cpu", iters=80, seed=4, **settings, **TINY_NET)
        return p.session, fit(p.session, p.fit_settings)

    direct, a = run()
    monkeypatch.setitem(loop.READBACK, "cpu", (_FakeEvent, False))
    _FakeEvent.made = _FakeEvent.recorded = _FakeEvent.waited = 0
    piped, b = run()
    assert not direct.pipelined and piped.pipelined
    assert all(not t.is_pinned() and t.device.type == "cpu" for t in piped._stats_host)
    assert _FakeEvent.recorded == _FakeEvent.made >= b.iters_done and _FakeEvent.waited >= b.iters_done
    assert a.loss_curve == b.loss_curve and a.variance_curve == b.variance_curve
    assert (a.result_iter, a.stop_iter, a.auto_rule, a.iters_done) == (b.result_iter, b.stop_iter, b.auto_rule,
                                                                      b.iters_done)  # fmt: skip
    assert np.array_equal(a.result, b.result) and np.array_equal(a.final, b.final)


def test_pyproject_states_the_torch_floor_for_macos():
    text = (ROOT / "pyproject.toml").read_text()
    assert "\"torch>=2.5; sys_platform == 'darwin'\"" in text


# --- 3. precision that says what ran ---


def _fake_metal(monkeypatch, architecture: str, macos: str, **info) -> None:
    """This process's MLX as on a Mac: Metal available, the GPU's device info and the macOS version faked
    (nothing is built: no MLX op runs on the fake GPU)."""
    import platform

    import mlx.core as mx

    import dip_mlx.backend

    fields = {"architecture": architecture, "device_name": "Apple M?", "memory_size": 8 * 2**30, **info}
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx, "is_available", lambda d: True)
    monkeypatch.setattr(mx, "device_info", lambda d=None: dict(fields))
    monkeypatch.setattr(platform, "mac_ver", lambda: (macos, ("", "", ""), "arm64"))
    monkeypatch.setattr(dip_mlx.backend.MLXBackend, "_tf32", None)  # no GPU setting fixed yet in this process
    monkeypatch.setenv("MLX_ENABLE_TF32", "1")  # put back afterwards


@needs_mlx
@pytest.mark.parametrize(
    ("architecture", "macos", "runs"),
    [
        ("applegpu_g13g", "14.6", "fp32"),  # M1
        ("applegpu_g14s", "15.1", "fp32"),  # M2 Pro
        ("applegpu_g15d", "26.2", "fp32"),  # M3 Max, on the newest macOS: no matrix units
        ("applegpu_g16s", "26.3", "fp32"),  # M4 Pro
        ("applegpu_g17s", "26.1", "fp32"),  # M5 before the macOS that enables its path
        ("applegpu_g17g", "26.2", "tf32"),  # M5
        ("applegpu_g17p", "26.2", "fp32"),  # a phone chip one generation short
    ],
)
def test_metal_reports_the_precision_that_runs(architecture, macos, runs, monkeypatch):
    """The GPU default (tf32 asked) is recorded as fp32 on Metal unless MLX really takes its reduced-precision
    path there; and where TF32 changes nothing, a later fp32 backend in the process is not refused."""
    from dip_core.system.precision import Precision
    from dip_mlx.backend import MLXBackend

    _fake_metal(monkeypatch, architecture, macos)
    first = MLXBackend("gpu")
    assert (first.device, first.precision.value) == ("gpu", runs)
    if runs == "fp32":
        assert MLXBackend("gpu", Precision.FP32).precision is Precision.FP32
        assert MLXBackend("gpu", Precision.TF32).precision is Precision.FP32
    else:
        with pytest.raises(Exception, match="once per process"):
            MLXBackend("gpu", Precision.FP32)


# --- 4. memory on unified memory ---


GIB = 2**30
EIGHT_GB_MAC = {"max_recommended_working_set_size": int(5.33 * GIB), "memory_size": 8 * GIB}


def _fake_mac_memory(monkeypatch, psutil_available: float) -> None:
    import platform

    import dip_core.run.memory

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(dip_core.run.memory, "available_bytes", lambda: int(psutil_available * GIB))


@needs_mlx
def test_an_8gb_mac_fits_256_on_metal_and_warns_where_only_psutil_objects(monkeypatch):
    """Metal's recommended working set less what MLX holds decides; psutil's `available` (1.5 GiB of 8 GB with a
    browser open) only warns. The default network at 256x256 needs about 2.1 GiB."""
    import mlx.core as mx

    from dip_core.model.config import load_config
    from dip_core.run.memory import MemoryError_, check_memory
    from dip_mlx.backend import MLXBackend

    _fake_metal(monkeypatch, "applegpu_g13g", "14.6", **EIGHT_GB_MAC)
    _fake_mac_memory(monkeypatch, 1.5)
    monkeypatch.setattr(mx, "get_active_memory", lambda: GIB // 4)
    cfg, backend = load_config("default"), MLXBackend("gpu")
    assert backend.memory_available() == EIGHT_GB_MAC["max_recommended_working_set_size"] - GIB // 4
    warnings = check_memory(cfg, 256, 256, backend, window=100)
    assert len(warnings) == 1 and "psutil" in warnings[0]
    with pytest.raises(MemoryError_, match="512x512"):  # 6.8 GiB: beyond the working set, refused
        check_memory(cfg, 512, 512, backend, window=100)
    monkeypatch.setattr(mx, "get_active_memory", lambda: 4 * GIB)  # what MLX already holds counts
    with pytest.raises(MemoryError_, match="256x256"):
        check_memory(cfg, 256, 256, backend, window=100)


@needs_torch
def test_mps_fits_by_its_recommended_working_set(monkeypatch):
    import torch

    from dip_core.model.config import load_config
    from dip_core.run.memory import MemoryError_, check_memory
    from dip_torch.backend import TorchBackend

    _fake_mac_memory(monkeypatch, 1.5)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: EIGHT_GB_MAC["max_recommended_working_set_size"])
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: GIB // 4)
    cfg, backend = load_config("default"), TorchBackend("cpu")
    backend.torch_device, backend.device = torch.device("mps"), "mps"  # only its memory is asked: nothing runs
    assert len(check_memory(cfg, 256, 256, backend, window=100)) == 1
    with pytest.raises(MemoryError_):
        check_memory(cfg, 512, 512, backend, window=100)


def test_the_host_figure_refuses_on_linux_and_warns_on_a_mac(monkeypatch):
    import platform

    import dip_core.run.memory

    monkeypatch.setattr(dip_core.run.memory, "available_bytes", lambda: 3 * GIB)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert dip_core.run.memory.host_free() == (3 * GIB, None)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert dip_core.run.memory.host_free() == (None, 3 * GIB)


@needs_torch
def test_mps_without_recommended_max_memory_only_warns(monkeypatch):
    """torch before 2.5 has no torch.mps.recommended_max_memory: no figure refuses, psutil's warns."""
    import torch

    from dip_core.model.config import load_config
    from dip_core.run.memory import check_memory
    from dip_torch.backend import TorchBackend

    _fake_mac_memory(monkeypatch, 1.5)
    monkeypatch.delattr(torch.mps, "recommended_max_memory")
    backend = TorchBackend("cpu")
    backend.torch_device, backend.device = torch.device("mps"), "mps"
    assert backend.memory_available() is None
    assert len(check_memory(load_config("default"), 256, 256, backend, window=100)) == 1


# --- 5. one MLX device per session ---


@needs_mlx
def test_mlx_never_sets_the_process_default_device(noisy, monkeypatch):
    """`mx.set_default_device` is process-wide: in `dip ui` an MLX CPU run set it under a running GPU run."""
    import mlx.core as mx

    def process_wide(device):
        raise AssertionError("mx.set_default_device changes the device of every MLX session in the process")

    monkeypatch.setattr(mx, "set_default_device", process_wide)
    r = restore("denoise", noisy, backend="mlx", device="cpu", iters=8, seed=1, **TINY_NET)
    assert r.fit.iters_done == 8


@needs_mlx
def test_two_mlx_sessions_interleaved_keep_their_devices(noisy, monkeypatch):
    """Two sessions in one process, stepped in turn, each trace their step once, on their own placement.
    Without a GPU here, one session's placement is a CPU stream of its own, standing in for the other device:
    MLX keys a compiled function's trace on the default stream, so tracing on the other's would show."""
    import mlx.core as mx

    import dip_mlx.loop
    from dip_core.run.prepare import prepare

    traced_on = []
    real = dip_mlx.loop._loss

    def spy(*args, **kwargs):
        traced_on.append(mx.default_stream(mx.default_device()))
        return real(*args, **kwargs)

    monkeypatch.setattr(dip_mlx.loop, "_loss", spy)

    def session(placement):
        s = prepare("denoise", noisy, backend="mlx", device="cpu", iters=6, seed=3, **TINY_NET).session
        s.backend.placement = placement
        s.start(s.monitoring)
        return s

    other, own = mx.new_stream(mx.cpu), mx.default_stream(mx.cpu)
    alone = session(mx.new_stream(mx.cpu))
    solo = [alone.read(alone.step()).loss for _ in range(6)]
    traced_on.clear()
    a, b = session(other), session(mx.cpu)
    losses = {"a": [], "b": []}
    for _ in range(6):
        ha, hb = a.step(), b.step()
        losses["a"].append(a.read(ha).loss)
        losses["b"].append(b.read(hb).loss)
    assert traced_on == [other, own]  # each traced once, each on its own
    assert losses["a"] == solo == losses["b"]


@needs_mlx
def test_an_mlx_session_leaves_nothing_lazy_for_the_thread_that_runs_it(noisy, monkeypatch):
    """On Metal a stream belongs to the thread that made it (MLX: "There is no Stream(gpu, N) in current thread"),
    and `dip ui` prepares a session on a request's thread and steps it on a worker's: whatever the session made
    (Adam's zero moments, the monitors' state) is evaluated before it is handed over."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from dip_core.run.prepare import prepare

    evaluated: set[int] = set()
    real = mx.eval

    def spy(*trees):
        for tree in trees:
            evaluated.update(id(a) for _, a in tree_flatten(tree) if isinstance(a, mx.array))
            if isinstance(tree, mx.array):
                evaluated.add(id(tree))
        return real(*trees)

    monkeypatch.setattr(mx, "eval", spy)
    s = prepare("denoise", noisy, backend="mlx", device="cpu", iters=6, seed=3, window=5, **TINY_NET).session
    made = [a for _, a in tree_flatten([s.opt.state, s.monitors.arrays, s.monitors.ring])]
    assert made and all(id(a) in evaluated for a in made)


# --- 6. threads on macOS ---


def _fake_sysctl(tmp_path, monkeypatch, performance: int, efficiency: int) -> None:
    """A `sysctl` on PATH answering as an Apple-silicon Mac's, and platform.system() saying Darwin."""
    import os
    import platform

    from dip_core.system import threads

    script = tmp_path / "sysctl"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$2" in hw.perflevel0.physicalcpu) echo {performance};; '
        f"hw.perflevel1.physicalcpu) echo {efficiency};; *) exit 1;; esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    threads.core_kinds.cache_clear()
    monkeypatch.setattr(threads, "core_kinds", functools.lru_cache(maxsize=1)(threads.core_kinds.__wrapped__))


@pytest.mark.parametrize(
    ("load", "expect", "said"),
    [
        (0.3, 4, "4 of 4 performance cores free (4 efficiency cores left out"),
        (5.2, 3, "3 of 4 performance cores free (4 efficiency cores left out: a parallel loop waits for its slowest "
         "thread, load 5.2 on 8 cores)"),
        (None, 4, "4 performance cores (4 efficiency cores left out"),
    ],
)  # fmt: skip
def test_a_mac_runs_one_thread_per_performance_core(load, expect, said, tmp_path, monkeypatch):
    """An M1 (4 performance + 4 efficiency cores): no thread on an efficiency core, whose slowness every parallel
    loop would wait for; the load (the 1-minute average: no /proc/stat on macOS) counts over all 8 cores."""
    from dip_core.system import threads
    from dip_core.system.threads import choose_threads, core_kinds, describe_cores

    _fake_sysctl(tmp_path, monkeypatch, 4, 4)
    monkeypatch.setattr(threads, "current_load", lambda: None)  # None below: unknown, as where nothing reports it
    assert (core_kinds().performance, core_kinds().efficiency) == (4, 4)
    choice = choose_threads(env={}, cores=8, load=load)
    assert choice.threads == expect and choice.reason.startswith(said)
    assert describe_cores().startswith("4 performance + 4 efficiency cores: at most one thread per performance core")


@needs_mlx
def test_mlx_on_a_mac_cpu_does_not_claim_one_thread(monkeypatch):
    """On macOS MLX has no dip CPU kernels and its matrix products run on Accelerate, which is multithreaded."""
    import platform

    from dip_mlx import backend, cpu_kernels

    monkeypatch.setattr(cpu_kernels, "start_pool", lambda threads: None)  # never built on macOS
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    n, reason = backend._cpu_threads("cpu", None)
    assert "one thread" not in reason and "Accelerate" in reason and n >= 1


def test_doctor_says_how_a_mac_counts_its_cores(tmp_path, monkeypatch, capsys):
    from dip_cli.info import _print_threads

    _fake_sysctl(tmp_path, monkeypatch, 8, 4)
    monkeypatch.setattr("dip_core.system.threads.os.path.exists", lambda path: False)  # no /proc/stat, as on macOS
    _print_threads(["torch: 8 threads - 8 of 8 performance cores free (4 efficiency cores left out: ...)"])
    shown = capsys.readouterr().out
    assert "8 performance + 4 efficiency cores: at most one thread per performance core" in shown
    assert "the 1-minute load average (no /proc/stat here)" in shown


# --- 7. the docs' Mac section (docs/backends.md), and the README's paragraph that points to it ---


STEP_GFLOP = (29, 116, 466)  # the default denoising step at 128², 256², 512² (x4 per doubling of the side)


def test_the_mac_section_states_the_requirements_and_estimates_from_bench_peaks():
    """The section is there, says what a Mac needs, marks its ms/iter as estimates, and every figure in its
    table is the step's FLOPs over bench/peaks.py's FP32 peak (at 100 % and at 30 % of it). The README's
    paragraph says what a Mac needs too, and points to the section."""
    import re

    from bench.peaks import APPLE

    readme = (ROOT / "README.md").read_text().split("### On a Mac\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("macOS 14 or newer", "native arm64 Python 3.10 or newer", "estimates",
                   "(docs/backends.md#on-a-mac)"):  # fmt: skip
        assert needed in " ".join(readme.split()), needed
    text = (ROOT / "docs" / "backends.md").read_text()
    section = text.split("## On a Mac\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("macOS 14 or newer", "native arm64 Python 3.10 or newer", "estimates until a measured row",
                   "bench/peaks.py", "dip bench all --out", "bash scripts/demo.sh"):  # fmt: skip
        assert needed in " ".join(section.split()), needed
    rows = re.findall(r"^\| (M\d[^|]*?) \| ([\d,]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    assert len(rows) == 11
    for chip, peak, floor, at30 in rows:
        name, cores = re.match(r"(M\d(?: Pro| Max)?) \((\d+)\)", chip).groups()
        gflops = APPLE[(f"Apple {name}", int(cores))].gflops
        assert int(peak.replace(",", "")) == round(gflops)
        for shown, share in ((floor, 1.0), (at30, 0.3)):
            for value, work in zip(shown.split(" / "), STEP_GFLOP, strict=True):
                assert float(value) == pytest.approx(work / gflops * 1000 / share, rel=0.03, abs=0.05)
