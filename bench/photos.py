"""Photos that no stopping rule was fitted on: the test set of the stopping study (`bench.autostop --set photos`).

They come from packages dip already installs, so any clone can remake the cases without a download:
scikit-image's bundled data images (scikit-image's `skimage/data/README.txt` and its documentation give each
image's source and licence: public-domain, CC0 or CC-BY photographs) and matplotlib's sample photo of Grace
Hopper (a U.S. Navy photograph, public domain).

A case is one photo, resized so that its short side is the case's size, centre-cropped square, and given
Gaussian noise of a known sigma drawn from the case's seed. The noise level is assigned by
the photo's position in the list, so that the set covers sigma 5-75, grey and colour; the backend by
TORCH_PHOTOS: three photos are recorded with torch, the rest with MLX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from dip_core.problem.degrade import add_noise


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name == "motorcycle":
            return skimage.data.stereo_motorcycle()[0]
        return getattr(skimage.data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


# name -> loader; the order fixes each photo's noise level and backend (see `photo_cases`).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "coins": _skimage("coins"),
    "coffee": _skimage("coffee"),
    "moon": _skimage("moon"),
    "rocket": _skimage("rocket"),
    "grass": _skimage("grass"),
    "hubble": _skimage("hubble_deep_field"),
    "gravel": _skimage("gravel"),
    "ihc": _skimage("immunohistochemistry"),
    "brick": _skimage("brick"),
    "retina": _skimage("retina"),
    "page": _skimage("page"),
    "motorcycle": _skimage("motorcycle"),
    "text": _skimage("text"),
    "hopper": _grace_hopper,
    "clock": _skimage("clock"),
    "microaneurysms": _skimage("microaneurysms"),
    "cell": _skimage("cell"),
}
SIGMAS = (15, 50, 25, 5, 35, 75, 10)  # cycled over the photos in order
# Recorded with torch (grey and colour, sigma 25-50); the others with MLX, whose step is the faster one on the
# CPU where the curves were recorded (2 cores: 3000 steps at 96x96 took about 10 min with MLX, 20 with torch).
TORCH_PHOTOS = frozenset({"camera", "coffee", "gravel"})


@dataclass(frozen=True)
class PhotoCase:
    name: str  # e.g. "photo-chelsea-s25@1"
    photo: str
    sigma: int
    size: int
    seed: int
    backend: str

    def clean(self) -> np.ndarray:
        return load_photo(self.photo, self.size)

    def noisy(self) -> np.ndarray:
        return self.pair()[1]

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """The clean photo and its noisy input, the photo loaded once."""
        clean = self.clean()
        return clean, add_noise(clean, self.sigma, self.seed)


def load_photo(name: str, size: int) -> np.ndarray:
    """The photo in [0, 1], (size, size, C) with C 1 or 3: short side resized to `size`, centre crop."""
    pixels = PHOTOS[name]()
    im = PILImage.fromarray(pixels)
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), PILImage.Resampling.LANCZOS)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    a = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255
    return a[..., None] if a.ndim == 2 else a


def photo_cases(seed: int, size: int = 96) -> list[PhotoCase]:
    """Every photo at one seed and size, each on its backend."""
    cases = []
    for k, photo in enumerate(PHOTOS):
        sigma = SIGMAS[k % len(SIGMAS)]
        backend = "torch" if photo in TORCH_PHOTOS else "mlx"
        cases.append(PhotoCase(f"photo-{photo}-s{sigma}-{size}@{seed}", photo, sigma, size, seed, backend))
    return cases


def case_by_name(name: str) -> PhotoCase:
    """The case a name such as "photo-chelsea-s25-96@1" stands for (its backend as assigned then)."""
    body, seed = name.removeprefix("photo-").rsplit("@", 1)
    photo, sigma, size = body.rsplit("-", 2)
    for case in photo_cases(int(seed), int(size)):
        if case.photo == photo and case.sigma == int(sigma[1:]):
            return case
    raise KeyError(name)
