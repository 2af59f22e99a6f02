"""`dip run` checks everything before it starts, never loses a finished result, and says what a user should know:
all problems at once, unwritable places found up front, a fallback for a write that fails at the end, warnings
for runs too short, reports that hold every input and setting, and time estimates."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

import dip_cli.run as run_module
import dip_core.fit.loop
import dip_core.run.estimate
from cli import app
from dip_core.model.config import load_config
from dip_core.problem.degrade import add_noise
from dip_core.problem.registry import Task
from dip_core.run.estimate import Estimate, duration
from dip_core.system.version import dip_version
from tests.common import TINY_NET_ARGS, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8

FAST = [*TINY_NET_ARGS, "--device", "cpu"]


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder where no file can be created. Root ignores permissions, so creating a file there is made to
    fail as on a read-only file system."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(30, "Read-only file system", str(Path(dir) / "x.tmp"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folder


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a run starts."""

    def fit(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(dip_core.fit.loop, "fit", fit)
    monkeypatch.setattr("dip_core.run.prepare.fit", fit)


def test_an_unwritable_output_is_found_before_the_first_iteration(noisy, read_only, no_fit, tmp_path):
    args = ["run", "denoise", str(noisy), "-o", str(read_only / "cat.png"), "--iters", "20", *FAST]
    result = runner.invoke(app, [*args, "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert f"cannot write into {read_only}: Read-only file system" in result.output
    assert ".tmp" not in result.output
    assert not (tmp_path / "r.json").exists()


def test_a_write_that_fails_at_the_end_goes_to_a_fallback_and_the_rest_is_written(noisy, tmp_path, monkeypatch):
    target = tmp_path / "out" / "cat.png"
    target.parent.mkdir()
    import dip_core.problem.image

    real = dip_core.problem.image.save_image

    def save_image(path, image, **kwargs):  # the disk fills up between the check and the end of the run
        if Path(path) == target:
            raise dip_core.problem.image.ImageError(f"cannot write {path}: No space left on device")
        return real(path, image, **kwargs)

    monkeypatch.setattr(dip_core.problem.image, "save_image", save_image)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    report, plot = tmp_path / "r.json", tmp_path / "p.png"
    args = ["run", "denoise", str(noisy), "-o", str(target), "--iters", "4", "-q", *FAST]
    result = runner.invoke(app, [*args, "--report", str(report), "--plot", str(plot)])
    assert result.exit_code == 1, result.output
    spare = tmp_path / "here" / "cat.png"
    assert spare.is_file() and f"No space left on device; wrote it to {spare} instead" in result.output
    assert report.is_file() and plot.is_file()
    assert ".tmp" not in result.output


def _has_gpu() -> bool:
    from dip_core.backend import get_backend

    return "torch" in BACKENDS and get_backend("torch", "auto").device != "cpu"


@pytest.mark.skipif("torch" not in BACKENDS or _has_gpu(), reason="needs torch without a GPU (--device gpu must fail)")
def test_every_usage_problem_is_reported_at_once_without_a_progress_bar(noisy, no_fit):
    (noisy.parent / "cat.inpaint.png").write_bytes(b"old result")
    result = runner.invoke(app, ["run", "inpaint", str(noisy), "--device", "gpu", "--backend", "torch"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2
    assert any("exists; add --force" in line for line in lines)
    assert any("no GPU" in line for line in lines)
    assert any("needs --mask" in line for line in lines)
    assert all(line.startswith("error:") for line in lines), result.output
    assert "loss" not in result.output  # no empty progress bar above the errors


def test_sr_with_a_bad_factor_and_an_existing_output_says_both(noisy, no_fit):
    (noisy.parent / "cat.sr.png").write_bytes(b"old")
    result = runner.invoke(app, ["run", "sr", str(noisy), "--factor", "3", *FAST])
    assert result.exit_code == 2
    assert "exists; add --force" in result.output and "factor" in result.output.split("exists")[1]


def test_a_short_run_is_warned_before_and_a_result_worse_than_its_input_after(tmp_path):
    clean = synthetic(21, 25)
    src, ref = tmp_path / "n.jpg", tmp_path / "c.png"
    PILImage.fromarray(to_u8(clean)).save(src, quality=30)
    PILImage.fromarray(to_u8(clean)).save(ref)
    args = ["run", "jpeg", str(src), "--reference", str(ref), "--iters", "3", "-q", *FAST]
    result = runner.invoke(app, [*args, "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--iters 3 is far below the 2400 iterations" in text
    assert "is worse than the input" in text  # 3 steps of a random network are far from a ~30 dB input
    report = json.loads((tmp_path / "r.json").read_text())
    assert any("worse than the input" in w for w in report["warnings"])


@pytest.mark.parametrize(("task", "iters"), [("jpeg", "2400"), ("denoise", "300")])
def test_a_run_at_its_presets_length_or_a_short_denoising_run_is_not_warned(noisy, task, iters):
    result = runner.invoke(app, ["run", task, str(noisy), "--iters", iters, "--estimate", *FAST])
    assert result.exit_code == 0, result.output
    assert "far below" not in result.output


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch's thread count is set per backend")
def test_the_report_holds_every_input_and_setting(noisy, tmp_path):
    mask = tmp_path / "m.png"
    PILImage.fromarray(np.full((21, 25), 255, np.uint8)).save(mask)
    args = ["run", "inpaint", str(noisy), "--mask", str(mask), "--iters", "3", "-q", "--threads", "1", "-b", "torch"]
    result = runner.invoke(app, [*args, *FAST, "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["sources"] == {
        "image": str(noisy), "mask": str(mask), "mask_color": None, "drop": None, "kernel": None, "reference": None,
    }  # fmt: skip
    assert r["command"].startswith("dip run inpaint ") and "--threads 1" in r["command"]
    assert r["dip_version"] == dip_version() != ""
    assert r["threads"] == 1 and r["precision"] == "fp32"
    assert r["keep_known"] is True and r["finished"] is True


def test_dip_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dip {dip_version()}"


def test_the_estimate_multiplies_the_measured_step_by_the_steps_of_every_tile():
    cfg = load_config("tiny")
    one = Estimate(Task.DENOISE, cfg, 3000, 4000, 0, 0, 3000, 56000.0, False)
    assert one.seconds == pytest.approx(3000 * 56.0)
    tiled = Estimate(Task.DENOISE, cfg, 3000, 4000, 960, 32, 3000, 56000.0, True)
    assert len(tiled.sizes) == 20 and tiled.seconds == pytest.approx(20 * 3000 * 56.0, rel=0.01)
    assert "x 20 tiles" in tiled.line() and "at most" in tiled.line() and "days" in tiled.line()
    assert tiled.halved().seconds == pytest.approx(tiled.seconds / 2, rel=0.01)
    assert [duration(s) for s in (45, 720, 3 * 3600, 3 * 86400)] == ["45 s", "12 min", "3.0 h", "3.0 days"]


def test_estimate_times_the_run_and_its_cheaper_choices_and_writes_nothing(tmp_path):
    noisy = tmp_path / "big.png"
    PILImage.fromarray(to_u8(add_noise(synthetic(65, 67), 25, 0))).save(noisy)
    before = sorted(p.name for p in noisy.parent.iterdir())
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--estimate", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "estimate:" in text and "x 3000 iterations" in text
    for choice in ("--iters 1500", "--net small", "downscaled 2x", "sr --factor 2"):
        assert choice in text
    assert sorted(p.name for p in noisy.parent.iterdir()) == before


def test_a_long_run_prints_its_estimate_once_its_first_steps_are_timed(noisy, monkeypatch):
    monkeypatch.setattr(run_module, "ESTIMATE_AFTER_S", 0.0)
    monkeypatch.setattr(run_module, "ESTIMATE_FROM_S", 0.0)
    monkeypatch.setattr(dip_core.run.estimate, "LONG_RUN_S", 0.0)
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--iters", "6", *FAST])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("estimate:") == 1 and "x 6 iterations" in text
    assert "--iters 3 takes half as long" in text


def test_problems_with_each_input_file_are_reported_together(noisy, tmp_path, no_fit):
    args = ["run", "deblur", str(noisy), "--reference", str(tmp_path / "none.png"), *FAST]
    result = runner.invoke(app, [*args, "--kernel", str(tmp_path / "nokernel.png")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 2, result.output
    assert "none.png" in lines[0] + lines[1] and "nokernel.png" in lines[0] + lines[1]


def test_estimate_works_for_tiled_runs(tmp_path):
    noisy = tmp_path / "big.png"
    PILImage.fromarray(to_u8(add_noise(synthetic(65, 67), 25, 0))).save(noisy)
    args = ["run", "denoise", str(noisy), "--estimate", "--tile", "40", "--overlap", "8", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "x 4 tiles" in " ".join(result.output.split())


def test_ctrl_c_before_the_first_step_writes_nothing_and_says_so(noisy, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dip_core.run.prepare.fit", interrupted)
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--iters", "5", *FAST])
    assert result.exit_code == 130 and "nothing was written" in result.output
    assert not (noisy.parent / "cat.denoise.png").exists()


def test_a_mask_colour_that_is_not_in_the_image_is_refused(noisy):
    result = runner.invoke(app, ["run", "inpaint", str(noisy), "--mask-color", "#0000fe", "--iters", "2", *FAST])
    assert result.exit_code == 2 and "no pixel of the image has the colour" in result.output


def test_a_plot_must_be_a_png(noisy, tmp_path, no_fit):
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--plot", str(tmp_path / "p.json"), *FAST])
    assert result.exit_code == 2 and "--plot writes a PNG" in result.output


def test_the_summary_says_when_auto_stop_ended_the_run_and_save_every_says_where(noisy):
    args = ["run", "denoise", str(noisy), "--stop", "auto", "--window", "3", "--patience", "5", "--iters", "300"]
    result = runner.invoke(app, [*args, "--save-every", "50", "-q", *FAST])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "result from iteration" in text and "chosen by the output variance (ES-WMV)" in text
    assert "auto-stop ended the run at" in text and "of 300" in text
    assert "the result so far is written to" in text and "every 50 iterations" in text


def test_degrade_makes_its_output_folder(noisy, tmp_path):
    result = runner.invoke(app, ["degrade", "denoise", str(noisy), "--out", str(tmp_path / "new" / "deg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "deg" / "cat_noisy25.png").is_file()
