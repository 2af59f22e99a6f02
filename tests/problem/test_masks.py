"""Masks as people make them (anti-aliased, saved as JPEG) and the known pixels kept in the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from cli import app
from dip_core.problem.image import Image
from dip_core.problem.tasks import ProblemError, mask_from_image
from dip_core.run.api import restore
from tests.common import TINY_NET, TINY_NET_ARGS, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8

TINY = {**TINY_NET, "iters": 4, "device": "cpu"}


def antialiased_text_mask(h: int, w: int) -> np.ndarray:
    """White (known) with black strokes drawn at 4x and downsampled: grey edges, as drawing programs make."""
    im = PILImage.new("L", (4 * w, 4 * h), 255)
    ImageDraw.Draw(im).line([(4, 8), (4 * w - 6, 4 * h - 10)], fill=0, width=9)
    return np.asarray(im.resize((w, h), PILImage.Resampling.LANCZOS), np.float32)[..., None] / 255


def jpeg_roundtrip(mask: np.ndarray, path) -> np.ndarray:
    PILImage.fromarray(to_u8(mask)).save(path, quality=75)
    return np.asarray(PILImage.open(path), np.float32)[..., None] / 255


@pytest.fixture
def masks(tmp_path):
    smooth = antialiased_text_mask(23, 31)
    hard = (smooth >= 0.5).astype(np.float32)
    return {"antialiased": smooth, "jpeg": jpeg_roundtrip(hard, tmp_path / "m.jpg"), "hard": hard}


@pytest.mark.parametrize("kind", ["antialiased", "jpeg"])
def test_grey_masks_are_rounded_at_half_and_counted(masks, kind):
    m = masks[kind]
    grey = int(((m > 0.05) & (m < 0.95)).sum())
    assert grey > 0  # the case the old check refused
    known, rounded = mask_from_image(Image(m, "L"), 23, 31)
    assert rounded == grey
    assert np.array_equal(known, (m >= 0.5).astype(np.float32))


@pytest.mark.parametrize("kind", ["antialiased", "jpeg"])
def test_the_strict_check_refuses_grey_and_counts_it_right(masks, kind):
    m = masks[kind]
    with pytest.raises(ProblemError, match=r"black and white only: \d+ of its 713 pixels") as exc:
        mask_from_image(Image(m, "L"), 23, 31, strict=True)
    assert "(0.0%)" not in str(exc.value)  # a few grey pixels are not "0.0 %"


def test_a_pure_mask_rounds_nothing(masks):
    assert mask_from_image(Image(masks["hard"], "L"), 23, 31)[1] == 0


def test_the_cli_rounds_a_grey_mask_with_a_warning_and_strict_refuses(masks, tmp_path):
    clean = synthetic(23, 31)
    src = tmp_path / "img.png"
    PILImage.fromarray(to_u8(clean)).save(src)
    mask = tmp_path / "mask.png"
    PILImage.fromarray(to_u8(masks["antialiased"])).save(mask)
    args = ["run", "inpaint", str(src), "--mask", str(mask), *TINY_NET_ARGS]
    args += ["--iters", "3", "-q", "--device", "cpu", "--report", str(tmp_path / "r.json")]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "grey pixels" in ok.output and "rounded at 50 %" in ok.output
    assert json.loads((tmp_path / "r.json").read_text())["sources"]["mask"] == str(mask)
    strict = runner.invoke(app, [*args, "--strict-mask", "--force"])
    assert strict.exit_code == 2 and "black and white only" in strict.output


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["inpaint", "restore"])
def test_the_known_pixels_are_kept_unless_turned_off(backend, task, masks):
    clean = synthetic(23, 31)
    m = masks["hard"]
    x = clean * m + (1 - m)  # the holes painted white
    kept = restore(task, x, mask=m[..., 0], backend=backend, **TINY)
    known = m[..., 0] > 0
    assert kept.report["keep_known"] is True
    assert np.array_equal(kept.pixels[known], x[known])
    raw = restore(task, x, mask=m[..., 0], backend=backend, keep_known=False, **TINY)
    assert raw.report["keep_known"] is False
    assert not np.allclose(raw.pixels[known], x[known], atol=1e-3)  # the network's own output
    assert np.array_equal(kept.pixels[~known], raw.pixels[~known])  # the holes are the same fit


def test_keep_known_does_not_apply_to_tasks_without_a_mask():
    r = restore("denoise", synthetic(17, 19), backend=BACKENDS[0], **TINY)
    assert r.report["keep_known"] is False
