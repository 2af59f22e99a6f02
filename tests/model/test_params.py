import numpy as np
import pytest

from dip_core.model.config import NETS, SkipConfig
from dip_core.model.params import count_params, grad_is_structurally_zero, param_shapes
from dip_core.model.weights import init_weights

# The default denoising network of the paper has this many parameters.
PAPER_DEFAULT_PARAMS = 2_217_831


def test_default_network_has_the_papers_parameter_count():
    assert count_params(NETS["default"]) == PAPER_DEFAULT_PARAMS


@pytest.mark.parametrize("net", ["default", "jpeg", "inpaint-hole", "small"])
def test_backends_build_exactly_the_layout(backend, net):
    cfg = NETS[net]
    built = backend.get_weights(backend.build(cfg, init_weights(cfg, 0)))
    assert {k: v.shape for k, v in built.items()} == param_shapes(cfg)
    assert sum(v.size for v in built.values()) == count_params(cfg)


def test_optional_parts_change_the_layout():
    base = NETS["small"]
    names = set(param_shapes(base))
    assert "scales.0.up2.conv.weight" in names and "scales.0.skip.conv.weight" in names
    no_1x1 = param_shapes(base.with_(need1x1_up=False))
    assert not any(".up2." in n for n in no_1x1)
    no_skip = param_shapes(base.with_(channels_skip=(0, 4, 4)))
    assert not any(n.startswith("scales.0.skip") for n in no_skip)
    assert param_shapes(base.with_(channels_skip=(0, 4, 4)))["scales.0.up1.conv.weight"][1] == 16
    no_bias = param_shapes(base.with_(need_bias=False))
    assert not any(n.endswith("conv.bias") for n in no_bias) and "head.bias" not in no_bias


def test_structurally_zero_gradients_are_zero(torch_backend):
    """Conv biases before BatchNorm (and the merge BN shift) have zero gradient: check it numerically."""
    cfg = SkipConfig(in_channels=2, channels_down=(4, 4), channels_up=(4, 4), channels_skip=(2, 2))
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 2), dtype=np.float32)
    y = rng.random((16, 16, 3), dtype=np.float32)
    _, grads = torch_backend.loss_and_grads(torch_backend.build(cfg, init_weights(cfg, 0)), x, y)
    top = max(np.abs(g).max() for g in grads.values())
    zero = [n for n in grads if grad_is_structurally_zero(cfg, n)]
    assert zero and "head.bias" not in zero
    for name in zero:
        assert np.abs(grads[name]).max() < 1e-4 * top, name
    assert np.abs(grads["head.bias"]).max() > 1e-3 * top
