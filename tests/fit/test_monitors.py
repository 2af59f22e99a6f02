"""The monitors beside the step: device implementations against the numpy reference, and images kept off the host."""

from __future__ import annotations

import numpy as np
import pytest

from dip_core.backend import Monitoring, get_backend
from dip_core.fit.monitors import HostSession
from dip_core.problem.degrade import add_noise
from dip_core.run.api import restore
from tests.common import TINY_NET
from tests.conftest import BACKENDS
from tests.images import synthetic

H, W, C = 5, 7, 3
WINDOW = 7
BAD = 13  # this step's output is not finite: it and the next one are not monitored ...
RESTORED = 15  # ... until the session is restored here (a rollback), to the EMA saved at SAVED
SAVED = 10


def _outputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    outs = [(0.5 + 0.1 * np.sin(t / 5) + 0.02 * rng.standard_normal((H, W, C))).astype(np.float32) for t in range(n)]
    outs[BAD - 1][2, 3, 1] = np.nan
    return outs


class _Replay(HostSession):
    """The numpy reference, fed the same outputs."""

    def __init__(self, outs: list[np.ndarray]) -> None:
        self.outs, self.t = outs, 0

    def advance(self):
        self.t += 1
        return 0.01 * self.t, self.outs[self.t - 1]

    def net_output(self):
        return self.outs[self.t - 1]

    def model_snapshot(self):
        return self.t

    def model_restore(self, snap):
        pass  # the script goes on: only the EMA and the monitoring come back


def _mlx_run(m: Monitoring, outs: list[np.ndarray]) -> tuple[list[list[float]], np.ndarray]:
    mx = pytest.importorskip("mlx.core")
    from dip_mlx.monitors import MLXMonitors

    mon = MLXMonitors(m, (1, H, W, C))
    rows, saved = [], None
    for t, out in enumerate(outs, start=1):
        if t == RESTORED:
            mon.restore(saved)
        rows.append(mon.update(mx.array(0.01 * t), mx.array(out[None]), None, t % WINDOW == 0).tolist())
        if t == SAVED:
            saved = mon.keep_ema()
    return rows, np.array(mon.ema[0])


def _torch_run(m: Monitoring, outs: list[np.ndarray]) -> tuple[list[list[float]], np.ndarray]:
    torch = pytest.importorskip("torch")
    from dip_torch.monitors import TorchMonitors

    mon = TorchMonitors(m, (1, C, H, W), torch.device("cpu"))
    rows, saved = [], None
    for t, out in enumerate(outs, start=1):
        if t == RESTORED:
            mon.restore(saved)
        x = torch.from_numpy(out.transpose(2, 0, 1).copy())[None]
        rows.append(mon.update(torch.tensor(0.01 * t), x, None, t % WINDOW == 0).tolist())
        if t == SAVED:
            saved = mon.keep_ema()
    return rows, mon.ema[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("warmup", [0, 3])  # the paper's EMA; one that forgets its start (weight n / (n + 3))
@pytest.mark.parametrize("name", BACKENDS)
def test_device_monitors_match_the_numpy_reference(name, warmup):
    outs = _outputs(40)
    reference = np.full((H, W, C), 0.45, np.float32)
    m = Monitoring(exp_weight=0.8, ema_warmup=warmup, window=WINDOW, reference=reference)
    host = _Replay(outs)
    host.start(m)
    expected, saved = [], None
    for t in range(1, len(outs) + 1):
        if t == RESTORED:
            host.restore(saved)
        expected.append(host.read(host.step()))
        if t == SAVED:
            saved = host.snapshot()
    rows, ema = (_mlx_run if name == "mlx" else _torch_run)(m, outs)
    for t, (want, got) in enumerate(zip(expected, rows, strict=True), start=1):
        assert bool(got[1]) == want.finite == (t < BAD or t >= RESTORED), t
        assert got[0] == pytest.approx(want.loss, rel=1e-6)
        if not want.finite:
            continue
        if want.variance is None:
            assert np.isnan(got[2]), t
        else:  # float32 sums on the device, float64 on the host
            assert got[2] == pytest.approx(want.variance, rel=2e-3, abs=1e-9), t
        assert got[3] == pytest.approx(want.mse, rel=1e-5) and got[4] == pytest.approx(want.mse_ema, rel=1e-5), t
    np.testing.assert_allclose(ema, host.ema(), rtol=1e-6)
    # the window took in every finite, monitored output: the variance exists from the W-th of them on
    assert sum(w.variance is not None for w in expected) == len(outs) - (RESTORED - BAD) - WINDOW + 1


def test_the_warm_up_forgets_the_first_outputs_and_the_centre_follows_the_average():
    """With warm-up k the weight after n outputs is min(w, n / (n + k)): averaging the iteration numbers themselves
    gives the EMA's centre, which EmaCentre computes; the lag grows about as i / k until the cap."""
    from dip_core.fit.rules import EmaCentre, ema_lag

    class Count(_Replay):
        def advance(self):
            self.t += 1
            return 0.0, np.full((1, 1, 1), float(self.t))

    for warmup in (0, 9):
        host = Count([])
        host.start(Monitoring(exp_weight=0.99, ema_warmup=warmup))
        centres = []
        for _ in range(1200):
            host.step()
            centres.append(float(host.ema()[0, 0, 0]))
        centre = EmaCentre(ema_lag(0.99), warmup)
        if warmup:
            assert centres[99] == pytest.approx(0.9 * 100, abs=1.5)  # the last tenth, where the paper's...
            for i in (10, 90, 400, 1000):  # the first T whose centre reaches i
                due = next(t for t, c in enumerate(centres, start=1) if c >= i - 1e-9)
                assert due - i == centre.lag_at(i), i
            assert centre.lag_at(90) == 10 and centre.lag_at(2000) == 99
        else:
            assert centres[99] < 70  # ... still holds the first outputs: 37 % of its weight on the first one
            assert centre.lag_at(90) == centre.lag_at(2000) == 99  # dip 0.4's constant lag


@pytest.mark.parametrize(
    "snapshot", [{"ema_on": np.array(True)}, {"ema_on": np.array(False)}, {"ema_n": np.array(7.0)}]
)
def test_a_checkpoint_before_format_5_gives_its_ema_a_count(snapshot):
    from dip_core.backend import ema_count

    want = {"ema_n": 7.0}.get(next(iter(snapshot)), float(next(iter(snapshot.values()))))
    assert ema_count(snapshot) == np.float32(want) and ema_count(snapshot).dtype == np.float32


@pytest.fixture(scope="module")
def images():
    clean = synthetic(29, 35)
    return clean, add_noise(clean, 25, 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_images_reach_the_host_a_constant_number_of_times(name, images, monkeypatch):
    """Steps move scalars only: a run's device-to-host image copies do not grow with its length,
    and each save adds one; checkpoints come as their own writes."""
    import dip_core.fit.loop

    clean, noisy = images
    cls = type(get_backend(name, "cpu"))
    original = cls.to_numpy
    counts = {"images": 0, "checkpoints": 0}

    def counting(*args):
        counts["images"] += 1
        return original(*args)

    def checkpoint(*args, **kwargs):
        counts["checkpoints"] += 1

    monkeypatch.setattr(cls, "to_numpy", staticmethod(counting))
    monkeypatch.setattr(dip_core.fit.loop, "save_checkpoint", checkpoint)

    def transfers(**options):
        counts.update(images=0, checkpoints=0)
        restore("denoise", noisy, backend=name, device="cpu", window=5, seed=1, **TINY_NET, **options)
        return counts["images"]

    short, long = transfers(iters=20), transfers(iters=60)
    assert 0 < short == long <= 4  # the result, net(z), the EMA, the automatic choice
    assert transfers(iters=20, reference=clean) == transfers(iters=60, reference=clean) <= 4
    saves = []
    assert transfers(iters=60, save_every=15, on_save=lambda i, image: saves.append(i)) == long + 4
    assert saves == [15, 30, 45, 60]
    assert transfers(iters=60, checkpoint_every=20, checkpoint="unused.npz") == long
    assert counts["checkpoints"] == 3
