"""Benchmark results go to a per-user folder unless --out says otherwise: the repository's bench/results and
bench/report change only on purpose."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.backend import available_backends
from tests.common import runner
from tests.images import synthetic, to_u8


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    """A fake home and data folder (the variables platformdirs reads), and a working directory without the
    repository: a relative bench/results would land under tmp_path/work."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    from dip_core.system.paths import bench_report_dir, bench_results_dir

    results, report = bench_results_dir(), bench_report_dir()
    assert tmp_path in results.parents and tmp_path in report.parents
    return results, report, work


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_bench_speed_writes_to_the_per_user_folder(user_data):
    results, _, work = user_data
    args = ["bench", "speed", "--sizes", "40", "--blocks", "1", "--per-block", "1", "--warmup", "0"]
    args += ["--no-extras", "--no-loop", "--no-isolate", "--backend", available_backends()[0]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = list(results.glob("*-speed-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["kind"] == "speed"
    assert str(saved[0]) in one_line(result.stderr) and "--out bench/results" in one_line(result.stderr)
    assert not (work / "bench").exists()


@pytest.fixture
def f16(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    PILImage.fromarray(to_u8(synthetic(48, 48))).save(data / "F16_GT.png")
    return data


def test_bench_quality_and_report_use_the_per_user_folders(user_data, f16):
    results, report, work = user_data
    args = ["bench", "quality", "--profile", "smoke", "--data", str(f16), "--case", "f16-denoise-s25"]
    args += ["--backend", available_backends()[0]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = list(results.glob("*-quality-*.json"))
    assert len(saved) == 1 and str(saved[0]) in one_line(result.stderr)
    # `dip bench report` alone reads that folder and writes beside it.
    result = runner.invoke(app, ["bench", "report"])
    assert result.exit_code == 0, result.output
    assert "f16-denoise-s25" in (report / "report.md").read_text()
    assert str(report / "report.md") in one_line(result.output)
    assert not (work / "bench").exists()
    # On purpose: --out bench/results (here relative to the working directory) and a report of it.
    result = runner.invoke(app, [*args, "--out", "bench/results"])
    assert result.exit_code == 0, result.output
    assert len(list((work / "bench" / "results").glob("*-quality-*.json"))) == 1 and len(list(results.iterdir())) == 1
    result = runner.invoke(app, ["bench", "report", "bench/results", "--out", "bench/report"])
    assert result.exit_code == 0, result.output
    assert (work / "bench" / "report" / "report.md").exists()


def test_report_without_results_says_how_to_make_them(user_data):
    result = runner.invoke(app, ["bench", "report"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no results in")
    assert "dip bench speed" in lines[0] and "bench/results" in lines[0]


def test_report_names_a_missing_folder(user_data):
    result = runner.invoke(app, ["bench", "report", "nowhere"])
    assert result.exit_code == 2 and "no such file or folder: nowhere" in one_line(result.output)


@pytest.mark.parametrize("script", ["ladder", "loop_pair", "autostop"])
def test_bench_scripts_write_to_the_per_user_folder(user_data, monkeypatch, tmp_path, script):
    """python -m bench.ladder / loop_pair / autostop: the file they write (the measurements replaced by stubs,
    or the smallest case)."""
    import importlib
    from types import SimpleNamespace

    module = importlib.import_module(f"bench.{script}")
    results, _, work = user_data
    argv = [script]
    if script == "ladder":
        monkeypatch.setattr(module, "run", lambda *a: {"kind": "ladder", "fingerprint": {"cpu": "x"}, "rows": []})
        monkeypatch.setattr(module, "markdown", lambda data: "")
    elif script == "loop_pair":
        done = SimpleNamespace(stdout=json.dumps({"backend": "torch"}))
        monkeypatch.setattr(module, "subprocess", SimpleNamespace(run=lambda *a, **k: done))
        argv += ["--sizes", "40", "--backends", "torch"]
    else:
        # the synthetic scene's smallest denoising case, past the variance window (W=100)
        argv += ["run", "--data", str(tmp_path / "no-images"), "--size", "40", "--max-iters", "110"]
        argv += ["--only", "scene-denoise-s25", "--backend", available_backends()[0]]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    assert len(list(results.glob("*.json"))) == 1 and not (work / "bench").exists()
