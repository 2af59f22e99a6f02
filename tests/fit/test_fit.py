"""The loop: seeded reproducibility, EMA, backtracking, divergence, interruption, ES-WMV."""

from __future__ import annotations

import numpy as np
import pytest

import dip_core.fit.loop
from dip_core.fit.loop import fit
from dip_core.fit.monitors import HostSession
from dip_core.fit.settings import FitSettings
from dip_core.fit.stopping import WindowVariance
from dip_core.problem.degrade import add_noise
from dip_core.run.api import restore
from tests.common import TINY_NET
from tests.conftest import BACKENDS
from tests.images import synthetic


@pytest.fixture(scope="module")
def noisy():
    return add_noise(synthetic(40, 36), 25, 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_same_seed_same_output(name, noisy):
    a = restore("denoise", noisy, backend=name, device="cpu", iters=12, seed=3, **TINY_NET)
    b = restore("denoise", noisy, backend=name, device="cpu", iters=12, seed=3, **TINY_NET)
    c = restore("denoise", noisy, backend=name, device="cpu", iters=12, seed=4, **TINY_NET)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.fit.loss_curve == b.fit.loss_curve
    assert not np.array_equal(a.pixels, c.pixels)


def test_window_variance_matches_direct_computation():
    rng = np.random.default_rng(0)
    xs = rng.random((30, 5, 4, 3)).astype(np.float32)
    wv = WindowVariance(window=7)
    for t, x in enumerate(xs):
        v = wv.push(x)
        if t < 6:
            assert v is None
        else:
            win = xs[t - 6 : t + 1].reshape(7, -1).astype(np.float64)
            direct = np.mean(np.sum((win - win.mean(0)) ** 2, axis=1)) / win.shape[1]
            assert np.isclose(v, direct, rtol=1e-6)


class FakeSession(HostSession):
    """A session whose losses follow a script: lets the loop's decisions be tested exactly."""

    def __init__(self, losses):
        self.losses = list(losses)
        self.t = 0
        self.restored = 0
        self.lr = None

    def advance(self):
        loss = self.losses[self.t]
        self.t += 1
        return loss, np.full((4, 4, 1), self.t / 100, np.float32)

    def net_output(self):
        return np.zeros((4, 4, 1), np.float32)

    def model_snapshot(self):
        return self.t

    def model_restore(self, snap):
        self.restored += 1

    def set_lr(self, lr):
        self.lr = lr

    def weights(self):
        return {}


def test_backtracking_rolls_back_on_a_collapse():
    # loss 1e-2 (20 dB) then a collapse to 1.0 (0 dB) at the check of iteration 4
    session = FakeSession([1e-2, 1e-2, 1e-2, 1.0, 1e-2, 1e-2])
    result = fit(session, FitSettings(iters=6, backtrack=True, check_every=2, lr=0.01))
    assert result.rollbacks == 1 and session.restored == 1
    assert session.lr == 0.005 and result.final_lr == 0.005  # a collapse lowers the learning rate too
    session = FakeSession([1e-2] * 6)
    assert fit(session, FitSettings(iters=6, backtrack=True, check_every=2)).rollbacks == 0


def test_nan_rolls_back_and_halves_the_learning_rate():
    session = FakeSession([1e-2, float("nan"), 1e-2])
    result = fit(session, FitSettings(iters=3, lr=0.01))
    assert result.rollbacks == 1 and session.lr == 0.005
    assert np.isnan(result.loss_curve[1])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("slow", [False, True])
def test_interrupt_keeps_the_best_so_far(name, slow, noisy, monkeypatch):
    clean = synthetic(40, 36)
    # Every step counts as slow (0 s), or none does: slow steps are not queued ahead, so Ctrl-C waits for none.
    monkeypatch.setattr(dip_core.fit.loop, "PIPELINE_UNDER_S", 0.0 if slow else float("inf"))

    def stop(info):
        if info.i == 8:
            raise KeyboardInterrupt

    r = restore("denoise", noisy, backend=name, device="cpu", iters=50, reference=clean, on_step=stop, **TINY_NET)
    # A pipelined session had step 9 queued when step 8's Ctrl-C came: it has run, and it is counted.
    queued_ahead = r.report["step"]["pipelined"] and not slow
    assert r.report["interrupted"] and r.report["iters"] == (9 if queued_ahead else 8)
    assert r.pixels.shape == noisy.shape and np.isfinite(r.pixels).all()


def test_no_reference_choice_uses_the_variance_window(noisy):
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=130, exp_weight=0.0, **TINY_NET)
    assert r.report["selection"] == "wmv"
    assert len(r.report["variance_curve"]) == 130 - 100 + 1
    assert 100 <= r.report["result_iter"] <= 130


def test_keep_last(noisy):
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=5, keep="last", **TINY_NET)
    assert r.report["selection"] == "last" and r.report["result_iter"] == 5


def test_package_level_api(noisy):
    import dip_core

    r = dip_core.restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=2, **TINY_NET)
    assert isinstance(r, dip_core.Result) and r.pixels.shape == noisy.shape


def test_auto_stop_ends_after_the_patience():
    # outputs whose spread shrinks until step 30 and then grows: the variance minimum is near 30
    class Drift(FakeSession):
        def advance(self):
            self.t += 1
            spread = abs(self.t - 30) / 100 + 0.01
            rng = np.random.default_rng(self.t)
            return 1e-2, (0.5 + spread * rng.standard_normal((4, 4, 1))).astype(np.float32)

    settings = FitSettings(iters=500, window=5, stop="auto", patience=20)
    result = fit(Drift([]), settings)
    assert result.stopped_early and 25 <= result.stop_iter <= 40
    assert result.iters_done == result.stop_iter + 20 and result.result_iter == result.stop_iter
    fixed = fit(Drift([]), FitSettings(iters=80, window=5))
    assert not fixed.stopped_early and fixed.iters_done == 80


def test_auto_stop_with_a_reference_reports_the_gap(noisy):
    clean = synthetic(40, 36)
    r = restore(
        "denoise", noisy, backend=BACKENDS[0], device="cpu", iters=60, reference=clean, stop="auto", window=5,
        patience=10, **TINY_NET,
    )  # fmt: skip
    rep = r.report
    assert rep["stop_iter"] is not None and rep["auto_gap"] >= 0
    assert rep["stopping"] == {**rep["stopping"], "stop": "auto", "window": 5, "patience": 10}
    assert rep["auto_rule"] in ("wmv", "discrepancy")
    if rep["stopped_early"]:
        assert rep["iters"] == rep["stop_iter"] + 10


def test_auto_stop_with_ema_returns_the_average_centred_on_the_minimum():
    class Drift(FakeSession):
        def __init__(self):
            super().__init__([])
            self.outs = []

        def advance(self):
            self.t += 1
            spread = abs(self.t - 30) / 100 + 0.01
            out = (0.5 + spread * np.random.default_rng(self.t).standard_normal((4, 4, 1))).astype(np.float32)
            self.outs.append(out)
            return 1e-2, out

    session = Drift()
    w = 0.75  # the EMA lags by w / (1 - w) = 3 steps
    result = fit(session, FitSettings(iters=300, window=5, stop="auto", patience=20, exp_weight=w))
    ema = session.outs[0]
    emas = [ema]
    for out in session.outs[1:]:
        ema = w * ema + (1 - w) * out
        emas.append(ema)
    assert result.selection == "wmv" and result.stopped_early
    assert np.allclose(result.result, emas[result.stop_iter + 3 - 1])


@pytest.mark.parametrize("task", ["denoise", "jpeg", "inpaint", "restore", "sr", "deblur"])
def test_auto_stop_is_the_default_where_it_was_measured_unless_iters_are_given(task):
    from dip_core.run.prepare import default_stop

    assert default_stop(task, None) == ("auto" if task in ("denoise", "jpeg", "restore", "sr") else "fixed")
    assert default_stop(task, 500) == "fixed"


def test_an_iteration_count_makes_the_run_fixed(noisy):
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=3, **TINY_NET)
    assert r.report["stopping"]["stop"] == "fixed"


class Overfitting(FakeSession):
    """Losses fall steadily through the noise power while the outputs keep settling (no variance minimum)."""

    def __init__(self, sigma: float, steps: int):
        super().__init__([])
        self.sigma, self.steps = sigma, steps

    def advance(self):
        self.t += 1
        loss = 2 * self.sigma**2 * (0.05 / 2) ** (self.t / self.steps)  # 2 sigma^2 down to 0.05 sigma^2
        spread = 0.2 / self.t
        out = (0.5 + spread * np.random.default_rng(self.t).standard_normal((4, 4, 1))).astype(np.float32)
        return loss, out


def test_discrepancy_point_replaces_an_overfit_variance_point():
    sigma, steps = 0.1, 400
    settings = FitSettings(iters=steps, window=5, stop="auto", patience=50, noise_power=sigma**2)
    result = fit(Overfitting(sigma, steps), settings)
    # the first step at which the mean of the last 20 losses is at most sigma^2
    expected = next(
        t for t in range(20, steps + 1)
        if np.mean([2 * sigma**2 * 0.025 ** (s / steps) for s in range(t - 19, t + 1)]) <= sigma**2
    )  # fmt: skip
    assert result.auto_rule == "discrepancy" and result.discrepancy_iter == result.stop_iter == expected
    assert result.selection == "wmv" and result.result_iter == expected
    assert result.stopped_early and result.iters_done < steps  # settled: the choice could not change any more
    # without a noise level the variance rule alone runs to the end and keeps its (overfit) last point
    plain = fit(Overfitting(sigma, steps), FitSettings(iters=steps, window=5, stop="auto", patience=50))
    assert plain.auto_rule == "wmv" and plain.stop_iter > 0.9 * steps and not plain.stopped_early


def test_variance_point_stays_when_it_is_not_overfit():
    class Drift(FakeSession):
        def advance(self):
            self.t += 1
            spread = abs(self.t - 30) / 100 + 0.01
            out = (0.5 + spread * np.random.default_rng(self.t).standard_normal((4, 4, 1))).astype(np.float32)
            return 0.02, out  # above sigma^2 = 0.01 throughout

    result = fit(Drift([]), FitSettings(iters=500, window=5, stop="auto", patience=20, noise_power=0.1**2))
    assert result.auto_rule == "wmv" and 25 <= result.stop_iter <= 40 and result.discrepancy_iter is None


def test_noise_level_estimate():
    from dip_core.problem.metrics import noise_sigma_estimate

    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 0.5)
    assert abs(noise_sigma_estimate(flat + 0.1 * rng.standard_normal(flat.shape)) - 0.1) < 0.005
    assert noise_sigma_estimate(synthetic(64, 64)) < 0.02  # a clean image: little


@pytest.mark.parametrize("shape", [(61, 47, 3), (53, 70), (300, 301, 1)])
def test_noise_level_estimate_on_texture(shape):
    """Fine texture is not read as noise (the wavelet MAD rule reads it as 0.1 too many here)."""
    from dip_core.problem.metrics import _haar_mad_sigma, _patch_pca_sigma, noise_sigma_estimate, noise_sigma_global

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    texture = 0.5 + 0.3 * np.sin(2.4 * xx + 0.9 * yy) * np.cos(1.7 * yy)
    texture = np.broadcast_to(texture[..., None] if len(shape) == 3 else texture, shape)
    noisy = texture + 0.05 * rng.standard_normal(shape)
    assert abs(noise_sigma_estimate(noisy) - 0.05) < 0.005
    assert _haar_mad_sigma(np.atleast_3d(noisy)) > 0.1
    assert noise_sigma_global(noisy) == _patch_pca_sigma(np.atleast_3d(noisy), 5)


def test_noise_level_estimate_on_hard_edges():
    """Flat discs with hard edges: the patch estimate reads edges as noise, the MAD rule does not."""
    from dip_core.problem.metrics import _haar_mad_sigma, _patch_pca_sigma, noise_sigma_estimate, noise_sigma_global

    clean = synthetic(64, 64).astype(np.float64)
    assert _patch_pca_sigma(clean, 5) > 0.02 > noise_sigma_global(clean) == _haar_mad_sigma(clean)
    assert noise_sigma_estimate(clean) <= noise_sigma_global(clean)


def _half_textured(shape: tuple[int, ...], sigma: float, seed: int) -> np.ndarray:
    """A flat grey half beside a half of fine random texture (no smooth structure), with white noise."""
    rng = np.random.default_rng(seed)
    clean = np.full(shape, 0.5)
    clean[:, shape[1] // 2 :] += 0.12 * rng.standard_normal(clean[:, shape[1] // 2 :].shape)
    return clean + sigma * rng.standard_normal(shape)


@pytest.mark.parametrize("shape", [(61, 77, 3), (96, 96, 1), (131, 90)])
def test_noise_level_estimate_reads_texture_beside_flat_regions_as_texture(shape):
    """Texture no estimator can tell from noise inflates the whole-image estimate; the flat half still gives
    the level, and the refinement finds it."""
    from dip_core.problem.metrics import noise_sigma_estimate, noise_sigma_global

    noisy = _half_textured(shape, 0.02, 3)
    assert noise_sigma_global(noisy) > 0.03  # the texture, read as noise
    assert abs(noise_sigma_estimate(noisy) - 0.02) < 0.003
    assert noise_sigma_estimate(noisy) == noise_sigma_estimate(noisy.copy())  # deterministic


def test_noise_level_estimate_skips_clipped_regions():
    """Noise clipped at 0 in a dark region is weaker there: the refinement skips those patches (with them it
    reads 0.069 here), and it never raises the whole-image estimate."""
    from dip_core.problem.metrics import _weak_texture_sigma, noise_sigma_estimate, noise_sigma_global

    rng = np.random.default_rng(4)
    clean = np.full((80, 80, 1), 0.5)
    clean[:, :40] = 0.0
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    assert abs(noise_sigma_estimate(noisy[:, 40:]) - 0.1) < 0.01
    assert _weak_texture_sigma(noisy, noise_sigma_global(noisy), 5) > 0.08
    assert noise_sigma_estimate(noisy) == noise_sigma_global(noisy)


def test_noise_level_estimate_on_tiny_images():
    from dip_core.problem.metrics import noise_sigma_estimate

    assert noise_sigma_estimate(np.zeros((1, 1, 3))) == 0.0
    rng = np.random.default_rng(2)
    for shape in [(4, 5, 3), (6, 7), (9, 11, 3), (19, 23, 3)]:  # too few patches for their covariance
        small = 0.5 + 0.1 * rng.standard_normal(shape)
        assert 0.05 < noise_sigma_estimate(small) < 0.2, shape


def test_denoise_report_gives_the_noise_level(noisy):
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=3, **TINY_NET)
    assert r.report["stopping"]["noise_sigma_source"] == "estimated"
    assert 15 < r.report["stopping"]["noise_sigma"] < 40  # the fixture's noise is sigma 25
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=3, noise_sigma=25, **TINY_NET)
    assert r.report["stopping"] == {**r.report["stopping"], "noise_sigma": 25.0, "noise_sigma_source": "given"}
    level = r.report["stopping"].get("noise_level_sigma", 25.0)  # the estimate, where it reads less than 25
    assert 20 < level <= 25.0
    assert "noise_sigma" not in restore("inpaint", noisy, backend=BACKENDS[0], device="cpu", iters=2,
                                        mask=np.ones(noisy.shape[:2]), **TINY_NET).report["stopping"]  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 3), (24, 31, 1)])
def test_a_given_noise_level_stands_where_the_image_gives_no_estimate(shape):
    """A flat or tiny image reads no noise at all (an estimate of 0 bounds nothing): capped by it, a given level
    would be 0 and the discrepancy point would never come."""
    from dip_core.problem.metrics import discrepancy_sigma, noise_sigma_estimate

    flat = np.full(shape, 0.4, np.float32)
    assert noise_sigma_estimate(flat) == 0
    assert discrepancy_sigma(flat, 0.1) == 0.1 and discrepancy_sigma(flat) == 0


def test_a_given_noise_level_above_what_the_image_holds_compares_the_loss_with_the_estimate():
    """Noise clipped to [0, 1] is weaker than the noise added: a dark image with sigma 75 holds far less, and the
    stopping rule's level is the estimate; the report and the summary line say so."""
    from dip_core.problem.degrade import add_noise
    from dip_core.problem.metrics import noise_sigma_estimate
    from dip_core.run.summary import chooser

    dark = np.full((40, 37, 1), 0.05, np.float32)
    dark[10:30, 8:28] = 0.3
    noisy = add_noise(dark, 75, 1)
    r = restore("denoise", noisy, backend=BACKENDS[0], device="cpu", iters=3, noise_sigma=75, **TINY_NET)
    stopping = r.report["stopping"]
    assert stopping["noise_sigma"] == 75.0 and stopping["noise_sigma_source"] == "given"
    assert stopping["noise_level_sigma"] == pytest.approx(255 * noise_sigma_estimate(noisy), rel=1e-6)
    assert stopping["noise_level_sigma"] < 60
    line = chooser({**r.report, "auto_rule": "discrepancy"})
    assert "sigma 75.0, given" in line and f"{stopping['noise_level_sigma']:.1f}, the level used" in line


@pytest.mark.parametrize(
    ("noise_sigma", "overrides", "patience", "rule"),
    [
        (None, {}, 15, "wmv"),
        (80.0, {"exp_weight": 0.0}, 60, "discrepancy"),
        (40.0, {"exp_weight": 0.0}, None, "discrepancy"),  # the loss reaches 40^2 before step 120
        (40.0, {"exp_weight": 0.8}, None, "discrepancy"),
    ],
    ids=["variance-rule", "discrepancy-rule", "default-rule", "default-rule-ema"],
)
def test_the_auto_stop_table_replays_what_fit_decides(noisy, noise_sigma, overrides, patience, rule, monkeypatch):
    """bench.autostop's table replays recorded curves: it must end where a real auto-stopped run ends.

    The given levels lie above the fixture's noise so that the tiny net's loss reaches them; the estimate would cap
    them (`discrepancy_sigma`), so here the given level is taken as is."""
    import dip_core.run.prepare
    from bench.autostop import replay
    from dip_core.problem.metrics import noise_sigma_estimate

    def as_given(observed: np.ndarray, given: float | None = None) -> float:
        return noise_sigma_estimate(observed) if given is None else given

    monkeypatch.setattr(dip_core.run.prepare, "discrepancy_sigma", as_given)

    clean = synthetic(40, 36)
    common = dict(backend=BACKENDS[0], device="cpu", reference=clean, window=5, seed=1, noise_sigma=noise_sigma)
    common.update(TINY_NET, **overrides)
    full = restore("denoise", noisy, iters=120, stop="auto", patience=121, trace_output=True, **common).report
    ema = full["preset"]["exp_weight"] > 0
    row = {
        "loss_curve": full["loss_curve"], "variance_curve": full["variance_curve"], "ema": ema,
        "exp_weight": full["preset"]["exp_weight"], "ema_warmup": full["preset"].get("ema_warmup", 0),
        "noisy_psnr": full["psnr_curve"], "final_psnr": 0.0,
        "candidate_psnr": full["psnr_ema_curve"] if ema else full["psnr_output_curve"],
    }  # fmt: skip
    stopping = full["stopping"]  # the level the loss is compared with: a given sigma, or the estimate below it
    r = replay(row, patience, stopping.get("noise_level_sigma", stopping["noise_sigma"]) / 255, window=5)
    real = restore("denoise", noisy, iters=120, stop="auto", patience=patience, **common).report
    assert (r["rule"], r["detected"]) == (real["auto_rule"], real["stop_iter"]) and r["rule"] == rule
    assert (r["stopped"] or 120) == real["iters"]
    assert real["stopped_early"] or patience is not None  # the default rule ends these at the discrepancy point
    # The curves are PSNRs of float32 MSEs taken on the device; psnr_auto is taken on the host in float64.
    assert r["auto"] == pytest.approx(real["psnr_auto"], abs=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_snapshot_can_be_returned_to_twice(name, noisy):
    """Two rollbacks to one snapshot find it as it was taken (torch's optimizer once adopted its tensors,
    and the steps after the first rollback changed them in place)."""
    from dip_core.run.prepare import prepare

    session = prepare("denoise", noisy, backend=name, device="cpu", seed=2, **TINY_NET).session
    session.read(session.step())
    snap = session.snapshot()
    taken = session.to_arrays(snap)
    for _ in range(2):
        session.read(session.step())
        session.read(session.step())
        session.restore(snap)
        now = session.to_arrays(session.snapshot())
        assert set(now) == set(taken)
        for key, value in taken.items():
            assert np.array_equal(now[key], value), key


@pytest.mark.parametrize("name", BACKENDS)
def test_pipelined_or_not_the_same_run(name, noisy, monkeypatch):
    """Queueing the next step before reading this one changes nothing: the same losses, choices and result,
    here with kept parameters (no EMA, auto-stop) and the discrepancy rule (torch keeps them from its ring
    of two when pipelined)."""
    from dip_core.run.prepare import prepare

    monkeypatch.setattr(dip_core.fit.loop, "PIPELINE_UNDER_S", float("inf"))  # a busy machine must not turn it off

    def run(flip):
        p = prepare("denoise", noisy, backend=name, device="cpu", iters=150, exp_weight=0.0, stop="auto", window=5,
                    patience=40, noise_sigma=25, seed=4, **TINY_NET)  # fmt: skip
        if flip:
            p.session.pipelined = not p.session.pipelined
        return fit(p.session, p.fit_settings)

    a, b = run(False), run(True)
    assert a.loss_curve == b.loss_curve and a.variance_curve == b.variance_curve
    assert (a.result_iter, a.stop_iter, a.auto_rule, a.iters_done) == (
        b.result_iter,
        b.stop_iter,
        b.auto_rule,
        b.iters_done,
    )
    assert np.array_equal(a.result, b.result) and np.array_equal(a.final, b.final)


def test_ctrl_c_before_any_step_is_booked_has_no_result():
    class Interrupted(FakeSession):
        def advance(self):
            raise KeyboardInterrupt  # Ctrl-C while the first step runs

    with pytest.raises(KeyboardInterrupt):
        fit(Interrupted([0.1] * 5), FitSettings(iters=5))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_psnr_auto_is_the_psnr_of_what_a_run_without_a_reference_returns(name, task, noisy):
    """The report's psnr_auto describes exactly the output a user without a reference gets: the automatic
    choice (EMA or net(z)), with the known pixels pasted back where the result has them."""
    from dip_core.problem.metrics import psnr

    clean = synthetic(40, 36)
    extra: dict = {"window": 5, "patience": 10, "stop": "auto", "seed": 2, **TINY_NET}
    image = noisy
    if task == "inpaint":
        mask = (np.random.default_rng(0).random((40, 36)) > 0.3).astype(np.uint8) * 255
        image, extra["mask"] = clean, mask
    common = dict(backend=name, device="cpu", iters=40, **extra)
    with_ref = restore(task, image, reference=clean, **common).report
    without = restore(task, image, **common)
    assert without.report["result_iter"] == with_ref["stop_iter"]
    assert with_ref["psnr_auto"] == pytest.approx(psnr(without.pixels, clean), abs=1e-4)
    if task == "inpaint":  # the pasted-back pixels count: the raw output's PSNR is another figure
        assert with_ref["keep_known"] and without.report["keep_known"]
