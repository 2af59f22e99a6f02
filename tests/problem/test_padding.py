"""Reflect-padding to a size the network takes, and cropping back to the user's image."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.model.config import NETS, min_size
from dip_core.problem.degrade import lanczos_downsample
from dip_core.problem.image import from_array
from dip_core.problem.padding import PadMode, pad_problem, padded_side
from dip_core.problem.registry import Task
from dip_core.problem.tasks import make_problem
from dip_core.run.api import restore
from tests.conftest import BACKENDS


@pytest.mark.parametrize("net", ["default", "small", "tiny"])
@pytest.mark.parametrize("side", [1, 2, 7, 31, 32, 33, 45, 64, 100])
def test_padded_side_is_a_size_the_network_takes(net, side):
    cfg = NETS[net]
    reflect = padded_side(side, cfg, PadMode.REFLECT)
    assert reflect >= max(side, min_size(cfg)) and reflect % 2**cfg.depth == 0
    assert reflect - max(side, min_size(cfg)) < 2**cfg.depth  # the next multiple, not a larger one
    assert padded_side(side, cfg, PadMode.NONE) == max(side, min_size(cfg))


@pytest.mark.parametrize("task", ["denoise", "inpaint", "sr", "deblur"])
def test_the_crop_of_the_padded_problem_is_the_problem(task, rng):
    h, w = 13, 22
    img = from_array(rng.random((h, w, 3), dtype=np.float32))
    options = {}
    if task == "inpaint":
        options["mask"] = from_array((rng.random((h, w)) > 0.3).astype(np.float32))
    elif task == "sr":
        options["factor"] = 4
    elif task == "deblur":
        options["kernel"] = np.full((3, 3), 1 / 9, np.float32)
    problem = make_problem(task, img, **options)
    cfg = NETS["small"]
    padded, crop = pad_problem(problem, cfg, "reflect")
    for side in (padded.out_height, padded.out_width):
        assert side % 2**cfg.depth == 0
    assert (crop.height, crop.width) == (problem.out_height, problem.out_width)
    if problem.task is Task.SR:
        f = problem.op.factor
        lr = padded.observed[crop.top // f :, crop.left // f :][:h, :w]
        assert np.array_equal(lr, problem.observed)
        # The operator still maps the padded output size onto the padded input.
        hr = np.zeros((padded.out_height, padded.out_width, 3), np.float32)
        assert lanczos_downsample(hr, f).shape == padded.observed.shape
    else:
        assert np.array_equal(crop(padded.observed), problem.observed)
        assert padded.observed.shape[:2] == (padded.out_height, padded.out_width)
    if problem.op.mask is not None:
        assert np.array_equal(crop(padded.op.mask), problem.op.mask)
    # Padding mirrors the image: the row above the image is its second row.
    if crop.top > 0 and problem.task is not Task.SR:
        assert np.array_equal(padded.observed[crop.top - 1, crop.left : crop.left + w], problem.observed[1])


def test_no_padding_when_the_size_fits(rng):
    problem = make_problem("denoise", from_array(rng.random((32, 64, 1), dtype=np.float32)))
    padded, crop = pad_problem(problem, NETS["small"], "reflect")
    assert padded is problem and (crop.top, crop.left) == (0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("task", "size", "options"),
    [
        ("denoise", (1, 1), {}),
        ("denoise", (3, 50), {}),
        ("inpaint", (9, 5), {}),
        ("sr", (2, 3), {"factor": 4}),
        ("deblur", (5, 7), {"kernel": "box:3"}),
    ],
)
def test_tiny_images_come_back_at_their_size(backend, task, size, options, rng):
    h, w = size
    x = rng.random((h, w, 3), dtype=np.float32)
    if task == "inpaint":
        mask = np.ones((h, w), np.float32)
        mask[h // 2, w // 2] = 0
        options = {"mask": mask}
    r = restore(task, x, backend=backend, device="cpu", iters=3, net="tiny", input_channels=4, **options)
    f = options.get("factor", 1)
    assert r.pixels.shape == (h * f, w * f, 3)
    assert np.isfinite(r.pixels).all()
    assert r.report["padding"]["size"][0] % 2 ** NETS["tiny"].depth == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_pad_none_runs_the_network_at_the_image_size(backend, rng):
    x = rng.random((37, 45, 3), dtype=np.float32)
    r = restore("denoise", x, backend=backend, device="cpu", iters=2, net="small", input_channels=4, pad="none")
    assert r.report["padding"]["size"] == [37, 45]
    assert r.pixels.shape == x.shape
    r = restore("denoise", x, backend=backend, device="cpu", iters=2, net="small", input_channels=4)
    assert r.report["padding"]["size"] == [40, 48] and r.report["padding"]["offset"] == [1, 1]
