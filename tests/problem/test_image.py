"""Image files in and out: modes, bit depth, alpha, orientation, and unreadable files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from dip_core.problem.image import ImageError, from_array, load_image, save_image
from tests.images import synthetic, to_u8


def roundtrip(tmp_path, pil: PILImage.Image, name: str = "in.png"):
    path = tmp_path / name
    pil.save(path)
    img = load_image(path)
    out = tmp_path / "out.png"
    save_image(out, img)
    return img, PILImage.open(out)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_modes_round_trip_unchanged(tmp_path, mode):
    rgb = to_u8(synthetic(21, 17))
    pil = PILImage.fromarray(rgb).convert(mode)
    img, back = roundtrip(tmp_path, pil)
    assert img.channels == (1 if mode.startswith("L") else 3)
    assert back.mode == mode and back.size == (17, 21)
    assert np.array_equal(np.asarray(back), np.asarray(pil))


def test_alpha_is_carried_through_untouched(tmp_path):
    rgba = np.dstack([to_u8(synthetic(20, 20)), np.arange(400, dtype=np.uint8).reshape(20, 20)])
    (tmp_path / "a.png").unlink(missing_ok=True)
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    save_image(tmp_path / "b.png", img.with_pixels(1 - img.pixels))
    back = np.asarray(PILImage.open(tmp_path / "b.png"))
    assert np.array_equal(back[..., 3], rgba[..., 3])


def test_sixteen_bit_grey_keeps_its_depth(tmp_path):
    a = (np.linspace(0, 65535, 30 * 20).reshape(30, 20)).astype(np.uint16)
    PILImage.fromarray(a).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.bit_depth == 16 and img.channels == 1
    save_image(tmp_path / "out.png", img)
    back = np.asarray(PILImage.open(tmp_path / "out.png"))
    assert back.dtype.itemsize == 2 or PILImage.open(tmp_path / "out.png").mode.startswith("I")
    assert np.abs(back.astype(np.int64) - a).max() <= 1


def test_palette_and_cmyk_become_rgb(tmp_path):
    rgb = PILImage.fromarray(to_u8(synthetic(16, 16)))
    rgb.convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").channels == 3
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    img = load_image(tmp_path / "c.jpg")
    assert img.channels == 3 and img.mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    pil = PILImage.fromarray(to_u8(synthetic(10, 30)))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    pil.save(tmp_path / "o.jpg", exif=exif)
    img = load_image(tmp_path / "o.jpg")
    assert (img.height, img.width) == (30, 10)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, not a picture"), "not an image"),
        (lambda p: p.mkdir(), "directory"),
    ],
    ids=["missing", "empty", "text", "directory"],
)
def test_unreadable_files(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_png(tmp_path):
    PILImage.fromarray(to_u8(synthetic(64, 64))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "cut.png")


def test_arrays_and_bad_arrays():
    assert from_array(np.zeros((5, 6), np.uint8)).channels == 1
    assert from_array(np.ones((5, 6, 4), np.float32)).alpha is not None
    with pytest.raises(ImageError):
        from_array(np.zeros((5, 6, 2)))
    with pytest.raises(ImageError):
        from_array(np.full((5, 6, 3), 2.0))


def test_save_refuses_unknown_suffix_and_missing_folder(tmp_path):
    img = from_array(synthetic(8, 8))
    with pytest.raises(ImageError, match="use one of"):
        save_image(tmp_path / "x.gifx", img)
    with pytest.raises(ImageError, match="does not exist"):
        save_image(tmp_path / "missing" / "x.png", img)
