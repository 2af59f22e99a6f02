"""The skip network: any size in, the same size out, with every knob of the paper's builder."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.model.config import NETS, ConfigError, SkipConfig
from dip_core.model.inputs import make_input
from dip_core.model.weights import init_weights

SMALL = SkipConfig(in_channels=3, channels_down=(6, 6, 6), channels_up=(6, 6, 6), channels_skip=(2, 0, 2))

KNOBS = [
    {},
    {"pad": "zero"},
    {"upsample": "nearest"},
    {"downsample": "avg"},
    {"downsample": "max"},
    {"act": "Swish"},
    {"act": "ELU"},
    {"act": "none"},
    {"need1x1_up": False},
    {"need_sigmoid": False},
    {"need_bias": False},
    {"filter_size_down": 5, "filter_skip_size": 3},
    {"out_channels": 1},
    {"channels_skip": (0, 0, 0)},
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "paper")
@pytest.mark.parametrize("size", [(17, 17), (23, 40), (32, 19)])
def test_output_has_the_input_size(backend, knobs, size):
    cfg = SMALL.with_(**knobs)
    if max(cfg.filter_size_down, cfg.filter_skip_size) == 5 and min(size) < 17:
        pytest.skip("too small for 5x5 filters")
    x = make_input("noise", cfg.in_channels, *size, seed=1)
    out = backend.forward(backend.build(cfg, init_weights(cfg, 0)), x)
    assert out.shape == (*size, cfg.out_channels)
    assert np.isfinite(out).all()
    if cfg.need_sigmoid:
        assert out.min() >= 0 and out.max() <= 1


def test_default_network_on_an_odd_size(backend):
    cfg = NETS["default"]
    out = backend.forward(backend.build(cfg, init_weights(cfg, 0)), make_input("noise", 32, 37, 45))
    assert out.shape == (37, 45, 3)


def test_meshgrid_input(backend):
    cfg = NETS["inpaint-hole"].with_(channels_down=(8, 8, 8), channels_up=(8, 8, 8), channels_skip=(0, 0, 0))
    z = make_input("meshgrid", 2, 20, 30)
    assert z[0, 0].tolist() == [0, 0] and z[-1, -1].tolist() == [1, 1]
    assert backend.forward(backend.build(cfg, init_weights(cfg, 0)), z).shape == (20, 30, 3)


def test_too_small_input_is_a_clear_error(backend):
    cfg = NETS["default"]
    net = backend.build(cfg, init_weights(cfg, 0))
    with pytest.raises(ConfigError, match="too small"):
        backend.forward(net, make_input("noise", 32, 20, 64))


def test_block_outputs_follow_forward_order(backend):
    net = backend.build(SMALL, init_weights(SMALL, 0))
    blocks = backend.block_outputs(net, make_input("noise", 3, 17, 17))
    names = list(blocks)
    assert names[0] == "scales.0.down1" and names[-1] == "head"
    assert names.index("scales.2.up1") < names.index("scales.0.up1")
    assert blocks["scales.1.down1"].shape == (5, 5, 6)
