"""Smoke tests of the benchmark commands: schema, positive finite numbers. No timing thresholds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.model.config import NETS
from dip_core.model.flops import forward_flops, step_flops
from tests.common import positive, runner
from tests.conftest import BACKENDS, BOTH
from tests.images import synthetic, to_u8


def test_flops_are_counted_from_the_layers():
    cfg = NETS["default"]
    f = forward_flops(cfg, 128, 128)
    # the decoder's 3x3 convolution at full size alone: 2 * 132 * 128 * 9 * 128^2
    assert f > 2 * 132 * 128 * 9 * 128**2
    assert step_flops(cfg, 128, 128) == 3 * f
    assert math.isclose(forward_flops(cfg, 256, 256) / f, 4, rel_tol=0.01)


@BOTH
def test_bench_speed_json_schema(tmp_path):
    args = ["bench", "speed", "--sizes", "40", "--blocks", "2", "--per-block", "1", "--warmup", "0"]
    result = runner.invoke(app, [*args, "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "speed" and data["fingerprint"]["cpu"] and data["fingerprint"]["python"]
    assert {r["backend"] for r in data["rows"]} == {"mlx", "torch"}
    for row in data["rows"]:
        for key in ("ms_per_iter", "ms_min", "ms_max", "iters_per_s", "flops", "gflops_per_s", "roofline_gflops"):
            assert positive(row[key]), (key, row)
        assert row["ms_min"] <= row["ms_per_iter"] <= row["ms_max"]
        assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] > 0
    kinds = {(r["kind"], r["net"]) for r in data["rows"]}
    assert kinds == {("step", "preset"), ("loop", "preset"), ("loop+ref", "preset"), ("forward", "preset"),
                     ("step", "small")}  # fmt: skip
    assert all(r["precision"] == "fp32" for r in data["rows"])  # the CPU's default
    assert all(positive(r["mlx_over_torch"]) for r in data["ratios"]) and data["ratios"]
    # The loop beside the bare step, per backend, with and without a reference.
    overhead = {(r["backend"], r["kind"]): r["loop_over_step"] for r in data["loop_overhead"]}
    assert set(overhead) == {(b, k) for b in ("mlx", "torch") for k in ("loop", "loop+ref")}
    assert all(positive(v) for v in overhead.values())
    saved = list(tmp_path.glob("*-speed-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["rows"] == data["rows"]
    # Each row ran in a process of its own: its peak memory is its own (a loop row's process also times a
    # bare step beside it, so it has none).
    assert data["isolated"]
    for row in data["rows"]:
        if row["kind"].startswith("loop"):
            assert row["peak_memory_bytes"] is None and positive(row["step_ms_same_process"])
        else:
            assert row["memory_source"] == "process peak RSS"
    # The matmul roofline ran on the BLAS the rows had (for MLX: dip's, not the bundled one).
    assert data["roofline_blas"]["mlx/cpu"] == data["fingerprint"]["blas"]["mlx"]


def test_bench_speed_in_one_process(tmp_path):
    args = ["bench", "speed", "--sizes", "40", "--blocks", "1", "--per-block", "1", "--warmup", "0", "--no-extras"]
    args += ["--no-loop"]
    result = runner.invoke(app, [*args, "--no-isolate", "--json", "--out", ""])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert not data["isolated"] and len(data["rows"]) == 2


@pytest.fixture
def paper_images(tmp_path):
    """Stand-ins named like the paper's files (the real ones live outside the project)."""
    data = tmp_path / "data"
    data.mkdir()
    for name, size in (("F16_GT.png", (48, 48)), ("kate.png", (48, 48)), ("zebra_GT.png", (48, 64))):
        PILImage.fromarray(to_u8(synthetic(*size))).save(data / name)
    PILImage.fromarray(to_u8(synthetic(48, 48, channels=1))).save(data / "barbara.png")
    mask = np.full((48, 48), 255, np.uint8)
    mask[10:20, 5:40] = 0
    PILImage.fromarray(mask).save(data / "kate_mask.png")
    PILImage.fromarray(to_u8(synthetic(40, 60))).save(data / "snail.jpg", quality=20)
    return data


def test_bench_quality_and_report(tmp_path, paper_images):
    out = tmp_path / "results"
    args = ["bench", "quality", "--profile", "smoke", "--data", str(paper_images), "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cases = {r["case"] for r in data["rows"]}
    assert cases == {"f16-denoise-s25", "kate-inpaint", "barbara-restore-50", "zebra-sr4", "snail-dejpeg"}
    for row in data["rows"]:
        assert positive(row["seconds"]) and row["iters"] == 2
        if row["case"] != "snail-dejpeg":
            assert positive(row["psnr_input"]) and positive(row["psnr_result"])
    barbara = next(r for r in data["rows"] if r["case"] == "barbara-restore-50")
    assert barbara["paper_psnr"] == 32.22
    report_dir = tmp_path / "report"
    result = runner.invoke(app, ["bench", "report", str(out), "--out", str(report_dir)])
    assert result.exit_code == 0, result.output
    md = (report_dir / "report.md").read_text()
    assert "barbara-restore-50" in md and (report_dir / "quality.png").exists()
    assert (report_dir / "chips.html").exists() and "| mlx |" in (report_dir / "chips.md").read_text()


@pytest.mark.parametrize("kind", ["autostop", "ladder"])
def test_report_skips_other_bench_results_in_a_folder(tmp_path, paper_images, kind):
    """bench/results also holds auto-stop curves and ladders: a folder's report leaves them out, a named one is an
    error that says what prints it."""
    out = tmp_path / "results"
    args = ["bench", "quality", "--profile", "smoke", "--data", str(paper_images), "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    other = out / f"{kind}.json"
    other.write_text(json.dumps({"kind": kind, "fingerprint": {}, "rows": []}))
    result = runner.invoke(app, ["bench", "report", str(out), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["bench", "report", str(other), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and f"bench.{kind}" in result.output  # nothing readable left


def test_ladder_shows_a_recorded_result(tmp_path):
    from bench.ladder import markdown

    rows = [
        {"rung": "PyTorch (default)", "size": 64, "ms_per_iter": 10.0},
        {"rung": "+ Winograd F(2x2,3x3)", "size": 64, "ms_per_iter": 8.0},
    ]
    md = markdown({"rows": rows})
    assert "| + Winograd F(2x2,3x3) | 8 (0.80) |" in md and "| PyTorch (default) | 10 (1.00) |" in md


def test_report_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    result = runner.invoke(app, ["bench", "report", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a dip bench result" in result.output  # nothing readable left


def test_bench_speed_rejects_bad_sizes():
    result = runner.invoke(app, ["bench", "speed", "--sizes", "16", "--out", ""])
    assert result.exit_code == 2 and "too small" in result.output


def test_ladder_runs_each_rung_in_its_own_environment(monkeypatch):
    from bench import ladder

    rungs = [("MLX ops", "mlx", {"DIP_CPU_KERNELS": "0"}), ("PyTorch (default)", "torch", {})]
    monkeypatch.setattr(ladder, "RUNGS", rungs)
    data = ladder.run([40], blocks=1, per_block=1)
    assert [r["rung"] for r in data["rows"]] == ["MLX ops", "PyTorch (default)"]
    assert data["rows"][0]["env"] == {"DIP_CPU_KERNELS": "0"} and positive(data["rows"][0]["ms_per_iter"])
    table = ladder.markdown(data)
    assert "| MLX ops |" in table and "(1.00)" in table.splitlines()[-1]


def test_resolved_device_names_are_device_choices():
    """A report's device (cuda, mps) given back as a device means the GPU (bench speed once passed 'cuda' on)."""
    from dip_core.backend import Device, DeviceUnavailable, get_backend, parse_device

    assert parse_device("cuda") is Device.GPU and parse_device("mps") is Device.GPU
    assert parse_device("cpu") is Device.CPU
    with pytest.raises(DeviceUnavailable, match="unknown device 'tpu'"):
        parse_device("tpu")
    for name in BACKENDS:
        backend = get_backend(name, "auto")
        assert get_backend(name, backend.device).device == backend.device


@pytest.mark.parametrize("name", BACKENDS)
def test_loop_pair_times_the_loop_beside_the_step(name):
    from bench.loop_pair import ROOT, measure

    row = measure(str(ROOT), name, 40, True, 1, 1)
    assert row["backend"] == name and row["reference"]
    assert all(positive(row[k]) for k in ("step_ms", "loop_ms", "loop_over_step"))
