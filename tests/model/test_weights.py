import numpy as np
import pytest

from dip_core.model.config import NETS
from dip_core.model.params import param_shapes
from dip_core.model.weights import WeightsError, check_weights, init_weights, load_weights, save_weights

CFG = NETS["small"]


def test_init_is_seeded_and_follows_torch_defaults():
    a, b, c = init_weights(CFG, 0), init_weights(CFG, 0), init_weights(CFG, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    w = a["scales.1.down2.conv.weight"]
    bound = 1 / np.sqrt(16 * 3 * 3)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.all(a["scales.0.merge_bn.weight"] == 1) and np.all(a["scales.0.merge_bn.bias"] == 0)


def test_npz_round_trip(tmp_path):
    w = init_weights(CFG, 3)
    path = tmp_path / "w.npz"
    save_weights(path, CFG, w)
    cfg, back = load_weights(path, CFG)
    assert cfg == CFG and set(back) == set(w)
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_round_trip_through_each_backend(tmp_path, backend):
    w = init_weights(CFG, 5)
    back = backend.get_weights(backend.build(CFG, w))
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_missing_extra_and_misshaped_keys_are_errors(backend):
    w = init_weights(CFG, 0)
    missing = dict(w)
    del missing["head.bias"]
    with pytest.raises(WeightsError, match=r"missing head\.bias"):
        backend.build(CFG, missing)
    extra = {**w, "scales.9.conv.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightsError, match=r"unexpected scales\.9\.conv\.weight"):
        backend.build(CFG, extra)
    bad = {**w, "head.weight": np.zeros((3, 16, 3, 3), np.float32)}
    with pytest.raises(WeightsError, match=r"head.weight has shape \(3, 16, 3, 3\)"):
        check_weights(CFG, bad)


def test_loading_checks_the_config_and_the_file(tmp_path):
    path = tmp_path / "w.npz"
    save_weights(path, CFG, init_weights(CFG, 0))
    with pytest.raises(WeightsError, match="another network"):
        load_weights(path, NETS["tiny"])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.npz")
    plain = tmp_path / "plain.npz"
    np.savez(plain, **{k: np.zeros(s, np.float32) for k, s in param_shapes(CFG).items()})
    with pytest.raises(WeightsError, match="no network config"):
        load_weights(plain)


def test_save_is_atomic_and_keeps_an_existing_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    save_weights(path, CFG, init_weights(CFG, 0))
    before = path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # normal permissions, not mkstemp's

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_weights(path, CFG, init_weights(CFG, 1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]
