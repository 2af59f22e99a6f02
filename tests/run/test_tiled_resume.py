"""An interrupted tiled run: marked unfinished (name, report, message), and resumable to the whole run's result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.fit.checkpoint import CheckpointError
from dip_core.problem.degrade import add_noise
from dip_core.run.tiled import restore_tiled
from dip_core.run.tiles import plan
from tests.common import TINY_NET, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8


def stop_in_tile(k: int, at: int):
    """An on_step that interrupts (as Ctrl-C does) at step `at` of tile `k`: the tile is known from the step
    counter starting again."""
    seen = {"tile": -1, "last": 10**9}

    def on_step(info):
        if info.i < seen["last"]:
            seen["tile"] += 1
        seen["last"] = info.i
        if seen["tile"] == k and info.i == at:
            raise KeyboardInterrupt

    return on_step


@pytest.fixture(scope="module")
def noisy():
    return add_noise(synthetic(27, 41), 25, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupted_tiled_run_resumes_to_the_uninterrupted_result(backend, noisy, tmp_path):
    common = {"backend": backend, "device": "cpu", "iters": 6, "seed": 3, **TINY_NET}
    whole = restore_tiled("denoise", noisy, 16, 4, **common)
    assert whole.report["finished"] and whole.report["tiles_total"] == len(whole.report["tiles"])

    ckpt = tmp_path / "t.ckpt.npz"
    cut = restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, on_step=stop_in_tile(2, 4), **common)
    assert not cut.report["finished"] and cut.report["interrupted"]
    assert len(cut.report["tiles"]) == 2 < cut.report["tiles_total"]
    assert ckpt.is_file()

    resumed = restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, resume=True, **common)
    assert resumed.report["finished"] and resumed.report["tiles_resumed"] == 2
    assert np.array_equal(resumed.pixels, whole.pixels)


def test_a_tiled_checkpoint_of_other_settings_is_refused(noisy, tmp_path):
    common = {"backend": BACKENDS[0], "device": "cpu", "iters": 4, **TINY_NET}
    ckpt = tmp_path / "t.ckpt.npz"
    restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, on_step=stop_in_tile(1, 2), **common)
    with pytest.raises(CheckpointError, match="another run"):
        restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, resume=True, **{**common, "seed": 9})


def test_the_cli_names_an_unfinished_tiled_result_and_resumes_it(noisy, tmp_path, monkeypatch):
    src = tmp_path / "big.png"
    PILImage.fromarray(to_u8(noisy)).save(src)
    args = ["run", "denoise", str(src), "--tile", "16", "--overlap", "4", "--iters", "5", "--net", "tiny"]
    args += ["--input-channels", "4", "--device", "cpu", "--report", str(tmp_path / "r.json")]

    import dip_core.run.prepare as api

    real = api.Prepared.run
    calls = {"n": 0}

    def run_then_stop(self, **kwargs):  # the second tile is interrupted, as by Ctrl-C
        calls["n"] += 1
        if calls["n"] == 2:
            kwargs["on_step"] = stop_in_tile(0, 3)
        return real(self, **kwargs)

    monkeypatch.setattr(api.Prepared, "run", run_then_stop)
    cut = runner.invoke(app, args)
    assert cut.exit_code == 130, cut.output
    text = " ".join(cut.output.split())
    n = len(plan(27, 41, 16, 4))
    assert f"1 of {n} tiles restored" in text and "--resume" in text
    partial = tmp_path / "big.denoise.partial.png"
    assert partial.is_file() and not (tmp_path / "big.denoise.png").exists()
    assert json.loads((tmp_path / "r.json").read_text())["finished"] is False

    monkeypatch.setattr(api.Prepared, "run", real)
    again = runner.invoke(app, args)  # without --resume: refused, nothing lost
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (tmp_path / "big.denoise.png").is_file()
    assert not partial.exists() and not (tmp_path / "big.denoise.ckpt.npz").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["finished"] and report["tiles_resumed"] == 1


def test_ctrl_c_between_two_tiles_keeps_the_finished_ones(noisy, tmp_path):
    def on_tile(k, n):  # Ctrl-C while the third tile's network is being built
        if k == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "t.ckpt.npz"
    common = {"backend": BACKENDS[0], "device": "cpu", "iters": 3, **TINY_NET}
    cut = restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, on_tile=on_tile, **common)
    assert not cut.report["finished"] and len(cut.report["tiles"]) == 2
    resumed = restore_tiled("denoise", noisy, 16, 4, checkpoint=ckpt, resume=True, **common)
    assert resumed.report["finished"] and resumed.report["tiles_resumed"] == 2


def test_a_tile_without_known_pixels_keeps_its_input_and_the_run_goes_on(tmp_path):
    x = synthetic(40, 40)
    mask = np.ones((40, 40), np.float32)
    mask[20:, 20:] = 0  # the bottom-right tile (20x20 from 20, 20) sees no known pixel
    r = restore_tiled("inpaint", x, 20, 0, mask=mask, backend=BACKENDS[0], device="cpu", iters=3, **TINY_NET)
    assert r.report["finished"] and any("no known pixel" in w for w in r.report["warnings"])
    skipped = [t for t in r.report["tiles"] if t.get("skipped")]
    assert len(skipped) == 1 and skipped[0]["box"] == [20, 20, 20, 20]


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch sets its thread count per backend")
def test_every_tile_runs_the_first_tiles_thread_count(noisy, monkeypatch):
    import itertools

    import dip_core.system.threads

    loads = itertools.cycle([0.0, 1.9])  # the machine's load changes between tiles
    monkeypatch.delenv("DIP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dip_core.system.threads, "current_load", lambda: next(loads))
    monkeypatch.setattr(dip_core.system.threads, "core_count", lambda: 2)
    r = restore_tiled("denoise", noisy, 16, 4, backend="torch", device="cpu", iters=2, **TINY_NET)
    assert {t["threads"] for t in r.report["tiles"]} == {r.report["threads"]}


def test_force_starts_a_tiled_run_over_and_leaves_no_stale_files(noisy, tmp_path):
    src = tmp_path / "big.png"
    PILImage.fromarray(to_u8(noisy)).save(src)
    (tmp_path / "big.denoise.partial.png").write_bytes(b"stale")
    (tmp_path / "big.denoise.ckpt.npz").write_bytes(b"stale")
    args = ["run", "denoise", str(src), "--tile", "16", "--overlap", "4", "--iters", "2", "--net", "tiny", "-q"]
    result = runner.invoke(app, [*args, "--input-channels", "4", "--device", "cpu", "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.denoise.png", "big.png"]


def test_a_result_that_cannot_be_written_anywhere_keeps_the_checkpoint(noisy, tmp_path, monkeypatch):
    import dip_cli.run
    import dip_core.problem.image

    src = tmp_path / "big.png"
    PILImage.fromarray(to_u8(noisy)).save(src)

    def full_disk(path, image, **kwargs):
        raise dip_core.problem.image.ImageError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(dip_core.problem.image, "save_image", full_disk)
    monkeypatch.setattr(dip_cli.run, "rescue", lambda path, write: None)
    args = ["run", "denoise", str(src), "--tile", "16", "--overlap", "4", "--iters", "2", "--net", "tiny", "-q"]
    result = runner.invoke(app, [*args, "--input-channels", "4", "--device", "cpu"])
    assert result.exit_code == 1 and "no fallback folder" in result.output
    assert (tmp_path / "big.denoise.ckpt.npz").is_file()  # every tile is still there for --resume
