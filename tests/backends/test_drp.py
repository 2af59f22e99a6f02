"""The Deep Random Projector (--method drp): the frozen-weight forward and its loss across backends, what a step
trains and what it leaves alone, a denoising gain, resumption, the method's refusal and its record."""

from __future__ import annotations

import numpy as np
import pytest

from cli import app
from dip_core.fit.checkpoint import CheckpointError
from dip_core.model.config import NETS
from dip_core.model.inputs import make_input
from dip_core.model.method import Method, trains
from dip_core.model.weights import init_weights
from dip_core.problem import degrade as dg
from dip_core.problem.fidelity import SQUARED_ERROR, projector_loss
from dip_core.problem.presets import PresetError, preset_for
from dip_core.run.api import restore
from dip_core.run.crosscheck import CrossCheckCase, agrees, crosscheck
from dip_core.run.prepare import prepare
from dip_core.run.summary import summary_line
from tests.common import runner
from tests.conftest import BACKENDS, BOTH
from tests.images import save, synthetic

H, W = 37, 45  # odd sides: the crop of the upsampled branch and the padding both matter
TV = 0.45
FAST = {"device": "cpu", "method": "drp", "seed": 3}


@pytest.fixture(scope="module")
def shared():
    """Weights, a Gaussian seed and a target drawn once in numpy, for both backends."""
    cfg = NETS["drp"]
    rng = np.random.default_rng(7)
    z = make_input("gaussian", cfg.in_channels, H, W, seed=8)
    return cfg, init_weights(cfg, 9), z, rng.random((H, W, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def images():
    clean = synthetic(H, W)
    return {"clean": clean, "noisy": dg.add_noise(clean, 25, 0)}


@BOTH
def test_the_frozen_forward_and_the_loss_agree_across_backends(shared, mlx_backend, torch_backend):
    cfg, weights, z, target = shared
    runs = {}
    for be in (mlx_backend, torch_backend):
        net = be.build(cfg, weights)
        out = be.forward(net, z)
        loss, grads = be.loss_and_grads(net, z, target, Method.DRP, TV)
        runs[be.name] = (out, loss, grads)
    (out_a, loss_a, ga), (out_b, loss_b, gb) = runs["mlx"], runs["torch"]
    assert np.abs(out_a - out_b).max() < 1e-5
    # The loss against the numpy reference, and across backends.
    reference = projector_loss(SQUARED_ERROR, out_b, target, out_b, TV)
    assert abs(loss_b - reference) < 1e-5 * reference and abs(loss_a - loss_b) < 1e-5 * reference
    # Gradients of exactly what DRP trains: the BatchNorms and z.
    assert set(ga) == set(gb) == {n for n in weights if trains(Method.DRP, n)} | {"z"}
    assert gb["z"].shape == z.shape
    scale = max(float(np.abs(g).max()) for g in gb.values())
    for name in ("z", "input_bn.weight", "scales.0.up1.bn.weight", "scales.0.up2.bn.bias"):
        assert np.abs(ga[name] - gb[name]).max() < 1e-4 * scale, name


@BOTH
def test_the_crosscheck_checks_drp(mlx_backend, torch_backend):
    case = CrossCheckCase(NETS["drp"], height=H, width=W, steps=4, method=Method.DRP)
    report = crosscheck(mlx_backend, torch_backend, case, floor_samples=1)
    assert report.method == "drp" and agrees(report.verdict), report.to_json()["targets"]
    assert report.result.forward_max_abs_diff < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_train_z_and_the_batchnorms_only(backend, images):
    prepared = prepare("denoise", images["noisy"], backend=backend, iters=6, **FAST)
    prepared.run()
    before, after = prepared.spec.weights, prepared.session.weights()
    frozen = [n for n in before if not trains(Method.DRP, n)]
    trained = [n for n in before if trains(Method.DRP, n)]
    assert frozen and all(np.array_equal(before[n], after[n]) for n in frozen)
    assert any(not np.array_equal(before[n], after[n]) for n in trained)
    z = prepared.session.state_arrays()["now/net/z"].reshape(prepared.spec.z.shape[0], -1)
    assert not np.allclose(z, prepared.spec.z.reshape(z.shape[0], -1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_drp_denoising_gains_psnr_and_reports_its_method(backend, images):
    result = restore("denoise", images["noisy"], backend=backend, reference=images["clean"], iters=80, **FAST)
    report = result.report
    assert report["method"] == "drp" and report["preset"]["method"] == "drp"
    assert report["preset"]["tv_weight"] == TV and report["net"]["input_bn"] is True
    assert report["psnr_result"] > report["psnr_input"] + 1.0
    dip = restore("denoise", images["noisy"], backend=backend, iters=2, device="cpu", net="tiny", input_channels=4)
    assert dip.report["method"] == "dip" and "method" not in dip.report["preset"]
    assert summary_line(report).startswith(f"denoise with drp on {backend} ")  # the summary says which method
    assert summary_line(dip.report).startswith(f"denoise on {backend} ")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_drp_runs_inpainting_and_super_resolution(backend, task, images):
    clean = images["clean"]
    if task == "inpaint":
        mask = dg.text_mask(H, W, 0)
        result = restore(
            task, clean * mask, mask=(mask[..., 0] * 255).astype(np.uint8), backend=backend, iters=4, **FAST
        )
    else:
        small = dg.resize(clean[:36, :44], 18, 22)
        result = restore(task, small, factor=2, backend=backend, iters=4, **FAST)
    assert result.report["method"] == "drp" and np.isfinite(result.pixels).all()


class Crash(Exception):
    pass


def _crash_at(n):
    def crash(info):
        if info.i == n:
            raise Crash

    return crash


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_drp_run_resumes_and_refuses_a_dip_checkpoint(backend, images, tmp_path):
    common = {"backend": backend, "iters": 16, **FAST}
    whole = restore("denoise", images["noisy"], **common)
    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=5, on_step=_crash_at(12), **common)
    resumed = restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)
    assert resumed.report["checkpoint"]["resumed"] and np.array_equal(resumed.pixels, whole.pixels)
    dip = {"backend": backend, "device": "cpu", "seed": 3, "iters": 16, "net": "tiny", "input_channels": 4}
    with pytest.raises(Crash):
        restore("denoise", images["noisy"], checkpoint=ckpt, checkpoint_every=5, on_step=_crash_at(6), **dip)
    with pytest.raises(CheckpointError, match="method"):
        restore("denoise", images["noisy"], checkpoint=ckpt, resume=True, **common)


def test_the_registry_says_which_tasks_take_drp():
    assert preset_for("denoise", method="drp").method is Method.DRP
    assert preset_for("sr", factor=8, method="drp").factor == 8
    with pytest.raises(PresetError, match="denoise, inpaint, sr; not jpeg"):
        preset_for("jpeg", method="drp")
    with pytest.raises(PresetError, match="dip preset"):
        preset_for("denoise", "denoise", method="drp")


def test_drp_on_a_task_that_does_not_take_it_is_a_one_line_usage_error(tmp_path):
    path = save(tmp_path / "x.png", synthetic(H, W))
    result = runner.invoke(app, ["run", "jpeg", str(path), "--method", "drp", "--device", "cpu", "-q"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--method drp takes the tasks denoise, inpaint, sr" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "x.jpeg.png").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_drp_super_resolution_stops_where_its_fit_to_the_input_reaches_the_fit_level(backend, images):
    """A clean low-resolution input has no noise level: DRP's sr preset stops at a fit level instead (40 dB; 20
    here, which the tiny run reaches), on the output of that iteration, and says so."""
    small = dg.resize(images["clean"][:36, :44], 18, 22)
    preset = preset_for("sr", factor=4, method="drp")
    assert preset.fit_level_db == 40.0 and preset.loss_ratio == 1.0
    result = restore("sr", small, factor=2, backend=backend, iters=400, stop="auto", fit_level_db=20.0, **FAST)
    rep = result.report
    assert rep["auto_rule"] == "discrepancy" and rep["stopping"]["fit_level_db"] == 20.0
    assert rep["stopped_early"] and rep["iters"] < 400
    losses, chosen = result.fit.loss_curve, rep["discrepancy_iter"]
    assert rep["stop_iter"] == chosen == rep["iters"]  # no EMA: the run ends at its choice
    assert np.mean(losses[chosen - 20 : chosen]) <= 10 ** (-20 / 10) < np.mean(losses[chosen - 21 : chosen - 1])
    assert "chosen by the fit level (the input fitted to 20 dB)" in summary_line(rep)


def test_the_fit_level_is_a_psnr_and_is_for_the_report_of_runs_that_have_one():
    with pytest.raises(PresetError, match=r"a fit level is in \(0, 100\] dB"):
        preset_for("sr", method="drp").override(fit_level_db=0.0)
    for preset in (preset_for("denoise", method="drp"), preset_for("sr"), preset_for("inpaint", method="drp")):
        assert not {"fit_level_db", "ema_warmup"} & set(preset.to_dict())  # dip 0.4's checkpoints of them resume
