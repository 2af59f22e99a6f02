"""`dip degrade`: each task's own noise default, and --sigma for every task."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from cli import app
from tests.common import runner
from tests.images import synthetic, to_u8

TASKS = ["denoise", "jpeg", "inpaint", "restore", "sr", "deblur"]


@pytest.fixture
def clean(tmp_path):
    path = tmp_path / "clean.png"
    PILImage.fromarray(to_u8(synthetic(48, 48))).save(path)
    return path


def degraded(clean, task, folder, *args):
    """The corrupted image `dip degrade` writes (0-255 floats), and its mask of known pixels (all known if none)."""
    folder.mkdir()
    result = runner.invoke(app, ["degrade", task, str(clean), "--out", str(folder), *args])
    assert result.exit_code == 0, result.output
    written = sorted(folder.iterdir())
    image = next(p for p in written if not p.stem.endswith(("_mask", "_gt")))
    masks = [p for p in written if p.stem.endswith("_mask")]
    pixels = np.asarray(PILImage.open(image), np.float64)
    known = np.asarray(PILImage.open(masks[0])) > 127 if masks else np.ones(pixels.shape[:2], bool)
    return pixels, known


def noise_std(clean, task, tmp_path, *args):
    """Std (0-255) of the difference between the task's output with `args` and with --sigma 0, on known pixels."""
    noisy, known = degraded(clean, task, tmp_path / "with", *args)
    plain, _ = degraded(clean, task, tmp_path / "without", "--sigma", "0")
    return float((noisy - plain)[known].std())


@pytest.mark.parametrize("task, sigma", [("denoise", 25), ("deblur", 2), ("jpeg", 0), ("inpaint", 0),
                                         ("restore", 0), ("sr", 0)])  # fmt: skip
def test_each_task_has_its_own_noise_default(clean, tmp_path, task, sigma):
    """Denoising gets the paper's sigma = 25; deblurring a little (2, the user guide's example), not denoising's 25;
    the other tasks only the corruption they are named after."""
    std = noise_std(clean, task, tmp_path)
    if sigma:
        assert 0.75 * sigma < std < 1.25 * sigma
    else:
        assert std == 0


@pytest.mark.parametrize("task", TASKS)
def test_an_explicit_sigma_adds_noise_to_every_task(clean, tmp_path, task):
    std = noise_std(clean, task, tmp_path, "--sigma", "10")
    if task == "jpeg":  # the noisy picture, then compressed: the blocks smooth part of the noise away
        assert std > 3
    else:
        assert 7.5 < std < 12.5


def test_help_shows_each_tasks_noise_default():
    result = runner.invoke(app, ["degrade", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert "denoise 25, deblur 2, none for the other tasks" in " ".join(result.output.split())
