"""Tasks as data: everything that lists or treats tasks reads the registry, and the Poisson task added from it
restores photon noise on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli import app
from dip_core.errors import UserError
from dip_core.problem.degrade import OpKind, add_noise, add_photon_noise
from dip_core.problem.fidelity import Fidelity, FidelityKind
from dip_core.problem.image import from_array, load_image, save_image
from dip_core.problem.metrics import noise_sigma_estimate, peak_estimate, psnr
from dip_core.problem.presets import PRESETS, PresetError, preset_for
from dip_core.problem.registry import REGISTRY, SPECS, TASK_OPTIONS, NoiseModel, Task, describe, spec_of
from dip_core.problem.simulate import Corruption
from dip_core.problem.task_options import TAKEN_BY, takes
from dip_core.problem.tasks import make_problem
from dip_core.run.api import restore
from dip_core.run.options import RunOptions
from dip_core.run.prepare import default_stop, noise_level
from tests.common import TINY_NET, runner
from tests.images import synthetic

TASKS = [t.value for t in Task]
TINY = {**TINY_NET, "device": "cpu"}


def test_every_task_has_one_spec_and_a_default_preset():
    assert [s.task for s in SPECS] == list(Task) and set(REGISTRY) == set(Task)
    for spec in SPECS:
        assert spec.default_preset() in spec.presets
        assert all(PRESETS[name].task is spec.task for name in spec.presets)


def test_the_option_table_is_the_registrys():
    assert set(TAKEN_BY) == TASK_OPTIONS
    for option, tasks in TAKEN_BY.items():
        assert tasks == {s.task for s in SPECS if option in s.options}
    assert takes("poisson", "peak") and not takes("denoise", "peak") and takes("poisson", "iters")


@pytest.mark.parametrize("task", TASKS)
def test_the_cli_offers_every_registered_task(task):
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0 and task in result.output
    described = describe(task)
    assert json.loads(json.dumps(described)) == described  # plain JSON for the web page
    assert described["needs_mask"] == (spec_of(task).operator is OpKind.MASK)


@pytest.mark.parametrize("task", TASKS)
def test_dip_degrade_simulates_every_task(task, tmp_path):
    """Each spec's simulator writes a corrupted image (and mask) that `make_problem` takes for that task."""
    clean = tmp_path / "clean.png"
    save_image(clean, from_array(synthetic(33, 41)))
    result = runner.invoke(app, ["degrade", task, str(clean), "-o", str(tmp_path / "out"), "--factor", "2"])
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").iterdir())
    corrupted = [p for p in written if "mask" not in p.stem and "_gt" not in p.stem]
    assert len(corrupted) == 1
    masks = [p for p in written if "mask" in p.stem]
    assert bool(masks) == (spec_of(task).operator is OpKind.MASK)
    extra = {"mask": load_image(masks[0])} if masks else {}
    extra |= {"factor": 2} if task == "sr" else {}
    extra |= {"kernel": np.ones((3, 3), np.float32) / 9} if task == "deblur" else {}
    problem = make_problem(task, load_image(corrupted[0]), **extra)
    assert problem.task.value == task


def test_the_registry_decides_auto_stop():
    for spec in SPECS:
        assert (default_stop(spec.task, None).value == "auto") == spec.auto_stop
        assert default_stop(spec.task, 10).value == "fixed"


def test_fidelity_levels_follow_the_noise_model():
    x = synthetic(24, 30)
    noisy = add_noise(x, 25, 0)
    gaussian = noise_level(Task.DENOISE, noisy, 25.0, None)
    assert gaussian.fidelity.kind is FidelityKind.MSE and gaussian.sigma == pytest.approx(25 / 255)
    # The level is the smaller of the given sigma and the estimate (clipping leaves less noise than was added).
    assert gaussian.power == pytest.approx(min(25 / 255, noise_sigma_estimate(noisy)) ** 2)
    assert 0.5 * (25 / 255) ** 2 < gaussian.power <= (25 / 255) ** 2
    assert noise_level(Task.DENOISE, x, 25.0, None).power < 1e-4  # a clean image holds next to no noise
    photons = noise_level(Task.POISSON, x, None, 40.0)
    assert photons.fidelity == Fidelity(FidelityKind.POISSON, 40.0) and photons.power == pytest.approx(1 / 40)
    assert noise_level(Task.SR, x, None, None).power is None
    assert spec_of("poisson").noise is NoiseModel.POISSON


@pytest.mark.parametrize("peak", [10.0, 30.0, 100.0])
def test_the_poisson_deviance_at_the_truth_is_about_one_over_the_peak(peak):
    """The level the stopping rule uses: the mean deviance of counts against their true mean is within 10 % of 1
    (above 1 where pixels hold under a photon or two)."""
    x = 0.05 + 0.9 * np.random.default_rng(0).random((128, 128, 1))
    y = np.random.default_rng(1).poisson(peak * x) / peak
    assert Fidelity(FidelityKind.POISSON, peak).loss(x, y) * peak == pytest.approx(1.0, abs=0.1)


def test_the_backends_compute_the_numpy_fidelity():
    """Values and gradients of both backends' data terms against numpy (float32 against float64)."""
    mx = pytest.importorskip("mlx.core")
    torch = pytest.importorskip("torch")
    from dip_mlx.fidelity import loss_function as mlx_loss
    from dip_torch.fidelity import loss_function as torch_loss

    rng = np.random.default_rng(3)
    a = rng.random((17, 23, 3)).astype(np.float32)
    a[0, 0, 0] = 0.0  # below the floor: clamped
    y = (rng.poisson(20 * a) / 20).astype(np.float32)
    for fidelity in (Fidelity(), Fidelity(FidelityKind.POISSON, 20.0)):
        ref = fidelity.loss(a, y)
        am = mx.array(a)
        value_m, grad_m = mx.value_and_grad(lambda v, f=fidelity: mlx_loss(f)(v, mx.array(y)))(am)
        at = torch.from_numpy(a.copy()).requires_grad_()
        value_t = torch_loss(fidelity)(at, torch.from_numpy(y))
        value_t.backward()
        assert float(value_m) == pytest.approx(ref, rel=1e-5)
        assert float(value_t.detach()) == pytest.approx(ref, rel=1e-5)
        np.testing.assert_allclose(np.array(grad_m), at.grad.numpy(), rtol=1e-4, atol=1e-9)


def test_the_peak_is_estimated_within_a_fifth_at_moderate_counts():
    x = synthetic(96, 96)
    for peak in (30.0, 100.0):
        assert peak_estimate(add_photon_noise(x, peak, 0)) == pytest.approx(peak, rel=0.2)


def test_photon_noise_is_seeded_and_checked():
    x = synthetic(20, 20)
    assert np.array_equal(add_photon_noise(x, 10, 3), add_photon_noise(x, 10, 3))
    with pytest.raises(UserError, match="peak"):
        add_photon_noise(x, 0, 0)
    with pytest.raises(UserError, match="peak"):
        RunOptions(peak=-1)


def test_poisson_is_refused_options_of_other_tasks_and_they_refuse_its_peak():
    x = synthetic(21, 27)
    with pytest.raises(UserError, match="only poisson takes it"):
        restore("denoise", x, peak=20.0, iters=2, **TINY)
    with pytest.raises(UserError, match="poisson does not use --noise-sigma"):
        restore("poisson", x, noise_sigma=20.0, iters=2, **TINY)


@pytest.mark.parametrize("backend", ["mlx", "torch"])
def test_poisson_denoising_restores_photon_noise(backend):
    """Odd-sized image at peak 15: the Poisson fit ends well above its input, with the deviance as its loss."""
    pytest.importorskip("mlx.core" if backend == "mlx" else "torch")
    clean = synthetic(37, 45)
    noisy = add_photon_noise(clean, 15.0, 0)
    result = restore("poisson", noisy, reference=clean, iters=250, backend=backend, seed=0, **TINY)
    rep = result.report
    assert rep["task"] == "poisson" and rep["stopping"]["peak_source"] == "estimated"
    assert rep["psnr_result"] > psnr(noisy, clean) + 4, (rep["psnr_result"], psnr(noisy, clean))
    assert preset_for("poisson").exp_weight == 0.99
    given = restore("poisson", noisy, iters=3, backend=backend, peak=15.0, **TINY).report
    assert given["stopping"]["peak"] == 15.0 and given["stopping"]["peak_source"] == "given"


def test_a_corruption_keeps_the_files_of_dip_degrade():
    x = from_array(synthetic(16, 16))
    assert list(spec_of("poisson").simulate(x, Corruption(peak=12))) == ["_peak12.png"]
    assert list(spec_of("denoise").simulate(x, Corruption(sigma=25))) == ["_noisy25.png"]


def test_the_ema_forgets_its_start_by_default_and_the_paper_s_average_keeps_dip_0_4_s_identity():
    denoise = preset_for("denoise")
    assert denoise.exp_weight == 0.99 and denoise.ema_warmup == 9 and denoise.to_dict()["ema_warmup"] == 9
    assert "ema_warmup" not in denoise.override(ema_warmup=0).to_dict()  # dip 0.4's checkpoints of it resume
    with pytest.raises(PresetError, match="EMA warm-up"):
        denoise.override(ema_warmup=-1)
