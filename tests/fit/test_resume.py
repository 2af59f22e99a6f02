"""Checkpoints: a run that stops (crash, kill -9, Ctrl-C) goes on to the result of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.fit.checkpoint import CheckpointError
from dip_core.problem.degrade import add_noise
from dip_core.run.api import restore
from tests.common import ROOT, TINY_NET, TINY_NET_ARGS, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8

SETTINGS = {
    "plain": {},
    "reference": {"reference": "clean"},
    "auto-stop": {"stop": "auto", "window": 5, "patience": 40},
    "auto-stop-states": {"stop": "auto", "window": 5, "patience": 40, "exp_weight": 0.0},  # kept parameters
    "ema-backtrack": {"exp_weight": 0.9, "backtrack": True, "check_every": 7},
    # a check at every checkpoint: the rollback copy equals the session's state and is written once
    "checks-at-checkpoints": {"exp_weight": 0.9, "backtrack": True, "check_every": 10},
}


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def images():
    clean = synthetic(29, 35)
    return {"clean": clean, "noisy": add_noise(clean, 25, 0)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_a_crashed_run_resumes_to_the_uninterrupted_result(backend, setting, images, tmp_path):
    options = {k: images[v] if v == "clean" else v for k, v in SETTINGS[setting].items()}
    common = {"backend": backend, "device": "cpu", "iters": 40, "seed": 5, **TINY_NET, **options}
    whole = restore("denoise", images["noisy"], **common)

    def crash(info):
        if info.i == 27:
            raise Crash

    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=10, on_step=crash, **common)
    assert ckpt.is_file()
    resumed = restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)
    assert resumed.report["checkpoint"]["resumed"] and resumed.report["checkpoint"]["every"] == 10
    assert np.array_equal(resumed.pixels, whole.pixels)
    assert resumed.fit.loss_curve == whole.fit.loss_curve
    assert resumed.report["result_iter"] == whole.report["result_iter"]
    assert resumed.report["stop_iter"] == whole.report["stop_iter"]


def test_a_checkpoint_of_another_run_is_refused(images, tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    common = {"backend": BACKENDS[0], "device": "cpu", "iters": 12, **TINY_NET}
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=5, on_step=_crash_at(8), **common)
    with pytest.raises(CheckpointError, match=r"another run.*seed"):
        restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, seed=1, **common)
    with pytest.raises(CheckpointError, match=r"another run.*inputs"):
        restore("denoise", images["clean"], checkpoint=ckpt, resume=True, **common)
    ckpt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable dip checkpoint"):
        restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)


def _crash_at(n):
    def crash(info):
        if info.i == n:
            raise Crash

    return crash


def _dip(*args: str) -> list[str]:
    # Every part runs in a fresh process: a process that has loaded MLX's BLAS computes
    # torch's last bits differently (see docs/guide.md, Reproducibility), so all parts need the same start.
    return [sys.executable, "-c", "from cli import main; main()", *args]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_process_resumes_to_the_same_output(backend, images, tmp_path):
    src = tmp_path / "noisy.png"
    PILImage.fromarray(to_u8(images["noisy"])).save(src)
    args = ["run", "denoise", str(src), "--backend", backend, "--device", "cpu", "--iters", "400", "--seed", "2"]
    args += [*TINY_NET_ARGS, "-q"]
    whole = subprocess.run(_dip(*args, "-o", str(tmp_path / "whole.png")), cwd=ROOT, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed.png"
    ckpt = tmp_path / "killed.ckpt.npz"
    cmd = _dip(*args, "-o", str(out), "--checkpoint-every", "10")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert ckpt.is_file() and not out.exists()

    refused = runner.invoke(app, [*args, "-o", str(out)])
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = subprocess.run(_dip(*args, "-o", str(out), "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(np.asarray(PILImage.open(out)), np.asarray(PILImage.open(tmp_path / "whole.png")))
    assert not ckpt.exists()  # a finished run leaves nothing to resume


def test_resume_without_a_checkpoint_is_a_usage_error(images, tmp_path):
    src = tmp_path / "noisy.png"
    PILImage.fromarray(to_u8(images["noisy"])).save(src)
    result = runner.invoke(app, ["run", "denoise", str(src), "--resume", "-q", *["--net", "tiny"]])
    assert result.exit_code == 2 and "no checkpoint to resume" in result.output


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch's thread count is set per backend; MLX's once per process")
def test_a_resumed_run_takes_over_the_checkpoints_thread_count(images, tmp_path, monkeypatch):
    monkeypatch.setenv("DIP_THREADS", "2")  # what a run without --threads would take: not the checkpoint's 1
    common = {"backend": "torch", "device": "cpu", "iters": 30, "seed": 1, **TINY_NET}
    whole = restore("denoise", images["noisy"], threads=1, **common)

    def crash(info):
        if info.i == 17:
            raise Crash

    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=5, on_step=crash, threads=1, **common)
    resumed = restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)  # no thread count given
    assert resumed.report["threads"] == 1
    assert np.array_equal(resumed.pixels, whole.pixels)
    with pytest.raises(CheckpointError, match="threads"):
        restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, threads=2, **common)


def test_an_array_equal_to_another_is_written_once_and_read_back_as_its_own(tmp_path):
    """A checkpoint at a check holds the rollback copy equal to the session's state: written once, not twice."""
    from dip_core.fit.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    weights = rng.random((256, 256), dtype=np.float32)
    arrays = {"session/w": weights, "snap/w": weights.copy(), "other": rng.random((256, 256), dtype=np.float32)}
    path = tmp_path / "c.ckpt.npz"
    save_checkpoint(path, arrays, {"run": 1})
    assert path.stat().st_size < 2.2 * weights.nbytes  # two arrays' worth, not three
    back = load_checkpoint(path, {"run": 1})
    assert set(back) == set(arrays) and all(np.array_equal(back[k], v) for k, v in arrays.items())
    back["snap/w"][0, 0] += 1  # each its own memory: a backend may take an array over as it is
    assert back["session/w"][0, 0] == weights[0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dip_0_4_checkpoint_resumes_with_the_paper_s_average(backend, images, tmp_path):
    """dip 0.4 wrote format 4: whether the average had started (`ema_on`), no warm-up. With --ema-warmup 0 (its
    average) such a file goes on to the uninterrupted result; with the default it is another run's."""
    import json

    common = {"backend": backend, "device": "cpu", "iters": 40, "seed": 5, "ema_warmup": 0, **TINY_NET}
    whole = restore("denoise", images["noisy"], **common)

    def crash(info):
        if info.i == 27:
            raise Crash

    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=10, on_step=crash, **common)
    with np.load(ckpt) as f:
        arrays = dict(f)
    meta = json.loads(bytes(arrays.pop("__meta__")))
    assert meta["format"] == "dip-checkpoint/5"
    meta["format"] = "dip-checkpoint/4"
    for name in list(arrays):  # as dip 0.4 wrote them
        if name.endswith("ema_n"):
            arrays[name.removesuffix("ema_n") + "ema_on"] = arrays.pop(name) > 0
        elif name.startswith("loop/") and name.endswith("/warmup"):
            del arrays[name]
    assert any(n.endswith("ema_on") for n in arrays)
    np.savez(ckpt, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with pytest.raises(CheckpointError, match="differs in preset"):
        restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **{**common, "ema_warmup": 9})
    resumed = restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)
    assert resumed.report["checkpoint"]["resumed"] and np.array_equal(resumed.pixels, whole.pixels)
