"""`dip bench paper` on tiny stand-ins of the paper's images (smoke profile: 2 iterations, numbers meaningless)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from bench.schema import load_folder
from cli import app
from dip_core.problem.metrics import psnr, psnr_y
from tests.common import positive, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8

SMOKE = ["bench", "paper", "--profile", "smoke"]


def _stand_ins(folder, names=None):
    """Tiny images with the paper's file names (the real ones live outside the project)."""
    folder.mkdir()
    colour = {"F16_GT.png": (40, 40), "kate.png": (40, 40), "vase.png": (36, 36), "library.png": (32, 44),
              "zebra_GT.png": (40, 48)}  # fmt: skip
    for name, size in colour.items():
        PILImage.fromarray(to_u8(synthetic(*size))).save(folder / name)
    PILImage.fromarray(to_u8(synthetic(40, 40, channels=1))).save(folder / "barbara.png")
    for name, (h, w) in {"kate_mask.png": (40, 40), "vase_mask.png": (36, 36), "library_mask.png": (32, 44)}.items():
        mask = np.full((h, w), 255, np.uint8)
        mask[8:16, 4:30] = 0
        PILImage.fromarray(mask).save(folder / name)
    PILImage.fromarray(to_u8(synthetic(36, 44))).save(folder / "snail.jpg", quality=20)
    return folder


@pytest.fixture
def paper_data(tmp_path):
    return _stand_ins(tmp_path / "data")


def _run(data, out, *extra):
    return runner.invoke(app, [*SMOKE, "--data", str(data), "--out", str(out), *extra])


def test_a_case_runs_end_to_end_and_the_table_sits_beside_the_paper(paper_data, tmp_path):
    out = tmp_path / "out"
    result = _run(paper_data, out, "--case", "barbara-restore-50", "--case", "zebra-sr4")
    assert result.exit_code == 0, result.output
    md = (out / "paper-smoke.md").read_text()
    assert "NOT the paper's settings" in md
    # our figure, the published one and its source on one row, per backend
    for backend in BACKENDS:
        row = next(line for line in md.splitlines() if line.startswith(f"| barbara-restore-50 | {backend} |"))
        assert "| 32.22 | paper Table 1: 50 % missing pixels, Barbara |" in row
        assert "| 27.00 |" in next(line for line in md.splitlines()
                                   if line.startswith(f"| zebra-sr4 | {backend} |") and "Y PSNR" in line)  # fmt: skip
    assert "Set14 mean" in md and "<table" in (out / "paper-smoke.html").read_text()
    [path] = out.glob("*-paper-*.json")
    data = json.loads(path.read_text())
    assert data["finished"] and data["paper"]["profile"] == "smoke" and not data["paper"]["paper_settings"]
    rows = data["paper"]["rows"]
    assert {(r["case"], r["backend"]) for r in rows} == {(c, b) for c in ("barbara-restore-50", "zebra-sr4")
                                                          for b in BACKENDS}  # fmt: skip
    for r in rows:
        assert r["iters"] == 2 and positive(r["seconds"]) and positive(r["ms_per_iter"])
        assert "the last output, iteration 2" in r["summary"]  # scored as the paper scores it, not the best
        assert all(f["ours"] is None or positive(f["ours"]) for f in r["figures"])
    # the chip table reads the file and shows the paper's table
    good, problems = load_folder([out])
    assert not problems and good[0].data["paper"]["rows"]
    report = tmp_path / "report"
    assert runner.invoke(app, ["bench", "report", str(out), "--out", str(report)]).exit_code == 0
    assert "The paper's tables (smoke profile)" in (report / "chips.md").read_text()
    assert "paper-table" in (report / "chips.html").read_text()


def test_a_rerun_skips_the_finished_cases(paper_data, tmp_path):
    out = tmp_path / "out"
    args = ("--case", "f16-denoise-s25", "--backend", BACKENDS[0])
    assert _run(paper_data, out, *args).exit_code == 0
    first = json.loads(next(out.glob("*-paper-*.json")).read_text())["paper"]["rows"]
    result = _run(paper_data, out, *args, "--case", "snail-dejpeg")
    assert result.exit_code == 0, result.output
    assert "resuming: 1 finished runs kept" in result.output
    rows = json.loads(next(out.glob("*-paper-*.json")).read_text())["paper"]["rows"]
    assert [r["case"] for r in rows] == ["f16-denoise-s25", "snail-dejpeg"]
    assert rows[0]["seconds"] == first[0]["seconds"]  # kept, not run again


def test_a_missing_image_is_skipped_with_a_message(paper_data, tmp_path):
    (paper_data / "vase_mask.png").unlink()
    out = tmp_path / "out"
    result = _run(paper_data, out, "--case", "vase-inpaint", "--case", "kate-inpaint", "--backend", BACKENDS[0])
    assert result.exit_code == 0, result.output
    assert "skipped vase-inpaint: vase_mask.png not in" in result.output
    assert "Skipped vase-inpaint: vase_mask.png" in (out / "paper-smoke.md").read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--case", "lena"], "'lena' is not one of"),
        (["--seeds", "0"], "--seeds"),
        (["--profile", "fast"], "'fast' is not one of"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(paper_data, tmp_path, args, says):
    result = _run(paper_data, tmp_path / "out", *args)
    assert result.exit_code == 2 and says in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_data_folder_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, [*SMOKE, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no image folder" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_y_channel_psnr_crops_the_border():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20, 3))
    b = a.copy()
    b[:2] = 0  # only the border differs
    assert psnr_y(a, b, border=2) == float("inf") and psnr_y(a, b) < 40
    grey = rng.random((8, 8, 1))
    assert psnr_y(grey, grey * 0.9) == pytest.approx(psnr(grey, grey * 0.9))


def test_ctrl_c_keeps_the_finished_cases_and_writes_the_partial_table(paper_data, tmp_path, monkeypatch):
    from bench import paper

    real = paper.run_job
    calls = []

    def second_interrupted(job, *args):
        calls.append(job.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *args)

    monkeypatch.setattr(paper, "run_job", second_interrupted)
    out = tmp_path / "out"
    result = _run(paper_data, out, "--case", "f16-denoise-s25", "--case", "snail-dejpeg", "--backend", BACKENDS[0])
    assert result.exit_code == 130 and "interrupted: kept 1 finished runs" in result.output
    md = (out / "paper-smoke.md").read_text()
    assert "| f16-denoise-s25 |" in md and "| snail-dejpeg |" not in md
    data = json.loads(next(out.glob("*-paper-*.json")).read_text())
    assert data["finished"] is False and len(data["paper"]["rows"]) == 1
