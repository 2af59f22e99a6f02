"""Property: any size from 1x1 up and any supported mode comes back with that size and mode."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from dip_core.problem.image import from_pil, to_pil
from dip_core.run.api import restore
from tests.conftest import BACKENDS

MODES = ["L", "LA", "RGB", "RGBA", "I;16", "P"]
WRITTEN = {"P": "RGB"}  # a palette image is restored in colour


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 41),
    width=st.integers(1, 41),
    mode=st.sampled_from(MODES),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_output_keeps_size_and_mode(height, width, mode, backend, seed):
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pil = (
        PILImage.fromarray(rgba).convert(mode)
        if mode != "I;16"
        else PILImage.fromarray((rng.random((height, width)) * 65535).astype(np.uint16))
    )
    image = from_pil(pil)
    result = restore("denoise", image, backend=backend, device="cpu", iters=1, net="tiny", input_channels=4, seed=seed)
    out = to_pil(result.image)
    assert out.size == (width, height)
    assert out.mode == WRITTEN.get(mode, mode)
    if image.alpha is not None:
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(pil)[..., -1])
