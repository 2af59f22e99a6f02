"""CPU threads: the automatic choice (cores free, env overrides), --threads reaching the backends, `dip doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dip_core.backend import available_backends, get_backend
from dip_core.system import threads
from dip_core.system.threads import ThreadChoice, choose_threads, free_threads
from tests.common import runner

needs_torch = pytest.mark.skipif("torch" not in available_backends(), reason="torch is not installed")
needs_mlx = pytest.mark.skipif("mlx" not in available_backends(), reason="mlx is not installed")


@pytest.mark.parametrize(
    ("requested", "env", "cores", "load", "expect"),
    [
        (None, {}, 2, 0.0, ThreadChoice(2, "2 of 2 cores free", 0.0)),
        (None, {}, 2, 0.5, ThreadChoice(2, "2 of 2 cores free", 0.5)),
        (None, {}, 2, 1.3, ThreadChoice(1, "1 of 2 cores free (load 1.3)", 1.3)),
        (None, {}, 2, 7.9, ThreadChoice(1, "1 of 2 cores free (load 7.9)", 7.9)),  # never fewer than one
        (None, {}, 8, 2.4, ThreadChoice(6, "6 of 8 cores free (load 2.4)", 2.4)),
        (None, {}, 8, 2.6, ThreadChoice(5, "5 of 8 cores free (load 2.6)", 2.6)),
        (3, {"DIP_THREADS": "2", "OMP_NUM_THREADS": "1"}, 2, 2.0, ThreadChoice(3, "--threads")),
        (None, {"DIP_THREADS": "2", "OMP_NUM_THREADS": "1"}, 8, 0.0, ThreadChoice(2, "DIP_THREADS")),
        (None, {"OMP_NUM_THREADS": "1"}, 8, 0.0, ThreadChoice(1, "OMP_NUM_THREADS")),
        (None, {"OMP_NUM_THREADS": "4,2"}, 2, 2.0, ThreadChoice(4, "OMP_NUM_THREADS")),  # nested levels: the first
        (None, {"OMP_NUM_THREADS": "0", "DIP_THREADS": "x"}, 4, 1, ThreadChoice(3, "3 of 4 cores free (load 1.0)", 1)),
    ],
    ids=["idle", "half-a-core", "busy", "overloaded", "8-cores", "8-cores-more", "flag", "dip-env", "omp-env",
         "omp-list", "bad-env"],
)  # fmt: skip
def test_choice(requested, env, cores, load, expect):
    assert choose_threads(requested, env=env, cores=cores, load=load) == expect


def test_unknown_load_keeps_every_core(monkeypatch):
    monkeypatch.setattr(threads, "current_load", lambda: None)
    assert choose_threads(env={}, cores=4) == ThreadChoice(4, "4 cores (load unknown)")


@pytest.mark.parametrize(("cores", "load", "n"), [(1, 0.0, 1), (1, 3.0, 1), (4, 0.49, 4), (4, 0.51, 3), (4, 4.0, 1)])
def test_free_threads(cores, load, n):
    assert free_threads(cores, load) == n


def test_cpu_times_sums_this_process_cores(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  99 0 99 99 0 0 0 0 0 0\n"
        "cpu0 10 1 5 80 4 0 0 0 0 0\n"  # busy 16 of 100
        "cpu1 50 0 0 50 0 0 0 0 0 0\n"
        "cpu2 20 0 10 60 0 5 5 0 0 0\n"  # busy 40 of 100
        "\n"
        "intr 12345\n"
    )
    assert threads._cpu_times(str(stat), {0, 2}) == (56.0, 200.0)
    assert threads._cpu_times(str(stat), None) == (106.0, 300.0)
    assert threads._cpu_times(str(tmp_path / "missing"), None) is None


def test_sampled_load_is_the_busy_share_of_the_window(monkeypatch):
    tick = os.sysconf("SC_CLK_TCK")
    readings = iter([(1000.0, 5000.0), (1000.0 + 1.5 * tick, 5000.0 + 2 * tick)])  # 2 cores x 1 s: 1.5 s busy
    monkeypatch.setattr(threads, "usable_cores", lambda: {0, 1})
    monkeypatch.setattr(threads, "_cpu_times", lambda path, cpus: next(readings))
    assert threads.sample_load(seconds=0) == pytest.approx(1.5, abs=0.05)


@needs_torch
@pytest.mark.parametrize("n", [1, 2])
def test_threads_reach_torch(n):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(3 - n)  # the other count, so that a backend ignoring --threads fails
    try:
        backend = get_backend("torch", "cpu", threads=n)
        assert torch.get_num_threads() == n
        assert (backend.threads, backend.threads_reason) == (n, "--threads")
    finally:
        torch.set_num_threads(before)


@needs_torch
def test_torch_follows_the_environment(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("DIP_THREADS", "3")
    try:
        backend = get_backend("torch", "cpu")
        assert (torch.get_num_threads(), backend.threads, backend.threads_reason) == (3, 3, "DIP_THREADS")
    finally:
        torch.set_num_threads(before)


@needs_mlx
def test_threads_reach_the_mlx_kernels_once_per_process():
    """The first MLX CPU backend sizes the kernels' pool; a later one is told the size it got, and why."""
    code = (
        "import json, os\n"
        "from dip_core.backend import get_backend\n"
        "from dip_mlx import cpu_kernels as ck\n"
        "first = get_backend('mlx', 'cpu', threads=3)\n"
        "second = get_backend('mlx', 'cpu', threads=1)\n"
        "print(json.dumps([first.threads, first.threads_reason, second.threads, second.threads_reason,\n"
        "                  ck.status(), os.environ.get('DIP_THREADS')]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DIP_THREADS", "OMP_NUM_THREADS", "DIP_CPU_KERNELS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    first, first_reason, second, second_reason, status, leftover = json.loads(result.stdout.splitlines()[-1])
    if not status.startswith("on"):
        pytest.skip(f"CPU kernels: {status}")
    assert (first, first_reason) == (3, "--threads")
    assert second == 3 and "fixed once per process" in second_reason
    assert "3 threads" in status
    assert leftover is None  # the pool's setting is not left behind for torch


@pytest.fixture
def keep_torch_threads():
    """Commands build torch backends, which set torch's process-wide thread count: put it back."""
    if "torch" not in available_backends():
        yield
        return
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _invoke(*args: str) -> str:
    from cli import app

    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("keep_torch_threads")
def test_doctor_shows_the_threads_and_the_load(monkeypatch):
    monkeypatch.setenv("DIP_THREADS", "3")  # a count this 1- or 2-core test machine would not pick itself
    output = _invoke("doctor")
    assert "CPU threads (load now:" in output
    if "torch" in available_backends():
        assert "  torch: 3 threads - DIP_THREADS" in output
    if "mlx" in available_backends():  # its kernels' pool may have started earlier in this test process
        line = next(line for line in output.splitlines() if line.startswith("  mlx: "))
        assert "DIP_THREADS" in line or "fixed once per process" in line or "CPU kernels" in line


@pytest.mark.usefixtures("keep_torch_threads")
def test_backends_shows_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("DIP_THREADS", raising=False)
    output = _invoke("backends")
    assert "CPU threads" in output
    if "torch" in available_backends():
        assert "1 (OMP_NUM_THREADS)" in output


@needs_torch
def test_a_torch_session_runs_its_own_backends_thread_count():
    import torch

    from dip_core.run.prepare import prepare
    from tests.images import synthetic

    one = prepare("denoise", synthetic(9, 11), backend="torch", device="cpu", threads=1, net="tiny", iters=2)
    prepare("denoise", synthetic(9, 11), backend="torch", device="cpu", threads=2, net="tiny", iters=2)
    assert torch.get_num_threads() == 2  # the later backend set it for the process
    one.session  # noqa: B018  (built now, on its backend's count)
    assert torch.get_num_threads() == 1
